"""The observe step of a run: each source read once, each outcome a typed status.

One small function per source returns a :class:`Read` (its value, a :class:`SourceStatus`, its
counters). Whatever a source raises becomes an ``error`` status in :func:`guard`, the one place
where an exception's text is scrubbed of secrets; statuses become strings only in the report.

Times: the observation is stamped with a reference clock, the Redis ``TIME`` of the broker (or
result backend) when one answers. Workers stamp task starts and fetches with their own clocks and
Redis ages keys with its own; those hosts are NTP-synced, while the checker (a Lambda, a laptop,
a cron box) is the one whose clock may be off or step between runs. Comparing everything with the
reference keeps a checker's skew out of ages, limits and boot times. The lease keeps the local
clock: it is a matter between checkers.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

from oomcheck.model import Observation, Source, SourceState, SourceStatus, State
from oomcheck.observe.base import ClockRead, Read, ResultsRead, T, guard, read_clock
from oomcheck.observe.beat import read_beat
from oomcheck.observe.reads import (
    read_broker,
    read_ecs,
    read_logs,
    read_queues,
    read_results,
    read_sqs,
    sqs_depths,
)
from oomcheck.observe.workers import read_inspect, reping_strangers
from oomcheck.ports import QueueSource, ReferenceClock

if TYPE_CHECKING:
    from oomcheck.ports import Deps
    from oomcheck.sources.ecs import EcsTask

__all__ = [
    "ClockRead",
    "Observed",
    "QueueSource",
    "Read",
    "ReferenceClock",
    "ResultsRead",
    "guard",
    "observe",
    "read_broker",
    "read_clock",
    "read_inspect",
    "read_logs",
    "read_queues",
    "read_results",
    "reping_strangers",
]


@dataclass(frozen=True, slots=True)
class Observed:
    observation: Observation  # errors: source name -> error text, for the detection core
    statuses: dict[str, SourceStatus]
    stats: dict[str, int]
    discovered: bool
    scan_cursor: str | None
    notes: tuple[str, ...] = ()
    # the ECS services' running tasks, where this run read them (OOMCHECK_ECS_SERVICES)
    ecs_tasks: tuple[EcsTask, ...] = ()


def observe(
    deps: Deps, state: State, local_now: float, *, audit: bool, suspects: Collection[str] = ()
) -> Observed:
    """Read every source once. ``local_now`` is the checker's clock at the start of the run;
    the observation's ``at`` is the reference clock's (see the module docstring). ``suspects``:
    workers a death is suspected of, whom broker presence is asked about first."""
    clock = (
        read_clock(deps.reference_clock, deps.clock)
        if deps.reference_clock is not None
        else ClockRead(local_now, None)
    )
    now = clock.at
    offset = clock.offset_s or 0.0

    inspected, presence_status = read_inspect(deps, state, now, audit=audit, suspects=suspects)
    workers = dict(inspected.value.workers) if inspected.value else None
    results = read_results(deps, state, now, workers)
    if workers is not None and results.value and results.value.started:
        workers.update(reping_strangers(deps, state, workers, results.value.started))
    broker = read_broker(deps, now)
    exits, memory = read_logs(deps, state.last_run_at, now)
    ecs_status, memory, ecs_tasks = read_ecs(deps, memory)
    queues = read_queues(
        deps, state, workers, inspected.value.queues_error if inspected.value else None
    )
    beat = read_beat(deps, now)
    sqs = read_sqs(deps)

    outcomes = (
        (Source.INSPECT, inspected.status, inspected.counters),
        (Source.PRESENCE, presence_status, dict[str, int]()),
        (Source.RESULTS, results.status, results.counters),
        (Source.BROKER, broker.status, broker.counters),
        (Source.EXITS, exits.status, exits.counters),
        (Source.MEMORY, memory.status, memory.counters),
        (Source.QUEUES, queues.status, queues.counters),
        (Source.BEAT, beat.status, beat.counters),
        (Source.SQS, sqs.status, sqs.counters),
        (Source.ECS, ecs_status, dict[str, int]()),
    )
    statuses = {
        source.value: status
        for source, status, _ in outcomes
        # an unconfigured source is left out, unless it says why it is off
        if status.state is not SourceState.OFF
        or source.value in deps.off
        or status.detail != "not configured"
    }
    stats = dict.fromkeys(
        (
            "result_keys_scanned",
            "started_tasks",
            "skipped_values",
            "unacked_messages",
            "exit_events",
        ),
        0,
    )
    for _, _, counters in outcomes:
        stats.update(counters)
    if clock.offset_s is not None:
        stats["clock_offset_ms"] = round(clock.offset_s * 1000)
    found = results.value
    observation = Observation(
        at=now,
        workers=workers,
        started=_present(deps.results, found.started if found else None),
        lost_failures=_present(deps.results, found.lost if found else None),
        unacked=_present(deps.broker, broker.value),
        exits=_present(deps.exits, exits.value),
        # off, or failed: None (no memory or queue source means nothing is known, not "none")
        memory=memory.value,
        queues=queues.value
        if deps.queues is not None or sqs.value is None
        else sqs_depths(sqs.value),
        beat=beat.value,
        sqs=sqs.value,
        task_status=found.task_status if found else {},
        errors={name: s.detail for name, s in statuses.items() if s.failed},
        broker_transport=deps.settings.broker_transport,
        # the inspector stamps with the local clock: moved onto the reference
        inspected_at=inspected.value.inspected_at + offset if inspected.value else None,
        keys_scanned=stats["result_keys_scanned"],
        skipped_values=stats["skipped_values"],
        presence=(
            inspected.value.presence
            if inspected.value is not None and presence_status.state is SourceState.OK
            else None
        ),
    )
    return Observed(
        observation=observation,
        statuses=statuses,
        stats=stats,
        discovered=bool(inspected.value and inspected.value.discovered),
        scan_cursor=found.cursor if found else state.scan_cursor,
        notes=(clock.note,) if clock.note else (),
        ecs_tasks=ecs_tasks,
    )


def _present(adapter: object | None, value: tuple[T, ...] | None) -> tuple[T, ...] | None:
    """An unconfigured source saw nothing (``()``); a configured one that failed is None."""
    return () if adapter is None else value
