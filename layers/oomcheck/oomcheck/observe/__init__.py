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

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from oomcheck.deadline import Deadline
from oomcheck.model import Observation, Presence, Source, SourceState, SourceStatus, State
from oomcheck.observe.base import OK, ClockRead, Read, ResultsRead, T, guard, off, read_clock
from oomcheck.observe.beat import read_beat
from oomcheck.observe.bounded import Bounded
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


# A TIME round trip takes milliseconds on any live Redis: a clock that has not answered in this
# long is a frozen broker, whose socket timeouts must not eat the time the other sources need.
CLOCK_S = 2.0


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
    # State.stale_bindings for the next run; None: keep the previous
    stale_bindings: tuple[str, ...] | None = None


def observe(
    deps: Deps,
    state: State,
    local_now: float,
    *,
    audit: bool,
    deadline: Deadline | None = None,
    suspects: Collection[str] = (),
) -> Observed:
    """Read every source once. ``local_now`` is the checker's clock at the start of the run;
    the observation's ``at`` is the reference clock's (see the module docstring). With a
    ``deadline``, every read ends in time to save the state and release the lease by then (a
    read that would not is a failed source: oomcheck.observe.bounded). ``suspects``: workers a
    death is suspected of, whom broker presence is asked about first."""
    bound = Bounded(deadline, deps.store_s)
    clock = (
        bound.run(
            lambda: read_clock(reference, deps.clock),
            lambda why: ClockRead(
                local_now,
                None,
                f"reference clock ({reference.name} TIME): {why}: times in this run are the "
                "checker's own clock",
            ),
            cap_s=CLOCK_S,
        )
        if (reference := deps.reference_clock) is not None
        else ClockRead(local_now, None)
    )
    now = clock.at
    offset = clock.offset_s or 0.0

    inspected, presence_status, newcomers_status = _within(
        bound,
        deps.inspector,
        lambda: read_inspect(deps, state, now, audit=audit, suspects=suspects),
        lambda why: (
            _late(why),
            _failed(why) if deps.presence is not None else OK,
            _failed(why) if deps.presence is not None else off(deps, Source.NEWCOMERS),
        ),
    )
    workers = dict(inspected.value.workers) if inspected.value else None
    results = _within(bound, deps.results, lambda: read_results(deps, state, now, workers), _late)
    strangers_seen: dict[str, Presence] = {}
    if workers is not None and results.value and results.value.started:
        started = results.value.started
        answered, strangers_seen = bound.run(
            lambda: reping_strangers(deps, state, workers, started), lambda _: ({}, {})
        )
        workers.update(answered)
    broker = _within(bound, deps.broker, lambda: read_broker(deps, now), _late)
    exits, memory = _within(
        bound,
        deps.exits,
        lambda: read_logs(deps, state.last_run_at, now),
        lambda why: (_late(why), _late(why)),
    )
    ecs_status, memory, ecs_tasks = _within(
        bound,
        deps.ecs,
        lambda: read_ecs(deps, memory),
        lambda why: (_failed(why), memory, ()),
    )
    queues_error = inspected.value.queues_error if inspected.value else None
    queues = _within(
        bound, deps.queues, lambda: read_queues(deps, state, workers, queues_error), _late
    )
    beat = _within(bound, deps.beat, lambda: read_beat(deps, now), _late)
    sqs = _within(bound, deps.sqs, lambda: read_sqs(deps), _late)

    outcomes = (
        (Source.INSPECT, inspected.status, inspected.counters),
        (Source.PRESENCE, presence_status, dict[str, int]()),
        (Source.NEWCOMERS, newcomers_status, dict[str, int]()),
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
            {**strangers_seen, **inspected.value.presence}
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
        stale_bindings=inspected.value.stale_bindings if inspected.value else None,
    )


def _failed(why: str) -> SourceStatus:
    return SourceStatus(SourceState.ERROR, why)


def _late(why: str) -> Read[Any]:
    return Read(None, _failed(why))


def _within(
    bound: Bounded, adapter: object | None, call: Callable[[], T], late: Callable[[str], T]
) -> T:
    """``call`` within the run's deadline; an unconfigured source (no adapter) reads nothing
    and is asked inline, so that it reports itself off, not late."""
    return bound.run(call, late) if adapter is not None else call()


def _present(adapter: object | None, value: tuple[T, ...] | None) -> tuple[T, ...] | None:
    """An unconfigured source saw nothing (``()``); a configured one that failed is None."""
    return () if adapter is None else value
