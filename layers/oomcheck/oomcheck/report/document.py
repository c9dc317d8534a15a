"""The report of one run: the JSON contract (README, "Report JSON"); the table is report.table."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum
from typing import TYPE_CHECKING, Any

from oomcheck.detect.correlate import WorkerIdentity, workers_for_hosts
from oomcheck.model import (
    Action,
    Delivery,
    Finding,
    Incident,
    Kind,
    Mode,
    Source,
    SourceState,
    SourceStatus,
    StartedTask,
    WorkerRecord,
    WorkerSnapshot,
    WorkerStatus,
)
from oomcheck.report.events import RunEvents
from oomcheck.store.codec import finding_to_json, incident_to_json

if TYPE_CHECKING:
    from oomcheck.sources.ecs import EcsTask

SCHEMA = 1

# Sources without which a run is no check at all: the broker (remote control) and the backend.
_ESSENTIAL = (Source.INSPECT.value, Source.RESULTS.value)


class ExitCode(IntEnum):
    """The CLI's exit codes (README, "Exit codes"); 64, 69 and 78 are sysexits.h's, as Celery's
    own CLI exits 69 (EX_UNAVAILABLE) when no node replies."""

    OK = 0  # no open critical or warning finding
    ERROR = 1  # an unexpected failure, or interrupted
    FINDINGS = 2  # an open critical or warning finding
    USAGE = 64  # EX_USAGE: the command line could not be parsed
    UNAVAILABLE = 69  # EX_UNAVAILABLE: the broker or the result backend could not be read
    CONFIG = 78  # EX_CONFIG: a setting was refused (environment, the app, or a flag's value)


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """One alert of this run and what became of its message; ``reason``: why it was not
    published (None when it was)."""

    incident_id: str
    kind: Kind
    action: Action
    subject: str
    outcome: Delivery
    reason: str | None = None
    # channel (its describe() name) -> "published" | "sent earlier" | "failed"; empty when the
    # message was not tried this run
    channels: Mapping[str, str] = field(default_factory=dict)

    @property
    def published(self) -> bool:
        return self.outcome is Delivery.PUBLISHED

    @property
    def printed(self) -> bool:
        return self.outcome is Delivery.PRINTED

    @property
    def error(self) -> str | None:
        """The report's ``"error"``: the reason, after the outcome's word when it is not a
        plain failure (``"undeliverable: ..."``, ``"deferred: ..."``)."""
        if self.outcome in (Delivery.PUBLISHED, Delivery.PRINTED):
            return None
        if self.outcome is Delivery.FAILED:
            return self.reason
        return f"{self.outcome.value}: {self.reason}" if self.reason else self.outcome.value


@dataclass(frozen=True, slots=True)
class SettingOrigin:
    """A setting as the report shows it (passwords masked) and where it came from: ``app``,
    ``env OOMCHECK_BROKER_URL``, ``flag --broker``, ``default``..."""

    value: str | float | None
    source: str


@dataclass(frozen=True, slots=True)
class Report:
    mode: Mode
    checked_at: float
    duration_ms: int
    workers: tuple[dict[str, Any], ...]
    findings: tuple[Finding, ...]
    sources: Mapping[str, SourceStatus]  # source name (oomcheck.model.Source) -> its status
    stats: Mapping[str, int]
    alerts: tuple[AlertRecord, ...] = ()
    incidents: tuple[Incident, ...] = ()
    notes: tuple[str, ...] = field(default=())
    # the CLI's: the Celery-side settings and their sources (empty in Lambda)
    settings: Mapping[str, SettingOrigin] = field(default_factory=dict)
    # the top memory users and every queue measured (oomcheck.report.usage); None: the source is off
    # or failed this run
    memory: tuple[dict[str, Any], ...] | None = None
    queues: tuple[dict[str, Any], ...] | None = None
    # beat's periodic entries (oomcheck.report.schedule); None: the beat source is off or failed
    schedule: tuple[dict[str, Any], ...] | None = None
    # incident id -> the silence holding its messages (oomcheck.silences)
    silenced: Mapping[str, str] = field(default_factory=dict)
    # what this run opened and learned, as saved (for metrics; None: nothing was saved)
    events: RunEvents | None = None
    # the audit's history by task type (oomcheck.report.history.history_block); None otherwise
    history: Mapping[str, Any] | None = None

    @property
    def exit_code(self) -> ExitCode:
        """UNAVAILABLE when the broker or the backend could not be read, on every such run (with
        or without an open ``source_unavailable``: the check was not made in full, whatever it
        found); else FINDINGS for an open critical/warning finding; else OK."""
        if any(
            status is not None and status.failed
            for status in (self.sources.get(name) for name in _ESSENTIAL)
        ):
            return ExitCode.UNAVAILABLE
        if any(f.alertable for f in self.findings):
            return ExitCode.FINDINGS
        return ExitCode.OK

    def _finding_json(self, finding: Finding) -> dict[str, Any]:
        out = finding_to_json(finding)
        silence = self.silenced.get(finding.incident_id or "")
        if silence is not None:
            out["silenced_by"] = silence
        return out

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema": SCHEMA,
            "mode": self.mode.value,
            "checked_at": datetime.fromtimestamp(self.checked_at, tz=UTC).isoformat(),
            "duration_ms": self.duration_ms,
            "workers": list(self.workers),
            "findings": [self._finding_json(f) for f in self.findings],
            "sources": source_texts(self.sources),
            "stats": dict(self.stats),
            "alerts": [
                {
                    "incident_id": a.incident_id,
                    "kind": a.kind.value,
                    "action": a.action.value,
                    "subject": a.subject,
                    "published": a.published,
                    **({"printed": True} if a.printed else {}),
                    **({"error": a.error} if a.error else {}),
                    **({"channels": dict(a.channels)} if a.channels else {}),
                }
                for a in self.alerts
            ],
        }
        if self.mode is Mode.AUDIT:
            out["incidents"] = [
                {
                    **incident_to_json(i),
                    **({"silenced_by": s} if (s := self.silenced.get(i.id)) else {}),
                }
                for i in self.incidents
            ]
        if self.memory is not None:
            out["memory"] = list(self.memory)
        if self.queues is not None:
            out["queues"] = list(self.queues)
        if self.schedule is not None:
            out["schedule"] = list(self.schedule)
        if self.history is not None:
            out["history"] = dict(self.history)
        if self.notes:
            out["notes"] = list(self.notes)
        if self.settings:
            out["settings"] = {
                name: {"value": s.value, "from": s.source} for name, s in self.settings.items()
            }
        return out


def source_text(status: SourceStatus) -> str:
    """A source's status as the report says it: ``"ok"``, ``"error: ..."``, ``"off: ..."``,
    ``"busy: ..."``, ``"lost lease: ..."``; an ok status with a detail is that detail alone (the
    alerts' channels: ``"sns:arn:..."``, ``"printed (no topic configured)"``)."""
    if status.state is SourceState.OK and status.detail:
        return status.detail
    return f"{status.state.value}: {status.detail}" if status.detail else status.state.value


def source_texts(statuses: Mapping[str, SourceStatus]) -> dict[str, str]:
    """The report's ``"sources"``, in the order the run read them."""
    return {name: source_text(status) for name, status in statuses.items()}


def worker_rows(
    live: Mapping[str, WorkerSnapshot] | None, roster: Mapping[str, WorkerRecord]
) -> tuple[dict[str, Any], ...]:
    rows: dict[str, dict[str, Any]] = {}
    for name, record in roster.items():
        rows[name] = {
            "name": name,
            "pid": record.pid,
            "uptime_s": None,
            "pool_pids": list(record.pool_pids),
            "active": len(record.active),
            "status": record.status.value,
        }
    for name, snap in (live or {}).items():
        rows[name] = {
            "name": name,
            "pid": snap.pid,
            "uptime_s": round(snap.uptime_s),
            "pool_pids": list(snap.pool_pids),
            "active": len(snap.active or ()),
            "status": WorkerStatus.ALIVE.value,
        }
    return tuple(rows[n] for n in sorted(rows))


def sqs_worker_rows(
    started: Iterable[StartedTask],
    findings: Iterable[Finding],
    ecs_tasks: Sequence[EcsTask] = (),
    *,
    now: float,
    worker_map: Mapping[str, str] | None = None,
) -> tuple[dict[str, Any], ...]:
    """Celery on SQS: no worker can be asked, so the workers are those the result backend's
    STARTED records name (hostname, pool pids), ``lost`` where a worker_lost names them, and
    the running tasks of the ECS services (OOMCHECK_ECS_SERVICES). An ECS task whose address is
    a STARTED worker's host is that worker (one row, both sources in ``known_from``); one that
    matches none is a row of its own, named ``ecs:<cluster>/<service>/<task id>``."""
    lost = {f.worker for f in findings if f.kind is Kind.WORKER_LOST and f.worker}
    by_worker: dict[str, list[StartedTask]] = {}
    for task in started:
        if task.worker:
            by_worker.setdefault(task.worker, []).append(task)
    names = sorted(set(by_worker) | lost)
    identities = [WorkerIdentity(name=n) for n in names]
    ecs_of: dict[str, list[EcsTask]] = {}
    rows: dict[str, dict[str, Any]] = {}
    for ecs in ecs_tasks:
        matched = workers_for_hosts(ecs.addresses, identities, worker_map or {})
        if len(matched) == 1:
            ecs_of.setdefault(matched[0], []).append(ecs)
        else:
            rows[_ecs_name(ecs)] = _ecs_row(ecs, now)
    for name in names:
        tasks = by_worker.get(name, ())
        sources = ["results: STARTED records"]
        sources += [
            f"ecs: task {e.task_id} of {e.cluster}/{e.service}" for e in ecs_of.get(name, ())
        ]
        if name in lost:
            sources.append("exit evidence")
        rows[name] = {
            "name": name,
            "pid": None,
            "uptime_s": None,
            "pool_pids": sorted({t.pid for t in tasks if t.pid}),
            "active": len(tasks),
            "status": WorkerStatus.LOST.value if name in lost else WorkerStatus.BUSY.value,
            "known_from": ", ".join(sources),
        }
        addresses = [a for e in ecs_of.get(name, ()) for a in e.addresses]
        if addresses:
            rows[name]["addresses"] = sorted(set(addresses))
    return tuple(rows[n] for n in sorted(rows))


def _ecs_name(task: EcsTask) -> str:
    return f"ecs:{task.cluster}/{task.service}/{task.task_id}"


def _ecs_row(task: EcsTask, now: float) -> dict[str, Any]:
    """An ECS task running in a worker service that no STARTED record names (an idle worker)."""
    return {
        "name": _ecs_name(task),
        "pid": None,
        "uptime_s": int(now - task.started_at) if task.started_at is not None else None,
        "pool_pids": [],
        "active": 0,
        "status": WorkerStatus.ALIVE.value,
        "known_from": f"ecs: task {task.task_id} of {task.cluster}/{task.service} (RUNNING)",
        "addresses": list(task.addresses),
    }
