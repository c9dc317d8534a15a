"""One EventBridge event per victim task whose verdict is known or changes ("oomcheck Task
Verdict"), for the application's own code: mark a lost task failed in its table, re-send it, or
wait for its redelivery. Besides the per-alert events (oomcheck.alerting.eventbridge).

What was sent is kept on the incident (``Incident.task_events``: task id -> verdict), saved with
the state: an event goes out once per verdict of a task, with a dedup key made of the incident,
the task and the verdict, so a retry of what did not fit (the deadline, a throttle, an entry
PutEvents refused) carries the same key. Never the task's arguments: the finding holds none.
Silences hold messages to people, not these: the application's reaper still needs to know.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from oomcheck.model import Incident, State, TaskFate, Verdict, WorkerRecord

SOURCE = "oomcheck"
DETAIL_TYPE = "oomcheck Task Verdict"
# PutEvents takes at most 10 entries per call (and 256 KiB in all; a task event is < 2 KiB).
ENTRIES_PER_CALL = 10
# Verdicts that say what became of a task; running and unknown say nothing an app can act on.
_SILENT = frozenset({Verdict.RUNNING.value, Verdict.UNKNOWN.value})


@dataclass(frozen=True, slots=True)
class TaskEvent:
    incident: Incident
    task: TaskFate
    queues: tuple[str, ...]

    @property
    def dedup_key(self) -> str:
        return f"{self.incident.id}:{self.task.id}:{self.task.verdict.value}"

    def detail(self) -> dict[str, Any]:
        finding = self.incident.finding
        task = self.task
        return {
            "schema": 1,
            "source": SOURCE,
            "dedup_key": self.dedup_key,
            "task_id": task.id,
            "task_name": task.name,
            # the queue of its worker when that worker consumed exactly one, else null
            "queue": self.queues[0] if len(self.queues) == 1 else None,
            "worker": finding.worker,
            "cause": finding.cause.value,
            "verdict": task.verdict.value,
            "redeliver_at": task.redeliver_at,
            "state": task.state,
            "started_at": task.started_at,
            "incident_id": self.incident.id,
            "kind": self.incident.kind.value,
        }


def due(state: State) -> list[TaskEvent]:
    """Every task whose verdict was not sent yet for its incident, oldest incident first: the
    finding's tasks, then those an earlier run left unsent (the finding's verdict wins)."""
    out = []
    for incident in sorted(state.incidents.values(), key=lambda i: (i.opened_at, i.id)):
        queues = _queues(incident, state.workers)
        tasks = {t.id: t for t in incident.task_events_due}
        tasks.update((t.id, t) for t in incident.finding.tasks)
        for task in tasks.values():
            verdict = task.verdict.value
            if verdict in _SILENT or incident.task_events.get(task.id) == verdict:
                continue
            out.append(TaskEvent(incident, task, queues))
    return out


def _queues(incident: Incident, workers: Mapping[str, WorkerRecord]) -> tuple[str, ...]:
    record = workers.get(incident.finding.worker or "")
    return record.queues if record is not None else ()


def entry(event: TaskEvent, bus: str) -> dict[str, Any]:
    return {
        "Source": SOURCE,
        "DetailType": DETAIL_TYPE,
        "Detail": json.dumps(event.detail(), separators=(",", ":"), default=str),
        "EventBusName": bus,
        "Resources": [],
    }


# Unsent task events kept per incident, at most: what a run can send in its deadline many times.
MAX_DUE = 5_000


def mark(state: State, todo: Iterable[TaskEvent], sent: Iterable[TaskEvent]) -> State:
    """Record what went out, and keep what did not (``todo`` less ``sent``) for the next run,
    per incident (one new incident object per incident touched)."""
    sent_keys = {e.dedup_key for e in sent}
    verdicts: dict[str, dict[str, str]] = {}
    unsent: dict[str, list[TaskFate]] = {}
    for event in todo:
        verdicts.setdefault(event.incident.id, {})
        unsent.setdefault(event.incident.id, [])
        if event.dedup_key in sent_keys:
            verdicts[event.incident.id][event.task.id] = event.task.verdict.value
        else:
            unsent[event.incident.id].append(event.task)
    if not verdicts:
        return state
    incidents = dict(state.incidents)
    for incident_id, done in verdicts.items():
        incident = incidents[incident_id]
        incidents[incident_id] = replace(
            incident,
            task_events={**incident.task_events, **done},
            task_events_due=tuple(unsent[incident_id][:MAX_DUE]),
        )
    return replace(state, incidents=incidents)


@dataclass
class Sent:
    events: list[TaskEvent] = field(default_factory=list)
    calls: int = 0
    failed: int = 0  # entries refused or not tried: sent by a later run, with the same keys
    error: str | None = None


class EventBridgeTaskEvents:
    """PutEvents in batches of ten, while the run's deadline allows another call."""

    def __init__(self, bus: str, client: Any | None = None) -> None:
        if client is None:
            from oomcheck.aws import client as make_client

            client = make_client("events")
        self.bus = bus
        self.client = client

    def describe(self) -> str:
        return f"events:{self.bus}"

    def send(self, events: list[TaskEvent], allows_call: Callable[[], bool]) -> Sent:
        """``allows_call``: whether the run has time for one more call (its worst case and the
        save after it). Stops at the first failed call: the rest wait for the next run."""
        from botocore.exceptions import BotoCoreError, ClientError

        done = Sent()
        for start in range(0, len(events), ENTRIES_PER_CALL):
            chunk = events[start : start + ENTRIES_PER_CALL]
            if not allows_call():
                done.failed += len(events) - start
                done.error = done.error or "the run's deadline is near"
                break
            try:
                reply = self.client.put_events(Entries=[entry(e, self.bus) for e in chunk])
            except (ClientError, BotoCoreError) as exc:
                code = getattr(exc, "response", {}).get("Error", {}).get("Code")
                done.error = f"events put: {code or type(exc).__name__}"
                done.failed += len(events) - start
                break
            done.calls += 1
            results = reply.get("Entries") or []
            for event, result in zip(chunk, results, strict=False):
                if result.get("EventId") and not result.get("ErrorCode"):
                    done.events.append(event)
                else:
                    done.failed += 1
                    done.error = f"events put: {result.get('ErrorCode') or 'failed'}"
        return done
