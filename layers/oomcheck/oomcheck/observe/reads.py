"""The stores: the result backend, the broker's unacked set and queues, CloudWatch Logs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from oomcheck.model import (
    ExitEvidence,
    MemorySample,
    QueueDepth,
    Source,
    SourceState,
    SourceStatus,
    SqsView,
    State,
    UnackedMessage,
    WorkerSnapshot,
)
from oomcheck.sources.queues import queue_names

if TYPE_CHECKING:
    from oomcheck.ports import Deps, ExitSource
    from oomcheck.sources.ecs import EcsTask
from oomcheck.observe.base import OK, Read, ResultsRead, error, guard, off


def read_results(
    deps: Deps, state: State, now: float, workers: Mapping[str, WorkerSnapshot] | None
) -> Read[ResultsRead]:
    """STARTED and WorkerLostError records, then (best effort) the fate of the tasks that were
    active on workers that vanished since the last run."""
    results = deps.results
    if results is None:
        return Read(None, off(deps, Source.RESULTS))
    secrets = deps.settings.secrets()
    scan, status = guard(
        lambda: results.scan(now, budget=deps.settings.scan_budget, cursor=state.scan_cursor),
        secrets,
    )
    if scan is None:
        return Read(None, status)
    task_status: Mapping[str, str] = {}
    wanted = (
        []
        if workers is None
        else sorted(
            task.id
            for name, record in state.workers.items()
            if name not in workers
            for task in record.active
        )
    )
    if wanted:
        # same backend as the scan, which answered: not a source status of its own
        task_status = guard(lambda: results.lookup(wanted), secrets)[0] or {}
    started = tuple(scan.started)
    read = ResultsRead(started, tuple(scan.lost_failures), scan.cursor, task_status)
    counters = {
        "result_keys_scanned": int(scan.keys_scanned),
        "started_tasks": len(started),
        "skipped_values": int(scan.skipped_values),
    }
    return Read(read, status, counters)


def read_broker(deps: Deps, now: float) -> Read[tuple[UnackedMessage, ...]]:
    broker = deps.broker
    if broker is None:
        return Read(None, off(deps, Source.BROKER))
    unacked, status = guard(lambda: tuple(broker.unacked(now)), deps.settings.secrets())
    return Read(unacked, status, {"unacked_messages": len(unacked or ())})


def read_logs(
    deps: Deps, since: float | None, now: float
) -> tuple[Read[tuple[ExitEvidence, ...]], Read[tuple[MemorySample, ...]]]:
    """Exit evidence and container memory samples, from the same FilterLogEvents pages. A log
    group that failed is reported while the healthy groups' records are kept; memory fails only
    when a Container Insights group is among the failed ones."""
    source = deps.exits
    if source is None:
        return Read(None, off(deps, Source.EXITS)), Read(None, off(deps, Source.MEMORY))
    memory_groups = tuple(getattr(source, "memory_groups", ()))
    memory_off = SourceStatus(
        SourceState.OFF,
        "no Container Insights performance log group in OOMCHECK_LOG_GROUPS",
    )
    secrets = deps.settings.secrets()
    read, status = guard(lambda: _logs_or_partial(source, since, now), secrets)
    if read is None:
        return Read(None, status), Read(None, status if memory_groups else memory_off)
    if read.error:
        status = error(read.error, secrets)
    exits = Read(read.evidence, status, {"exit_events": len(read.evidence)})
    if not memory_groups:
        return exits, Read(None, memory_off)
    memory_status = status if set(read.failed_groups) & set(memory_groups) else OK
    return exits, Read(read.memory, memory_status, {"memory_samples": len(read.memory)})


@dataclass(frozen=True, slots=True)
class _LogsRead:
    evidence: tuple[ExitEvidence, ...]
    memory: tuple[MemorySample, ...]
    error: str | None = None
    failed_groups: tuple[str, ...] = ()


def _logs_or_partial(source: ExitSource, since: float | None, now: float) -> _LogsRead:
    try:
        read = source.read(since, now)
    except Exception as exc:
        partial = getattr(exc, "partial", None)
        if partial is None:
            raise
        return _LogsRead(
            tuple(partial.evidence),
            tuple(getattr(partial, "memory", ())),
            f"{type(exc).__name__}: {exc}",
            tuple(getattr(exc, "groups", ())),
        )
    return _LogsRead(tuple(read.evidence), tuple(getattr(read, "memory", ())))


def read_queues(
    deps: Deps, state: State, workers: Mapping[str, WorkerSnapshot] | None, queues_error: str | None
) -> Read[tuple[QueueDepth, ...]]:
    """Backlogs of the queues the live workers consume, the ones the roster remembers and the
    ones ``OOMCHECK_QUEUES`` names. When active_queues() failed the depths are still read (the
    configured and remembered queues), but the status is an error: who consumes what is unknown."""
    source = deps.queues
    if source is None:
        return Read(None, off(deps, Source.QUEUES))
    names = queue_names(
        deps.settings.queues,
        (q for snap in (workers or {}).values() for q in snap.queues or ()),
        _remembered_queues(state),
    )
    secrets = deps.settings.secrets()
    read, status = guard(lambda: source.depths(names), secrets)
    if read is None:
        return Read(None, status)
    if queues_error:
        status = error(f"active_queues(): {queues_error}", secrets)
    counters = {"queue_depths": len(read.depths), "queues_dropped": read.dropped}
    return Read(read.depths, status, counters)


def _remembered_queues(state: State) -> Iterable[str]:
    """Queues the roster remembers its workers consuming (``WorkerRecord.queues``, once the
    roster keeps them), so that a queue whose only workers died is still measured."""
    for record in state.workers.values():
        yield from record.queues


def read_ecs(
    deps: Deps, memory: Read[tuple[MemorySample, ...]]
) -> tuple[SourceStatus, Read[tuple[MemorySample, ...]], tuple[EcsTask, ...]]:
    """The ECS services' running tasks, read when there are memory samples to tie to their
    workers (each sample then also names its task's addresses), and on every run on SQS, where
    they are the workers the report lists beside those of the STARTED records."""
    source = deps.ecs
    if source is None:
        return off(deps, Source.ECS), memory, ()
    if not memory.value and deps.settings.broker_transport != "sqs":
        return OK, memory, ()
    from oomcheck.sources.ecs import with_addresses

    tasks, status = guard(source.running, deps.settings.secrets())
    if tasks is None:
        return status, memory, ()
    if not memory.value:
        return status, memory, tasks
    counters = {**memory.counters, "ecs_tasks": len(tasks)}
    return status, Read(with_addresses(memory.value, tasks), memory.status, counters), tasks


def read_sqs(deps: Deps) -> Read[SqsView]:
    """The SQS queues' attributes and their dead letters (never a receive from a live queue)."""
    source = deps.sqs
    if source is None:
        return Read(None, off(deps, Source.SQS))
    view, status = guard(source.read, deps.settings.secrets())
    if view is None:
        return Read(None, status)
    counters = {"sqs_queues": len(view.queues), "dead_letters": len(view.dead_letters)}
    return Read(view, status, counters)


def sqs_depths(view: SqsView) -> tuple[QueueDepth, ...]:
    """The report's queue block on SQS: the waiting messages (in-flight ones are being run)."""
    return tuple(QueueDepth(q.name, q.visible) for q in view.queues)
