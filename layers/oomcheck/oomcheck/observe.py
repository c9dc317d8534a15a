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

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from oomcheck.model import (
    ExitEvidence,
    LostFailure,
    MemorySample,
    Observation,
    Presence,
    QueueDepth,
    Source,
    SourceState,
    SourceStatus,
    StartedTask,
    State,
    UnackedMessage,
    WorkerSnapshot,
    WorkerStatus,
)
from oomcheck.redact import scrub
from oomcheck.sources.inspector import InspectResult
from oomcheck.sources.queues import QueueRead, queue_names

if TYPE_CHECKING:
    from oomcheck.runner import Deps, ExitSource

T = TypeVar("T")
OK = SourceStatus(SourceState.OK)
# strangers pinged by name per run: a flood of unknown names must not stall the run
MAX_STRANGERS = 50
MAX_ERROR_CHARS = 500


class QueueSource(Protocol):
    """Backlogs of the named queues (oomcheck.sources.queues)."""

    def depths(self, names: Sequence[str]) -> QueueRead: ...


class ReferenceClock(Protocol):
    """A clock shared with the workers' side (Redis ``TIME``); ``name`` says whose it is."""

    name: str

    def __call__(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Read(Generic[T]):
    """One source's outcome: ``value`` is None when it failed or is off."""

    value: T | None
    status: SourceStatus
    counters: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ClockRead:
    at: float  # the observation's time: the reference clock's, else the local one
    offset_s: float | None  # reference minus local; None when no reference answered
    note: str | None = None


@dataclass(frozen=True, slots=True)
class ResultsRead:
    started: tuple[StartedTask, ...]
    lost: tuple[LostFailure, ...]
    cursor: str | None
    # result-backend status of tasks that were active on workers that have since vanished
    task_status: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Observed:
    observation: Observation  # errors: source name -> error text, for the detection core
    statuses: dict[str, SourceStatus]
    stats: dict[str, int]
    discovered: bool
    scan_cursor: str | None
    notes: tuple[str, ...] = ()


def guard(call: Callable[[], T], secrets: tuple[str, ...]) -> tuple[T | None, SourceStatus]:
    """``call()``'s value and ``ok``, or None and an ``error`` status with scrubbed text."""
    try:
        return call(), OK
    except Exception as exc:  # noqa: BLE001 - a source must never take the run down
        return None, _error(f"{type(exc).__name__}: {exc}", secrets)


def _error(text: str, secrets: tuple[str, ...]) -> SourceStatus:
    return SourceStatus(SourceState.ERROR, scrub(text, secrets)[:MAX_ERROR_CHARS])


def read_clock(reference: ReferenceClock, local: Callable[[], float]) -> ClockRead:
    """One ``TIME`` against the local clock; the local clock, said so, when it cannot be read."""
    before = local()
    try:
        server = reference()
    except Exception:  # noqa: BLE001 - the source itself will report why, in its own status
        return ClockRead(
            before,
            None,
            f"reference clock ({reference.name} TIME) did not answer: times in this run are the "
            "checker's own clock",
        )
    after = local()
    # half the round trip each way: the server read its clock about mid-way
    return ClockRead(server, server - (before + after) / 2)


def read_inspect(
    deps: Deps, state: State, now: float, *, audit: bool
) -> tuple[Read[InspectResult], SourceStatus]:
    """Remote control: its replies define "alive" for this instant. ``inspected_at`` is local.
    The second value is broker presence's status (asked only when a known worker is silent)."""
    inspector = deps.inspector
    if inspector is None:
        return Read(None, _off(deps, Source.INSPECT)), _off(deps, Source.PRESENCE)
    expected = sorted(
        name
        for name, r in state.workers.items()
        if r.status in (WorkerStatus.ALIVE, WorkerStatus.BUSY)
    )
    discover = (
        audit
        or not expected
        or state.last_discovery_at is None
        or now - state.last_discovery_at >= deps.settings.discovery_interval_s
    )

    def needs_registered(snap: WorkerSnapshot) -> bool:
        record = state.workers.get(snap.name)
        return record is None or record.pid != snap.pid or not record.limits

    probe = _PresenceProbe(deps, state, now)
    inspected, status = guard(
        lambda: inspector.observe(
            expected,
            discover=discover,
            need_registered=needs_registered,
            presence=probe if deps.presence is not None else None,
        ),
        deps.settings.secrets(),
    )
    if inspected is None:
        return Read(None, status), probe.status
    workers = dict(inspected.workers)
    # keep what the roster knows of limits when registered() was not asked again
    for name, snap in workers.items():
        record = state.workers.get(name)
        if not snap.registered and record is not None and record.pid == snap.pid:
            workers[name] = replace(snap, registered=record.limits)
    return Read(replace(inspected, workers=workers), status), probe.status


class _PresenceProbe:
    """Asked by the inspector between the broadcast and the re-ping, with who answered and who
    did not; keeps its own status for the report."""

    def __init__(self, deps: Deps, state: State, now: float) -> None:
        self.deps = deps
        self.state = state
        self.now = now
        self.status = OK if deps.presence is not None else _off(deps, Source.PRESENCE)

    def __call__(
        self, answered: Mapping[str, WorkerSnapshot], missing: Sequence[str]
    ) -> Mapping[str, Presence]:
        from oomcheck.presence import Member
        from oomcheck.sources.presence import PresenceOff

        presence = self.deps.presence
        assert presence is not None
        members = [Member(n, self.now - s.uptime_s, True) for n, s in answered.items()]
        members += [
            Member(n, self.state.workers[n].boot_at, False)
            for n in missing
            if n in self.state.workers
        ]

        def judge() -> Mapping[str, Presence] | SourceStatus:
            try:
                return presence.judge(members)
            except PresenceOff as exc:  # denied by an ACL: off, as if not configured
                return SourceStatus(SourceState.OFF, str(exc))

        found, self.status = guard(judge, self.deps.settings.secrets())
        if isinstance(found, SourceStatus):
            self.status = found
            return {}
        return found or {}


def read_results(
    deps: Deps, state: State, now: float, workers: Mapping[str, WorkerSnapshot] | None
) -> Read[ResultsRead]:
    """STARTED and WorkerLostError records, then (best effort) the fate of the tasks that were
    active on workers that vanished since the last run."""
    results = deps.results
    if results is None:
        return Read(None, _off(deps, Source.RESULTS))
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


def reping_strangers(
    deps: Deps,
    state: State,
    workers: Mapping[str, WorkerSnapshot],
    started: tuple[StartedTask, ...],
) -> dict[str, WorkerSnapshot]:
    """Workers named by STARTED records that neither answered nor are on the roster, pinged by
    name once before their tasks count as orphans (they may have missed a limited broadcast)."""
    inspector = deps.inspector
    if inspector is None:
        return {}
    strangers = sorted({t.worker for t in started if t.worker} - set(workers) - set(state.workers))[
        :MAX_STRANGERS
    ]
    if not strangers:
        return {}
    # same broker as inspect, which answered: not a source status of its own
    found = guard(lambda: inspector.ping_direct(strangers), deps.settings.secrets())[0]
    return dict(found or {})


def read_broker(deps: Deps, now: float) -> Read[tuple[UnackedMessage, ...]]:
    broker = deps.broker
    if broker is None:
        return Read(None, _off(deps, Source.BROKER))
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
        return Read(None, _off(deps, Source.EXITS)), Read(None, _off(deps, Source.MEMORY))
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
        status = _error(read.error, secrets)
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
        return Read(None, _off(deps, Source.QUEUES))
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
        status = _error(f"active_queues(): {queues_error}", secrets)
    counters = {"queue_depths": len(read.depths), "queues_dropped": read.dropped}
    return Read(read.depths, status, counters)


def _remembered_queues(state: State) -> Iterable[str]:
    """Queues the roster remembers its workers consuming (``WorkerRecord.queues``, once the
    roster keeps them), so that a queue whose only workers died is still measured."""
    for record in state.workers.values():
        yield from record.queues


def _off(deps: Deps, source: Source) -> SourceStatus:
    return SourceStatus(SourceState.OFF, deps.off.get(source.value, "not configured"))


def observe(deps: Deps, state: State, local_now: float, *, audit: bool) -> Observed:
    """Read every source once. ``local_now`` is the checker's clock at the start of the run;
    the observation's ``at`` is the reference clock's (see the module docstring)."""
    clock = (
        read_clock(deps.reference_clock, deps.clock)
        if deps.reference_clock is not None
        else ClockRead(local_now, None)
    )
    now = clock.at
    offset = clock.offset_s or 0.0

    inspected, presence_status = read_inspect(deps, state, now, audit=audit)
    workers = dict(inspected.value.workers) if inspected.value else None
    results = read_results(deps, state, now, workers)
    if workers is not None and results.value and results.value.started:
        workers.update(reping_strangers(deps, state, workers, results.value.started))
    broker = read_broker(deps, now)
    exits, memory = read_logs(deps, state.last_run_at, now)
    queues = read_queues(
        deps, state, workers, inspected.value.queues_error if inspected.value else None
    )

    outcomes = (
        (Source.INSPECT, inspected.status, inspected.counters),
        (Source.PRESENCE, presence_status, dict[str, int]()),
        (Source.RESULTS, results.status, results.counters),
        (Source.BROKER, broker.status, broker.counters),
        (Source.EXITS, exits.status, exits.counters),
        (Source.MEMORY, memory.status, memory.counters),
        (Source.QUEUES, queues.status, queues.counters),
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
        queues=queues.value,
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
    )


def _present(adapter: object | None, value: tuple[T, ...] | None) -> tuple[T, ...] | None:
    """An unconfigured source saw nothing (``()``); a configured one that failed is None."""
    return () if adapter is None else value
