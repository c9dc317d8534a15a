"""One run of oomcheck: observe, evaluate, save, alert, report. Adapters come in through Deps.

Every source is guarded: whatever it raises becomes "error: ..." in the report and a
source_unavailable finding, and the run goes on with the others.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

from oomcheck import alerts as alerting
from oomcheck import delivery
from oomcheck.audit import config_risks
from oomcheck.deadline import DEFAULT_RUN_TIMEOUT_S, Deadline
from oomcheck.evaluate import evaluate
from oomcheck.model import (
    ExitEvidence,
    LostFailure,
    Observation,
    Source,
    StartedTask,
    State,
    UnackedMessage,
    WorkerSnapshot,
    WorkerStatus,
)
from oomcheck.redact import scrub
from oomcheck.report import Report, worker_rows
from oomcheck.settings import Settings
from oomcheck.sources.inspector import CeleryInspector, InspectResult
from oomcheck.state import LeaseBusy, StateError, StateStore

T = TypeVar("T")


class ResultSource(Protocol):
    def scan(self, now: float, *, budget: int | None = None, cursor: str | None = None) -> Any: ...

    def lookup(self, task_ids: list[str]) -> dict[str, str]: ...


class BrokerSource(Protocol):
    def unacked(self, now: float) -> tuple[UnackedMessage, ...]: ...


class ExitSource(Protocol):
    def read(self, since: float | None, now: float) -> Any: ...


@dataclass
class Deps:
    """Everything a run talks to; built once per process (Lambda container, CLI invocation)."""

    settings: Settings
    store: StateStore
    publisher: alerting.Publisher
    inspector: CeleryInspector | None = None
    results: ResultSource | None = None
    broker: BrokerSource | None = None
    exits: ExitSource | None = None
    clock: Callable[[], float] = time.time
    off: dict[str, str] = field(default_factory=dict)  # source -> why it is not configured
    # Deadlines and budgets are measured on this clock, never on the wall clock.
    monotonic: Callable[[], float] = time.monotonic
    # The lease owner: one per process, so a run may take back a lease its process's previous
    # run could not release.
    owner: str = field(default_factory=lambda: f"run-{uuid.uuid4().hex[:12]}")
    # Worst cases of one publish and one state-store call (oomcheck.aws.CallLimits.worst_s).
    publish_s: float = 0.0
    store_s: float = 0.0
    journal: delivery.SentJournal = field(default_factory=delivery.SentJournal)


@dataclass
class _Observed:
    observation: Observation
    statuses: dict[str, str]
    stats: dict[str, int]
    discovered: bool
    scan_cursor: str | None


def run_once(deps: Deps, mode: str = "check", deadline: Deadline | None = None) -> Report:
    """A check (observe, evaluate, save, alert) or an audit (read-only: no alerts, no writes).

    ``deadline``: when the run must be done (report built, lease released); by default
    DEFAULT_RUN_TIMEOUT_S from now on ``deps.monotonic``. A run that raises still releases its
    lease.
    """
    started = time.perf_counter()
    if mode not in ("check", "watch", "audit"):
        raise ValueError(f"unknown mode {mode!r}")
    settings = deps.settings
    deadline = deadline or Deadline.after(DEFAULT_RUN_TIMEOUT_S, deps.monotonic)
    now = deps.clock()
    view = _open_state(deps, now, deadline, writable=mode != "audit")
    try:
        # 2. observe
        observed = _observe(deps, view.state, now, audit=mode == "audit")
        errors = {
            k: v[len("error: ") :] for k, v in observed.statuses.items() if v.startswith("error")
        }
        if view.status.startswith("error"):
            errors[Source.STATE.value] = view.status[len("error: ") :]
        observation = replace(observed.observation, errors=errors)

        # 3. evaluate (pure)
        new_state, findings = evaluate(view.state, observation, settings.policy, now)
        new_state = replace(
            new_state,
            last_discovery_at=now if observed.discovered else view.state.last_discovery_at,
            scan_cursor=observed.scan_cursor,
        )
        if mode == "audit":
            findings = [*findings, *config_risks(observation, view.state)]

        # 4. save, alert (each sent mark saved as it is sent), release
        committed = None
        if view.writable:
            committed = delivery.commit(_outbox(deps, deadline), view.loaded, new_state, now)
            view.held = not committed.released
    finally:
        if view.held:
            _abandon(deps)

    done = committed.delivered if committed else None
    records = done.records if done else []
    stats = dict(observed.stats)
    stats["state_writes"] = done.writes if done else 0
    stats["alerts_published"] = sum(1 for a in records if a.published)
    stats["messages_published"] = done.messages if done else 0
    stats["alerts_undeliverable"] = done.undeliverable if done else 0
    statuses = {
        **observed.statuses,
        Source.STATE.value: committed.status if committed else view.status,
    }
    errors_seen = [a.error for a in records if a.error and not a.published]
    statuses[Source.ALERTS.value] = (
        "error: " + errors_seen[0] if errors_seen else deps.publisher.describe()
    )
    roster = new_state.workers if view.writable else {**view.state.workers, **new_state.workers}
    return Report(
        mode=mode,
        checked_at=now,
        duration_ms=int((time.perf_counter() - started) * 1000),
        workers=worker_rows(observation.workers, roster),
        findings=tuple(findings),
        sources=statuses,
        stats=stats,
        alerts=tuple(records),
        incidents=tuple(sorted(new_state.incidents.values(), key=lambda i: -i.opened_at)),
        notes=tuple(view.notes),
    )


@dataclass
class _StateView:
    state: State  # as loaded, with the sent marks this process could not save applied
    loaded: State  # as the store holds it
    status: str
    writable: bool
    held: bool = False  # this run holds the lease and must give it back
    notes: list[str] = field(default_factory=list)


# A lease outlives its run's deadline by this much: a run that died frees the state in seconds.
LEASE_SLACK_S = 5.0


def _open_state(deps: Deps, now: float, deadline: Deadline, *, writable: bool) -> _StateView:
    """1. state: take the lease, then read (a busy lease makes this run read-only; a store that
    failed the lease is not asked again for the read)."""
    settings = deps.settings
    view = _StateView(State(), State(), "ok", writable)
    if writable:
        lease_s = min(settings.lease_s, deadline.remaining() + LEASE_SLACK_S)
        try:
            deps.store.acquire(deps.owner, now, lease_s)
            view.held = True
        except LeaseBusy as exc:
            view.writable = False
            view.status = f"busy: {exc}; this run is read-only"
        except StateError as exc:
            view.writable = False
            view.status = "error: " + scrub(str(exc), settings.secrets())
    if not view.status.startswith("error"):
        try:
            view.loaded = view.state = deps.store.load()
        except StateError as exc:
            view.writable = False
            view.status = "error: " + scrub(str(exc), settings.secrets())
    if view.writable:
        view.state = deps.journal.apply(view.loaded)
    if view.status.startswith("error"):
        view.notes.append(
            "state unavailable: findings are reported but no alert is sent, "
            "since without state every run would alert again"
        )
    return view


def _outbox(deps: Deps, deadline: Deadline) -> delivery.Outbox:
    return delivery.Outbox(
        publisher=deps.publisher,
        store=deps.store,
        owner=deps.owner,
        retention_s=deps.settings.policy.retention_s,
        deadline=deadline,
        publish_s=deps.publish_s,
        finish_s=deps.store_s,
        journal=deps.journal,
        secrets=deps.settings.secrets(),
    )


def _abandon(deps: Deps) -> None:
    """Give the lease back after a run that did not get to release it (it raised, or its store
    failed): best effort, the lease expires by itself seconds later."""
    # the lease expires by itself anyway; whatever this raises must not hide the run's outcome
    with contextlib.suppress(Exception):
        deps.store.abandon(deps.owner)


def _guard(
    name: str, call: Callable[[], T], statuses: dict[str, str], secrets: tuple[str, ...]
) -> T | None:
    try:
        value = call()
    except Exception as exc:  # noqa: BLE001 - a source must never take the run down
        statuses[name] = "error: " + scrub(f"{type(exc).__name__}: {exc}", secrets)[:500]
        return None
    statuses[name] = "ok"
    return value


def _read_exits(
    source: ExitSource, since: float | None, now: float
) -> tuple[tuple[ExitEvidence, ...], str | None]:
    try:
        read = source.read(since, now)
    except Exception as exc:
        partial = getattr(exc, "partial", None)
        if partial is None:
            raise
        return tuple(partial.evidence), f"{type(exc).__name__}: {exc}"
    return tuple(read.evidence), None


def _observe(deps: Deps, state: State, now: float, *, audit: bool) -> _Observed:
    settings = deps.settings
    secrets = settings.secrets()
    statuses: dict[str, str] = {k: f"off: {v}" for k, v in deps.off.items()}
    stats = {
        "result_keys_scanned": 0,
        "started_tasks": 0,
        "skipped_values": 0,
        "unacked_messages": 0,
        "exit_events": 0,
    }
    expected = sorted(
        name
        for name, r in state.workers.items()
        if r.status in (WorkerStatus.ALIVE, WorkerStatus.BUSY)
    )
    discover = (
        audit
        or not expected
        or state.last_discovery_at is None
        or (now - state.last_discovery_at >= settings.discovery_interval_s)
    )

    # Remote control first: its replies define "alive" for this instant.
    inspected: InspectResult | None = None
    if deps.inspector is not None:
        inspector = deps.inspector
        known = state.workers

        def needs_registered(snap: WorkerSnapshot) -> bool:
            record = known.get(snap.name)
            return record is None or record.pid != snap.pid or not record.limits

        inspected = _guard(
            Source.INSPECT.value,
            lambda: inspector.observe(
                expected, discover=discover, need_registered=needs_registered
            ),
            statuses,
            secrets,
        )
    workers: dict[str, WorkerSnapshot] | None = None
    if inspected is not None:
        workers = dict(inspected.workers)
        # keep what the roster knows of limits when registered() was not asked again
        for name, snap in workers.items():
            record = state.workers.get(name)
            if not snap.registered and record is not None and record.pid == snap.pid:
                workers[name] = replace(snap, registered=record.limits)

    started: tuple[StartedTask, ...] | None = None
    lost: tuple[LostFailure, ...] | None = None
    cursor = state.scan_cursor
    task_status: dict[str, str] = {}
    if deps.results is not None:
        results = deps.results
        scan = _guard(
            Source.RESULTS.value,
            lambda: results.scan(now, budget=settings.scan_budget, cursor=state.scan_cursor),
            statuses,
            secrets,
        )
        if scan is not None:
            started = tuple(scan.started)
            lost = tuple(scan.lost_failures)
            cursor = scan.cursor
            stats["result_keys_scanned"] = int(scan.keys_scanned)
            stats["started_tasks"] = len(started)
            stats["skipped_values"] = int(scan.skipped_values)
            # Tasks the vanished workers reported active last time: did they finish?
            if workers is not None:
                wanted = sorted(
                    task.id
                    for name, record in state.workers.items()
                    if name not in workers
                    for task in record.active
                )
                if wanted:
                    # best effort, on the same backend as the scan: not a source status of its own
                    looked = _guard("lookup", lambda: results.lookup(wanted), {}, secrets)
                    task_status = looked or {}

    # STARTED records of workers that did not answer and the roster does not list: ping them by
    # name once before calling their tasks orphans (they may have missed a limited broadcast).
    if workers is not None and started and deps.inspector is not None:
        inspector = deps.inspector
        strangers = sorted(
            {t.worker for t in started if t.worker} - set(workers) - set(state.workers)
        )[:50]
        if strangers:
            # best effort, on the same broker as inspect: not a source status of its own
            found = _guard("reping", lambda: inspector.ping_direct(strangers), {}, secrets)
            workers.update(found or {})

    unacked: tuple[UnackedMessage, ...] | None = None
    if deps.broker is not None:
        broker = deps.broker
        unacked = _guard(Source.BROKER.value, lambda: broker.unacked(now), statuses, secrets)
        stats["unacked_messages"] = len(unacked or ())

    exits: tuple[ExitEvidence, ...] | None = None
    if deps.exits is not None:
        source = deps.exits
        read = _guard(
            Source.EXITS.value,
            lambda: _read_exits(source, state.last_run_at, now),
            statuses,
            secrets,
        )
        if read is not None:
            evidence, error = read
            exits = evidence
            stats["exit_events"] = len(exits)
            if error:
                # one log group failed: report it, but keep what the healthy groups gave
                statuses[Source.EXITS.value] = "error: " + scrub(error, secrets)[:500]

    observation = Observation(
        at=now,
        workers=workers,
        started=started if deps.results is not None else (),
        lost_failures=lost if deps.results is not None else (),
        unacked=unacked if deps.broker is not None else (),
        exits=exits if deps.exits is not None else (),
        task_status=task_status,
        broker_transport=settings.broker_transport,
        inspected_at=inspected.inspected_at if inspected else None,
        keys_scanned=stats["result_keys_scanned"],
        skipped_values=stats["skipped_values"],
    )
    return _Observed(
        observation=observation,
        statuses=statuses,
        stats=stats,
        discovered=bool(inspected and inspected.discovered),
        scan_cursor=cursor,
    )


def watch(
    deps: Deps,
    *,
    interval: float,
    duration: float,
    on_report: Callable[[Report], None] = lambda _: None,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] | None = None,
    deadline: Deadline | None = None,
    run_timeout_s: float = DEFAULT_RUN_TIMEOUT_S,
) -> list[Report]:
    """Check every ``interval`` seconds until ``duration`` has passed (at least one check).

    This is the sub-minute mode: the Lambda runs it for most of each scheduled minute. Each
    check must be done by ``deadline`` (the invocation's) and within ``run_timeout_s``.
    """
    clock = monotonic or deps.monotonic
    end = clock() + duration
    reports: list[Report] = []
    while True:
        tick = clock()
        limit = (deadline or Deadline(float("inf"), clock)).earliest(run_timeout_s)
        report = run_once(deps, "watch", limit)
        on_report(report)
        reports.append(report)
        next_tick = tick + interval
        if next_tick + 0.5 >= end:
            return reports
        sleep(max(0.0, next_tick - clock()))


def combine(reports: list[Report]) -> Report:
    """One report for a watch: the last run's view, every run's alerts, summed stats."""
    last = reports[-1]
    stats = dict(last.stats)
    stats["runs"] = len(reports)
    stats["alerts_published"] = sum(r.stats.get("alerts_published", 0) for r in reports)
    return replace(
        last,
        duration_ms=sum(r.duration_ms for r in reports),
        checked_at=reports[0].checked_at,
        alerts=tuple(a for r in reports for a in r.alerts),
        stats=stats,
    )
