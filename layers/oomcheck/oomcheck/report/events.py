"""What happened in one run, as counts for metrics: the deaths, child kills and memory-pressure
episodes whose incidents this run opened, and the victim tasks it learned of (pure).

Counted from the state the run loaded and the state it saved, so a death counts once: a run
that could not save (a busy lease, an audit) counts nothing, and the run that saves it does.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from oomcheck.detect.history import DEATH_KINDS
from oomcheck.model import Cause, Kind, State, TaskFate, Verdict

# worker deaths; child_killed is counted apart (the worker lives on)
_WORKER_DEATHS = DEATH_KINDS - {Kind.CHILD_KILLED, Kind.TASK_ORPHANED}


@dataclass(frozen=True, slots=True)
class RunEvents:
    # (kind, cause) -> incidents opened this run
    opened: Mapping[tuple[Kind, Cause], int] = field(default_factory=dict)
    # victim tasks first known this run (a new death, or an update that named more), by verdict
    victims: Mapping[Verdict, int] = field(default_factory=dict)
    # their task names, for the metrics' metadata (never a dimension by default)
    task_names: tuple[str, ...] = ()
    # task name -> deaths (incidents opened this run) it was in: for the task types a setting
    # lists as a metric dimension (OOMCHECK_METRIC_TASKS)
    deaths_by_task: Mapping[str, int] = field(default_factory=dict)

    def deaths(self) -> dict[Cause, int]:
        return _by_cause(self.opened, _WORKER_DEATHS)

    def child_kills(self) -> dict[Cause, int]:
        return _by_cause(self.opened, {Kind.CHILD_KILLED})

    def pressure_episodes(self) -> int:
        return sum(n for (kind, _), n in self.opened.items() if kind is Kind.MEMORY_PRESSURE)


def _by_cause(
    opened: Mapping[tuple[Kind, Cause], int], kinds: set[Kind] | frozenset[Kind]
) -> dict[Cause, int]:
    out: Counter[Cause] = Counter()
    for (kind, cause), n in opened.items():
        if kind in kinds:
            out[cause] += n
    return dict(out)


def run_events(loaded: State, saved: State) -> RunEvents:
    opened: Counter[tuple[Kind, Cause]] = Counter()
    victims: Counter[Verdict] = Counter()
    names: set[str] = set()
    by_task: Counter[str] = Counter()
    for incident in saved.incidents.values():
        before = loaded.incidents.get(incident.id)
        if before is incident:
            continue
        if before is None:
            opened[(incident.kind, incident.finding.cause)] += 1
        if incident.kind not in DEATH_KINDS:
            continue
        if before is None:
            by_task.update({t.name for t in incident.finding.tasks if t.name})
        known = {t.id for t in before.finding.tasks} if before is not None else set()
        fresh: list[TaskFate] = [t for t in incident.finding.tasks if t.id not in known]
        victims.update(t.verdict for t in fresh)
        names.update(t.name for t in fresh if t.name)
    return RunEvents(dict(opened), dict(victims), tuple(sorted(names)), dict(by_task))
