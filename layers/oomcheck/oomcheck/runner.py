"""One run of oomcheck: observe, evaluate, save, alert, report. Adapters come in through Deps.

Every source is guarded: whatever it raises becomes an error status (``"error: ..."`` in the
report) and a source_unavailable finding, and the run goes on with the others.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from oomcheck.alerting import delivery
from oomcheck.alerting.sns import PrintAlerter
from oomcheck.config.advice import config_risks
from oomcheck.config.settings import Settings
from oomcheck.deadline import DEFAULT_RUN_TIMEOUT_S, Deadline
from oomcheck.detect import evaluate
from oomcheck.entry.arrivals import Arrival, merged
from oomcheck.model import (
    Mode,
    Observation,
    Source,
    SourceState,
    SourceStatus,
    State,
    WorkerRecord,
    WorkerStatus,
)
from oomcheck.observe import observe
from oomcheck.observe.workers import suspects
from oomcheck.ports import Deps
from oomcheck.redact import scrub
from oomcheck.report import usage
from oomcheck.report.document import Report, sqs_worker_rows, worker_rows
from oomcheck.report.events import RunEvents, run_events
from oomcheck.report.history import history_block
from oomcheck.report.schedule import schedule_rows
from oomcheck.silences import held_by, without_unsent_resolved
from oomcheck.store.base import LeaseBusy, StateError

RUNNING = (WorkerStatus.ALIVE, WorkerStatus.BUSY)
# The audit's history window by default: a week.
DEFAULT_HISTORY_S = 7 * 24 * 3600.0


def run_once(
    deps: Deps,
    mode: Mode = Mode.CHECK,
    deadline: Deadline | None = None,
    *,
    arrival: Arrival | None = None,
    since_s: float = DEFAULT_HISTORY_S,
    woken: bool = False,
) -> Report:
    """A check (observe, evaluate, save, alert) or an audit (read-only: no alerts, no writes).

    ``deadline``: when the run must be done (report built, lease released); by default
    DEFAULT_RUN_TIMEOUT_S from now on ``deps.monotonic``. A run that raises still releases its
    lease. ``arrival``: the evidence of the events that started this run, observed besides what
    the sources read (the same ids as when the log group gives them back later). ``since_s``:
    the window of an audit's history by task type. ``woken``: watch mode saw a worker's broker
    subscription close just now (a death, most likely).
    """
    started = time.perf_counter()
    try:  # untyped callers (scripts, a Lambda event) may hand in the mode's string
        mode = Mode(mode)
    except ValueError:
        raise ValueError(f"unknown mode {mode!r}") from None
    settings = deps.settings
    deadline = deadline or Deadline.after(DEFAULT_RUN_TIMEOUT_S, deps.monotonic)
    now = deps.clock()
    view = _open_state(deps, now, deadline, writable=mode is not Mode.AUDIT)
    try:
        # 2. observe; from here on `now` is the reference clock's (the lease keeps the local)
        observed = observe(
            deps,
            view.state,
            now,
            audit=mode is Mode.AUDIT,
            deadline=deadline,
            suspects=suspects(
                view.state,
                woken=woken,
                evidence=arrival.evidence if arrival is not None else (),
                worker_map=settings.policy.worker_map,
            ),
        )
        now = observed.observation.at
        errors = dict(observed.observation.errors)
        if view.status.failed:
            errors[Source.STATE.value] = view.status.detail
        observation = replace(observed.observation, errors=errors)
        if arrival is not None:
            observation = merged(observation, arrival)

        # 3. evaluate (pure)
        new_state, findings = evaluate(view.state, observation, settings.policy, now)
        new_state = replace(
            new_state,
            last_discovery_at=now if observed.discovered else view.state.last_discovery_at,
            scan_cursor=observed.scan_cursor,
            stale_bindings=view.state.stale_bindings
            if observed.stale_bindings is None
            else observed.stale_bindings,
        )
        if mode is Mode.AUDIT:
            findings = [*findings, *config_risks(observation, view.state)]
        # silences, read once: they hold messages, never detection
        held, silence_status = _silences(deps, new_state, now)
        new_state = without_unsent_resolved(new_state, held)

        # 4. save, alert (each sent mark saved as it is sent), release
        committed = None
        if view.writable:
            committed = delivery.commit(_outbox(deps, deadline, held), view.loaded, new_state, now)
            view.held = not committed.released
    finally:
        if view.held:
            _abandon(deps)

    done = committed.delivered if committed else None
    records = done.records if done else []
    stats = dict(observed.stats)
    if arrival is not None:
        stats.update(arrival.counters())
    stats["state_writes"] = done.writes if done else 0
    stats["alerts_published"] = sum(1 for a in records if a.published)
    stats["messages_published"] = done.messages if done else 0
    stats["alerts_undeliverable"] = done.undeliverable if done else 0
    stats.update(_oncall_stats(done, held, new_state))
    statuses: dict[str, SourceStatus] = {
        **observed.statuses,
        Source.STATE.value: committed.status if committed else view.status,
    }
    errors_seen = [a.error for a in records if a.error and not a.published]
    statuses[Source.ALERTS.value] = (
        SourceStatus(SourceState.ERROR, errors_seen[0])
        if errors_seen
        else SourceStatus(SourceState.OK, deps.publisher.describe())
    )
    if silence_status is not None:
        statuses[Source.SILENCES.value] = silence_status
    roster = new_state.workers if view.writable else {**view.state.workers, **new_state.workers}
    history = (
        history_block(
            new_state.task_history,
            new_state.pressure,
            since_s,
            now,
            running={n for n, r in roster.items() if r.status in RUNNING},
        )
        if mode is Mode.AUDIT
        else None
    )
    return Report(
        mode=mode,
        checked_at=now,
        duration_ms=int((time.perf_counter() - started) * 1000),
        workers=sqs_worker_rows(
            observation.started or (),
            findings,
            observed.ecs_tasks,
            now=now,
            worker_map=deps.settings.policy.worker_map,
        )
        if observation.broker_transport == "sqs"
        else worker_rows(observation.workers, roster),
        findings=tuple(findings),
        sources=statuses,
        stats=stats,
        alerts=tuple(records),
        incidents=tuple(sorted(new_state.incidents.values(), key=lambda i: -i.opened_at)),
        notes=(*view.notes, *observed.notes),
        silenced=held,
        events=run_events(view.loaded, done.saved) if done else None,
        history=history,
        **_usage(observation, roster, settings, now),
        # every entry in an audit; in a check only the late ones (a big schedule stays out of
        # every run's log while it is on time)
        schedule=schedule_rows(
            observation.beat, now, settings.policy.beat_grace_s, late_only=mode is not Mode.AUDIT
        )
        if observation.beat is not None
        else None,
    )


def _oncall_stats(
    done: delivery.Delivered | None, held: Mapping[str, str], state: State
) -> dict[str, int]:
    """Alerts a silence held back, and the task events of this run (when a bus is set)."""
    out = {"alerts_held": sum(1 for i in held if (inc := state.incidents.get(i)) and inc.pending)}
    sent = done.task_events if done is not None else None
    if sent is not None:
        out["task_events_sent"] = len(sent.events)
        out["task_events_deferred"] = sent.failed
        out["task_event_calls"] = sent.calls
    return out


def _usage(
    observation: Observation, roster: Mapping[str, WorkerRecord], settings: Settings, now: float
) -> dict[str, Any]:
    """The report's memory and queue blocks (None where the source is off or failed)."""
    live = observation.workers or {}
    return {
        "memory": usage.memory_rows(
            observation.memory, live, roster, settings.policy.worker_map, now
        )
        if observation.memory is not None
        else None,
        "queues": usage.queue_rows(observation.queues, live, roster, now)
        if observation.queues is not None
        else None,
    }


