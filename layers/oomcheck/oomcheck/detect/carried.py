"""The state carried through one evaluation: the previous state, with the carries of the families
judged so far. A family sees what the families before it in ``evaluate``'s list decided (the
roster after the workers family, the kill counts after workers and children), never a state half
rewritten; the next state is written from the last of these, once."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TypeVar

from oomcheck.detect.signals import Carry, KillSeen
from oomcheck.model import Cause, KillRecord, MemoryPoint, State, WorkerRecord

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class Carried:
    workers: Mapping[str, WorkerRecord]
    kills: Mapping[str, KillRecord]
    # evidence ids claimed by the families so far (this run only)
    events: frozenset[str]
    # WorkerLostError records counted: task id -> written_at (earlier runs' and this run's)
    failures: Mapping[str, float]
    source_failures: Mapping[str, int]
    pressure: Mapping[str, tuple[MemoryPoint, ...]]
    orphaned_since: Mapping[str, float]

    @classmethod
    def start(cls, state: State) -> Carried:
        return cls(
            workers=state.workers,
            kills=state.kills,
            events=frozenset(),
            failures=state.processed_failures,
            source_failures=state.source_failures,
            pressure=state.pressure,
            orphaned_since=state.orphaned_since,
        )

    def after(self, carry: Carry) -> Carried:
        """This, with one family's carry laid over it."""
        return Carried(
            workers={**self.workers, **carry.workers} if carry.workers else self.workers,
            kills=merge_kills(self.kills, carry.kills) if carry.kills else self.kills,
            events=self.events | carry.events,
            failures={**self.failures, **carry.failures} if carry.failures else self.failures,
            source_failures=_either(carry.source_failures, self.source_failures),
            pressure=_either(carry.pressure, self.pressure),
            orphaned_since=_either(carry.orphaned_since, self.orphaned_since),
        )


def _either(new: Mapping[K, V] | None, old: Mapping[K, V]) -> Mapping[K, V]:
    return old if new is None else new


def merge_kills(
    previous: Mapping[str, KillRecord], seen: Iterable[KillSeen]
) -> dict[str, KillRecord]:
    """The kill records after this run: one kill per (worker, pid) of a task, with the cause of
    whichever sign of it knew one (a pid gone from the pool says nothing; the kernel line about
    it says OOM); records that gain nothing stay the same objects."""
    kills = dict(previous)
    for item in seen:
        record = kills.get(item.task_id)
        kill = item.kill
        if record is None:
            kills[item.task_id] = KillRecord(item.task_id, item.name, (kill,))
            continue
        same = [
            i
            for i, k in enumerate(record.kills)
            if kill.worker is not None
            and kill.pid is not None
            and (k.worker, k.pid) == (kill.worker, kill.pid)
        ]
        if not same:
            kills[item.task_id] = replace(
                record, name=record.name or item.name, kills=(*record.kills, kill)
            )
        elif kill.cause != Cause.UNKNOWN and record.kills[same[0]].cause == Cause.UNKNOWN:
            known = replace(record.kills[same[0]], cause=kill.cause)
            updated = tuple(known if i == same[0] else k for i, k in enumerate(record.kills))
            kills[item.task_id] = replace(record, kills=updated)
    return kills
