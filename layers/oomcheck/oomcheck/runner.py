"""One run of oomcheck: observe, evaluate, save, alert, report. Adapters come in through Deps.

Every source is guarded: whatever it raises becomes "error: ..." in the report and a
source_unavailable finding, and the run goes on with the others.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from oomcheck import alerts as alerting
from oomcheck.audit import config_risks
from oomcheck.detect import evaluate
from oomcheck.model import Source, SourceState, SourceStatus, State, UnackedMessage
from oomcheck.observe import ReferenceClock, observe
from oomcheck.redact import scrub
from oomcheck.report import AlertRecord, Report, source_texts, worker_rows
from oomcheck.settings import Settings
from oomcheck.sources.inspector import CeleryInspector
from oomcheck.state import LeaseBusy, LeaseLost, StateError, StateStore


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
    # the workers' side of the clock (the broker's Redis TIME); None: the local clock is used
    reference_clock: ReferenceClock | None = None


def run_once(deps: Deps, mode: str = "check") -> Report:
    """A check (observe, evaluate, save, alert) or an audit (read-only: no alerts, no writes)."""
    started = time.perf_counter()
    settings = deps.settings
    now = deps.clock()
    owner = f"run-{uuid.uuid4().hex[:12]}"
    if mode not in ("check", "watch", "audit"):
        raise ValueError(f"unknown mode {mode!r}")
    writable = mode != "audit"
    state_status = SourceStatus(SourceState.OK)
    notes: list[str] = []

    # 1. state: take the lease, then read (a busy lease makes this run read-only)
    if writable:
        try:
            deps.store.acquire(owner, now, settings.lease_s)
        except LeaseBusy as exc:
            writable = False
            state_status = SourceStatus(SourceState.BUSY, f"{exc}; this run is read-only")
        except StateError as exc:
            writable = False
            state_status = SourceStatus(SourceState.ERROR, scrub(str(exc), settings.secrets()))
    state = State()
    try:
        state = deps.store.load()
    except StateError as exc:
        writable = False
        state_status = SourceStatus(SourceState.ERROR, scrub(str(exc), settings.secrets()))
    if state_status.failed:
        notes.append(
            "state unavailable: findings are reported but no alert is sent, "
            "since without state every run would alert again"
        )

    # 2. observe; from here on `now` is the reference clock's (the lease alone keeps the local)
    observed = observe(deps, state, now, audit=mode == "audit")
    now = observed.observation.at
    notes.extend(observed.notes)
    errors = dict(observed.observation.errors)
    if state_status.failed:
        errors[Source.STATE.value] = state_status.detail
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
            state_status = SourceStatus(
                SourceState.LOST, f"{exc}; alerts of this run were not marked sent"
            )
        except StateError as exc:
            state_status = SourceStatus(SourceState.ERROR, scrub(str(exc), settings.secrets()))
    stats["alerts_published"] = sum(1 for a in alert_records if a.published)

    statuses: dict[str, SourceStatus | str] = {
        **observed.statuses,
        Source.STATE.value: state_status,
    }
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
        sources=source_texts(statuses),
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
    # NaN compares false with everything: it would never reach the deadline
    if not (math.isfinite(interval) and interval > 0 and math.isfinite(duration)):
        raise ValueError(f"watch needs a finite interval > 0 and duration: {interval}, {duration}")
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