@dataclass
class _StateView:
    state: State  # as loaded, with the sent marks this process could not save applied
    loaded: State  # as the store holds it
    status: SourceStatus
    writable: bool
    held: bool = False  # this run holds the lease and must give it back
    notes: list[str] = field(default_factory=list)


# A lease outlives its run's deadline by this much: a run that died frees the state in seconds.
LEASE_SLACK_S = 5.0


def _open_state(deps: Deps, now: float, deadline: Deadline, *, writable: bool) -> _StateView:
    """1. state: take the lease, then read (a busy lease makes this run read-only; a store that
    failed the lease is not asked again for the read)."""
    settings = deps.settings
    view = _StateView(State(), State(), SourceStatus(SourceState.OK), writable)
    if writable:
        lease_s = min(settings.lease_s, deadline.remaining() + LEASE_SLACK_S)
        try:
            deps.store.acquire(deps.owner, now, lease_s)
            view.held = True
        except LeaseBusy as exc:
            view.writable = False
            view.status = SourceStatus(SourceState.BUSY, f"{exc}; this run is read-only")
        except StateError as exc:
            view.writable = False
            view.status = SourceStatus(SourceState.ERROR, scrub(str(exc), settings.secrets()))
    if not view.status.failed:
        try:
            view.loaded = view.state = deps.store.load()
        except StateError as exc:
            view.writable = False
            view.status = SourceStatus(SourceState.ERROR, scrub(str(exc), settings.secrets()))
    if view.writable:
        view.state = deps.journal.apply(view.loaded)
    if view.status.failed:
        view.notes.append(
            "state unavailable: findings are reported but no alert is sent, "
            "since without state every run would alert again"
        )
    return view


