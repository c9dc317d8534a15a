"""History by task type: which task types keep getting killed, under what memory, and what
became of their tasks (issue 21).

Pure, like the rest of ``detect``: the next history from the previous state and this run's
incidents. It follows the incidents, not the findings, so one death counts once however many runs
see it: an incident that did not change is the same object as before and is skipped; an update
(more victims, the cause now known) replaces that incident's entry. Entries older than the
history window fall out; a task type with none left is dropped (its item deleted).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from oomcheck.model import (
    Incident,
    Kind,
    MemoryPoint,
    Policy,
    PressureOnset,
    State,
    TaskDeath,
    TaskFate,
    TaskHistory,
    Verdict,
)

# Findings whose tasks died with a process. poison_task is left out: each of its kills is already
# one of these.
DEATH_KINDS = frozenset(
    {Kind.WORKER_LOST, Kind.WORKER_RESTARTED, Kind.CHILD_KILLED, Kind.TASK_ORPHANED}
)
_REDELIVERED = frozenset({Verdict.AWAITING_REDELIVERY, Verdict.REDELIVERED})
# a task with no name (its record gave none) still counts, under this name
UNNAMED = "(unnamed)"
# Entries kept per task type (the newest): one DynamoDB item holds them, and items stop at
# 400 KB; a death encodes to about 250 bytes. A kill loop past this many deaths in the window
# is counted from its newest ones.
MAX_ENTRIES = 500


def recorded(
    before: State, incidents: Mapping[str, Incident], policy: Policy, now: float
) -> Mapping[str, TaskHistory]:
    """The history after this run. Unchanged entries (and task types) stay the same objects, so
    the state codec writes nothing for a run in which nothing happened."""
    deaths: dict[str, dict[str, TaskDeath]] = {}
    onsets: dict[str, dict[str, PressureOnset]] = {}
    for incident in incidents.values():
        previous = before.incidents.get(incident.id)
        if previous is incident:
            continue
        if incident.kind in DEATH_KINDS:
            peak = peak_share(before.pressure.get(incident.finding.worker or "", ()))
            for name, death in _deaths(incident, peak).items():
                deaths.setdefault(name, {})[incident.id] = death
        elif incident.kind is Kind.MEMORY_PRESSURE and previous is None:
            for name in _names(incident.finding.tasks):
                onsets.setdefault(name, {})[incident.id] = PressureOnset(
                    incident.id, incident.opened_at, incident.finding.worker or ""
                )
    horizon = now - policy.history_retention_s
    out: dict[str, TaskHistory] = {}
    for name in sorted({*before.task_history, *deaths, *onsets}):
        old = before.task_history.get(name) or TaskHistory(name)
        merged = _merged(old, deaths.get(name, {}), onsets.get(name, {}), horizon)
        if merged.deaths or merged.pressure:
            out[name] = old if merged == old else merged
    return out


def peak_share(points: Iterable[MemoryPoint]) -> float | None:
    shares = [p.used_mb / p.limit_mb for p in points if p.limit_mb > 0]
    return round(max(shares), 4) if shares else None


def _names(tasks: Iterable[TaskFate]) -> list[str]:
    return sorted({t.name or UNNAMED for t in tasks})


def _deaths(incident: Incident, peak: float | None) -> dict[str, TaskDeath]:
    finding = incident.finding
    out: dict[str, TaskDeath] = {}
    for task in finding.tasks:
        name = task.name or UNNAMED
        seen = out.get(name) or TaskDeath(
            incident_id=incident.id,
            at=incident.opened_at,
            kind=incident.kind,
            cause=finding.cause,
            worker=finding.worker,
            victims=0,
            peak_share=peak,
        )
        out[name] = replace(
            seen,
            victims=seen.victims + 1,
            lost=seen.lost + (task.verdict is Verdict.LOST),
            redelivered=seen.redelivered + (task.verdict in _REDELIVERED),
        )
    return out


def _merged(
    old: TaskHistory,
    deaths: Mapping[str, TaskDeath],
    onsets: Mapping[str, PressureOnset],
    horizon: float,
) -> TaskHistory:
    kept_deaths = {d.incident_id: d for d in old.deaths if d.at >= horizon}
    for incident_id, death in deaths.items():
        if death.at < horizon:  # an old incident that closed or expired in this run
            continue
        # an earlier peak survives an update: the samples are gone once the worker died
        earlier = kept_deaths.get(incident_id)
        kept_deaths[incident_id] = (
            replace(death, peak_share=earlier.peak_share)
            if earlier is not None and death.peak_share is None
            else death
        )
    kept_onsets = {p.incident_id: p for p in old.pressure if p.at >= horizon}
    kept_onsets.update((k, p) for k, p in onsets.items() if p.at >= horizon)
    return TaskHistory(
        name=old.name,
        deaths=tuple(sorted(kept_deaths.values(), key=lambda d: (d.at, d.incident_id)))[
            -MAX_ENTRIES:
        ],
        pressure=tuple(sorted(kept_onsets.values(), key=lambda p: (p.at, p.incident_id)))[
            -MAX_ENTRIES:
        ],
    )
