"""One run of oomcheck: observe, evaluate, save, alert, report. Adapters come in through Deps.

Every source is guarded: whatever it raises becomes "error: ..." in the report and a
source_unavailable finding, and the run goes on with the others.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

from oomcheck import alerts as alerting
from oomcheck.audit import config_risks
from oomcheck.detect import evaluate
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
from oomcheck.report import AlertRecord, Report, worker_rows
from oomcheck.settings import Settings
from oomcheck.sources.inspector import CeleryInspector, InspectResult
from oomcheck.state import LeaseBusy, LeaseLost, StateError, StateStore

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


@dataclass
class _Observed:
    observation: Observation
    statuses: dict[str, str]
    stats: dict[str, int]
    discovered: bool
    scan_cursor: str | None


def run_once(deps: Deps, mode: str = "check") -> Report:
    """A check (observe, evaluate, save, alert) or an audit (read-only: no alerts, no writes)."""
    started = time.perf_counter()
    settings = deps.settings
    now = deps.clock()
    owner = f"run-{uuid.uuid4().hex[:12]}"
    if mode not in ("check", "watch", "audit"):
        raise ValueError(f"unknown mode {mode!r}")
    writable = mode != "audit"
    state_status = "ok"
    notes: list[str] = []

    # 1. state: take the lease, then read (a busy lease makes this run read-only)
    if writable:
        try:
            deps.store.acquire(owner, now, settings.lease_s)
        except LeaseBusy as exc:
            writable = False
            state_status = f"busy: {exc}; this run is read-only"
        except StateError as exc:
            writable = False
            state_status = "error: " + scrub(str(exc), settings.secrets())
    state = State()
    try:
        state = deps.store.load()
    except StateError as exc:
        writable = False
        state_status = "error: " + scrub(str(exc), settings.secrets())
    if state_status.startswith("error"):
        notes.append(
            "state unavailable: findings are reported but no alert is sent, "
            "since without state every run would alert again"
        )

    # 2. observe
    observed = _observe(deps, state, now, audit=mode == "audit")
    errors = {k: v[len("error: ") :] for k, v in observed.statuses.items() if v.startswith("error")}
    if state_status.startswith("error"):
        errors[Source.STATE.value] = state_status[len("error: ") :]
    observation = replace(observed.observation, errors=errors)

    # 3. evaluate (pure)
    new_state, findings = evaluate(state, observation, settings.policy, now)
    new_state = replace(
        new_state,
        last_discovery_at=now if observed.discovered else state.last_discovery_at,
        scan_cursor=observed.scan_cursor,
    )
    if mode == "audit":
        findings = [*findings, *config_risks(observation, state)]

    # 4. save, 5. alert, save again, release
    alert_records: list[AlertRecord] = []
    stats = dict(observed.stats)
    stats["state_writes"] = 0
    if writable:
        try:
            saved = deps.store.save(owner, state, new_state, settings.policy.retention_s)
            stats["state_writes"] += saved.writes
            after, alert_records = _deliver(deps, new_state, now)
            saved = deps.store.save(owner, new_state, after, settings.policy.retention_s)
            stats["state_writes"] += saved.writes
            deps.store.release(owner, after)
            stats["state_writes"] += 1
        except LeaseLost as exc:
            state_status = f"lost lease: {exc}; alerts of this run were not marked sent"
        except StateError as exc:
            state_status = "error: " + scrub(str(exc), settings.secrets())
    stats["alerts_published"] = sum(1 for a in alert_records if a.published)

    statuses = {**observed.statuses, Source.STATE.value: state_status}
    statuses[Source.ALERTS.value] = (
        "error: " + next(a.error for a in alert_records if a.error)
        if any(a.error for a in alert_records)
        else deps.publisher.describe()
    )
    roster = new_state.workers if writable else {**state.workers, **new_state.workers}
    return Report(
        mode=mode,
        checked_at=now,
        duration_ms=int((time.perf_counter() - started) * 1000),
        workers=worker_rows(observation.workers, roster),
        findings=tuple(findings),
        sources=statuses,
        stats=stats,
        alerts=tuple(alert_records),
        incidents=tuple(sorted(new_state.incidents.values(), key=lambda i: -i.opened_at)),
        notes=tuple(notes),
    )


def _deliver(deps: Deps, state: State, now: float) -> tuple[State, list[AlertRecord]]:
    """Publish every pending alert in order; an incident whose alert fails keeps it (and the ones
    behind it) for the next run."""
    records: list[AlertRecord] = []
    for _ in range(3):  # an open, then a resolve queued behind it in the same run
        due = alerting.due(state)
        if not due:
            break
        progressed = False
        for incident, action in due:
            message = alerting.render(incident, action, now)
            try:
                deps.publisher.publish(message)
            except Exception as exc:  # noqa: BLE001 - any failure leaves the alert pending
                error = scrub(f"{type(exc).__name__}: {exc}", deps.settings.secrets())
                state = alerting.mark_failed(state, incident.id, action, error)
                records.append(
                    AlertRecord(
                        incident.id,
                        incident.kind.value,
                        action.value,
                        message.subject,
                        False,
                        error,
                    )
                )
                continue
            state = alerting.mark_sent(state, incident.id, action, now)
            records.append(
                AlertRecord(incident.id, incident.kind.value, action.value, message.subject, True)
            )
            progressed = True
        if not progressed:
            break
    return state, records


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
    monotonic: Callable[[], float] = time.monotonic,
) -> list[Report]:
    """Check every ``interval`` seconds until ``duration`` has passed (at least one check).

    This is the sub-minute mode: the Lambda runs it for most of each scheduled minute.
    """
    deadline = monotonic() + duration
    reports: list[Report] = []
    while True:
        tick = monotonic()
        report = run_once(deps, "watch")
        on_report(report)
        reports.append(report)
        next_tick = tick + interval
        if next_tick + 0.5 >= deadline:
            return reports
        sleep(max(0.0, next_tick - monotonic()))


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