def _silences(deps: Deps, state: State, now: float) -> tuple[dict[str, str], SourceStatus | None]:
    """Incident id -> the silence holding its messages, and how the read went (None: no place
    for silences is configured). A failed read holds nothing: an alert during planned work is
    better than a death nobody hears of."""
    if deps.silences is None:
        return {}, None
    try:
        found = deps.silences.read()
    except Exception as exc:  # noqa: BLE001 - like a source: the run goes on without it
        detail = scrub(f"{type(exc).__name__}: {exc}", deps.settings.secrets())[:300]
        return {}, SourceStatus(SourceState.ERROR, f"{detail}; no alert is held")
    return held_by(state, found, now), SourceStatus(SourceState.OK)


def _outbox(deps: Deps, deadline: Deadline, held: Mapping[str, str]) -> delivery.Outbox:
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
        # the printer alone (no topic, chat topic or bus): what it takes is shown, not published
        printed_only=isinstance(deps.publisher, PrintAlerter),
        runbooks=deps.settings.runbooks,
        held=held,
        task_events=deps.task_events,
        group_wait_s=deps.settings.group_wait_s,
    )


def _abandon(deps: Deps) -> None:
    """Give the lease back after a run that did not get to release it (it raised, or its store
    failed): best effort, the lease expires by itself seconds later."""
    # the lease expires by itself anyway; whatever this raises must not hide the run's outcome
    with contextlib.suppress(Exception):
        deps.store.abandon(deps.owner)


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
    # NaN compares false with everything: it would never reach the end
    if not (math.isfinite(interval) and interval > 0 and math.isfinite(duration)):
        raise ValueError(f"watch needs a finite interval > 0 and duration: {interval}, {duration}")
    clock = monotonic or deps.monotonic
    end = clock() + duration
    reports: list[Report] = []
    woken = False
    while True:
        tick = clock()
        limit = (deadline or Deadline(float("inf"), clock)).earliest(run_timeout_s)
        report = run_once(deps, Mode.WATCH, limit, woken=woken)
        on_report(report)
        reports.append(report)
        next_tick = tick + interval
        if next_tick + 0.5 < end:
            woken = _wait_for_tick(deps, next_tick, clock, sleep)
        elif _wait_for_tick(deps, end - 0.5, clock, sleep, blind=False):
            # the rest of the duration is watched too: a death in a minute's last seconds is
            # checked now, not after the next invocation's first check has waited out its reply
            woken = True
        else:
            return reports


# Between checks, watch mode looks at the broker's pub/sub connections this often: one CLIENT
# LIST (a few ms on the broker for a fleet's connections), so the wait after a death is ~0.1 s.
PRESENCE_POLL_S = 0.2


def _wait_for_tick(
    deps: Deps,
    until: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    *,
    blind: bool = True,
) -> bool:
    """Sleep until ``until``, but come back at once when a worker's long-lived broker
    subscription closes (a death, most likely): its check then runs a fraction of a second
    after the death instead of at the next interval; True then. A broker that cannot say (or
    fails) means a plain sleep, or (``blind`` False: the tail of a watch, which would only be
    billed for nothing) no wait at all."""
    poll = getattr(deps.presence, "subscriptions", None)
    every = getattr(deps.presence, "poll_s", PRESENCE_POLL_S)
    seen = _subscriptions(poll)
    if seen is None and not blind:
        return False
    while (left := until - clock()) > 0:
        sleep(min(every, left) if seen is not None else left)
        if seen is None:
            continue
        now_seen = _subscriptions(poll)
        if now_seen is not None and seen - now_seen:
            return True
        seen = now_seen
    return False


def _subscriptions(poll: Callable[[], frozenset[str] | None] | None) -> frozenset[str] | None:
    if poll is None:
        return None
    try:
        return poll()
    except Exception:  # noqa: BLE001 - the poll is an optimisation; the interval still holds
        return None


def combine(reports: list[Report]) -> Report:
    """One report for a watch: the last run's view, every run's alerts, summed stats."""
    last = reports[-1]
    stats = dict(last.stats)
    stats["runs"] = len(reports)
    stats["alerts_published"] = sum(r.stats.get("alerts_published", 0) for r in reports)
    return replace(
        last,
        events=_summed([r.events for r in reports]),
        duration_ms=sum(r.duration_ms for r in reports),
        checked_at=reports[0].checked_at,
        alerts=tuple(a for r in reports for a in r.alerts),
        stats=stats,
    )


def _summed(events: list[RunEvents | None]) -> RunEvents | None:
    """A watch's events: every check's, added up (each counts what it saved)."""
    saved = [e for e in events if e is not None]
    if not saved:
        return None
    opened: Counter[Any] = Counter()
    victims: Counter[Any] = Counter()
    by_task: Counter[str] = Counter()
    for e in saved:
        opened.update(e.opened)
        victims.update(e.victims)
        by_task.update(e.deaths_by_task)
    names = sorted({n for e in saved for n in e.task_names})
    return RunEvents(dict(opened), dict(victims), tuple(names), dict(by_task))
