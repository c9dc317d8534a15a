"""Whole workers: lost, departed, busy, restarted, returned, and late evidence of a death.

Each roster transition is judged on its own; the fleet-size resolution of a lost worker's
incident is judged last, against the complete new roster.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from oomcheck.detect import keys, roster, text
from oomcheck.detect.carried import Carried
from oomcheck.detect.context import ALIVE, QUIET_POOLS, Context
from oomcheck.detect.fates import cause_from, fates, rejudge_all, tasks_of_dead_instance
from oomcheck.detect.roster import Change, Transition, record_from, refreshed, with_status
from oomcheck.detect.rules import beat, memory, stalls
from oomcheck.detect.signals import Carry, KillSeen, Outcome, Resolution, Signal
from oomcheck.model import (
    ActiveTask,
    Cause,
    Finding,
    IncidentKey,
    Kill,
    Kind,
    Severity,
    TaskFate,
    WorkerRecord,
    WorkerStatus,
)

KINDS = frozenset({Kind.WORKER_LOST, Kind.WORKER_RESTARTED, Kind.WORKER_DEPARTED})


@dataclass
class _Step:
    record: WorkerRecord | None = None
    signals: list[Signal] = field(default_factory=list)
    resolutions: list[Resolution] = field(default_factory=list)
    kills: list[KillSeen] = field(default_factory=list)
    used: set[str] = field(default_factory=set)


def gone(key: IncidentKey) -> str:
    """A lost worker's incident is closed by its transition (back, restarted, replaced); one no
    transition names belongs to an incarnation the roster no longer holds."""
    return "the roster no longer holds this worker incarnation"


def judge(ctx: Context, carried: Carried) -> Outcome:
    """One step per roster transition (computed from the previous state and the replies)."""
    if not ctx.inspect_ok:
        return Outcome(KINDS, judged=False)
    steps: list[_Step] = []
    still_lost: list[Transition] = []
    for t in roster.transitions(ctx):
        if t.change == Change.STILL_LOST:
            still_lost.append(t)
        else:
            steps.append(_HANDLERS[t.change](ctx, t))
    records = {s.record.name: s.record for s in steps if s.record is not None}
    alive_now = sum(1 for r in {**ctx.state.workers, **records}.values() if r.status in ALIVE)
    steps += [_still_lost(ctx, t, alive_now, records) for t in still_lost]
    return Outcome(
        KINDS,
        signals=tuple(s for step in steps for s in step.signals),
        resolutions=tuple(r for step in steps for r in step.resolutions),
        gone=gone,
        carry=Carry(
            workers=records,
            kills=tuple(k for step in steps for k in step.kills),
            events=frozenset(e for step in steps for e in step.used),
        ),
    )


# ------------------------------------------------------------------------ answering workers


def _new(ctx: Context, t: Transition) -> _Step:
    return _Step(record=record_from(ctx, t.answer, first_seen=ctx.now))


def _alive(ctx: Context, t: Transition) -> _Step:
    return _Step(record=refreshed(ctx, t.record, t.answer))


def _returned(ctx: Context, t: Transition) -> _Step:
    """A worker we had given up on answers with the same pid and boot time: it was unreachable
    or stuck, not dead."""
    record, snap = t.record, t.answer
    step = _Step(record=with_status(ctx, refreshed(ctx, record, snap), WorkerStatus.ALIVE))
    incident = ctx.open_incident(keys.lost(record.name, record.boot_at))
    if incident is not None:
        step.resolutions.append(
            Resolution(
                incident.key,
                f"{record.name} answers again with the same pid {snap.pid}: it was "
                "unresponsive, not dead",
                replace(
                    incident.finding, tasks=rejudge_all(ctx, incident.finding.tasks, record.name)
                ),
            )
        )
    return step


def _restarted(ctx: Context, t: Transition) -> _Step:
    """Same nodename, new process: Kubernetes restarted an OOMKilled container in place, a
    supervisor restarted a killed worker, or a deploy restarted it cleanly."""
    record, snap = t.record, t.answer
    boot_at = ctx.boot_at(snap)
    step = _Step(record=record_from(ctx, snap, first_seen=record.first_seen))
    orphans = tasks_of_dead_instance(ctx, record, (boot_at, ctx.processes(snap)))
    exits = ctx.exits_for(record.name)
    step.used.update(e.event_id for e in exits)
    dead = fates(ctx, orphans, record)
    cause, exit_code, lines = cause_from(exits)
    step.kills += _kills(ctx, dead, record, "worker restarted", cause)
    incident = ctx.open_incident(keys.lost(record.name, record.boot_at))
    if incident is not None:
        step.resolutions.append(
            Resolution(
                incident.key,
                f"{record.name} is back: it restarted (pid {snap.pid}, up {snap.uptime_s:.0f} s)",
                replace(
                    incident.finding, tasks=rejudge_all(ctx, incident.finding.tasks, record.name)
                ),
            )
        )
        return step
    if record.status not in ALIVE:
        return step  # its departure or death was already reported
    abnormal = bool(dead) or any(not e.clean for e in exits)
    if not abnormal:
        cause = Cause.UNKNOWN
    fate_text = text.fates_text(dead)
    step.signals.append(
        Signal(
            Finding(
                kind=Kind.WORKER_RESTARTED,
                severity=Severity.WARNING if abnormal else Severity.INFO,
                worker=record.name,
                cause=cause,
                exit_code=exit_code,
                evidence=(
                    f"inspect: pid {record.pid} -> {snap.pid}, uptime {snap.uptime_s:.0f} s",
                    *lines,
                ),
                tasks=dead,
                summary=f"{record.name} restarted{text.cause_phrase(cause, exit_code)}"
                + (f"; {fate_text}" if fate_text else ""),
                advice=text.death_advice(cause, dead, ctx.policy.visibility_timeout_s)
                if abnormal
                else (),
                key=keys.worker_key(Kind.WORKER_RESTARTED, record.name, boot_at),
            )
        )
    )
    return step


# ------------------------------------------------------------------------ silent workers


def _missing(ctx: Context, t: Transition) -> _Step:
    """A worker that answered before answered neither the broadcast nor the direct re-ping."""
    record = t.record
    orphans = tasks_of_dead_instance(ctx, record, None)
    exits = ctx.exits_for(record.name)
    abnormal_exit = any(not e.clean for e in exits)
    presence = (ctx.obs.presence or {}).get(record.name)
    if presence is not None and presence.present and not abnormal_exit:
        return _connected(ctx, record, orphans, presence.evidence)
    broker_gone = presence is not None and presence.present is False
    quiet = record.pool in QUIET_POOLS and not abnormal_exit and not broker_gone
    if quiet and _within_limit(ctx, orphans, record) is not None:
        return _Step(record=with_status(ctx, record, WorkerStatus.BUSY))
    dead = fates(ctx, orphans, record)
    step = _Step()
    step.used.update(e.event_id for e in exits)
    cause, exit_code, lines = cause_from(exits)
    if presence is not None:
        lines = (*lines, presence.evidence)
    lines = (*lines, *_memory_before(ctx, record))
    # its broker connections gone without the clean close a shutdown makes: killed, even idle
    killed_idle = presence is not None and broker_gone and presence.closed_cleanly is False
    if not dead and not abnormal_exit and not killed_idle:
        step.record = with_status(ctx, record, WorkerStatus.DEPARTED, active=())
        step.signals.append(_departed(record, lines))
        return step
    if record.pool in QUIET_POOLS and not abnormal_exit and not broker_gone:
        lines = (*lines, f"inspect: {record.pool} pool silent past the limit of its task")
    step.kills += _kills(ctx, dead, record, "worker lost", cause)
    step.record = with_status(ctx, record, WorkerStatus.LOST)
    evidence = (
        f"inspect: no reply to broadcast or direct ping (last pid {record.pid})",
        *lines,
        *(f"results: STARTED {f.id} on pid {f.worker_pid}" for f in dead if f.state == "STARTED"),
    )
    step.signals.append(
        Signal(
            _lost_finding(ctx, record, cause, exit_code, evidence, dead),
            fleet_size=ctx.alive_before(),
        )
    )
    return step


def _memory_before(ctx: Context, record: WorkerRecord) -> tuple[str, ...]:
    """A worker that dies under memory pressure: what its memory did and which tasks were
    growing in it (they are the likely cause)."""
    points = ctx.state.pressure.get(record.name)
    if not points:
        return ()
    growing = ", ".join(f"{t.name or 'task'} {t.id}" for t in record.active[:3]) or "no task"
    return (
        f"memory: before it died, {memory.describe(points, points[-1].basis)}; "
        f"growing in it: {growing}",
    )


def _connected(ctx: Context, record: WorkerRecord, tasks: list[ActiveTask], evidence: str) -> _Step:
    """Silent but still connected to the broker: busy (a blocked pool) or frozen, not dead; its
    status says so (``busy``), no finding does. Tasks past their limit make it a hung worker:
    task_stalled, not a death."""
    hung = list(stalls.hung(ctx, record, tasks, evidence))
    return _Step(record=with_status(ctx, record, WorkerStatus.BUSY), signals=hung)


def _departed(record: WorkerRecord, lines: tuple[str, ...]) -> Signal:
    return Signal(
        Finding(
            kind=Kind.WORKER_DEPARTED,
            severity=Severity.INFO,
            worker=record.name,
            evidence=("inspect: no reply to broadcast or direct ping; no task was running", *lines),
            summary=f"{record.name} left with no task running (clean exit or scale-in)",
            key=keys.worker_key(Kind.WORKER_DEPARTED, record.name, record.boot_at),
        )
    )


def _still_departed(ctx: Context, t: Transition) -> _Step:
    """CloudWatch evidence lags: a worker judged departed (no task running) whose container is
    then reported OOM-killed or killed is a death after all."""
    record = t.record
    exits = [e for e in ctx.exits_for(record.name) if not e.clean]
    step = _Step(record=record)
    if not exits or record.changed_at < ctx.now - ctx.policy.failure_lookback_s:
        return step
    step.used.update(e.event_id for e in exits)
    cause, exit_code, lines = cause_from(exits)
    step.record = with_status(ctx, record, WorkerStatus.LOST)
    finding = _lost_finding(
        ctx,
        record,
        cause,
        exit_code,
        ("inspect: no reply since it left (no task was running)", *lines),
        (),
    )
    step.signals.append(Signal(replace(finding, summary=finding.summary + " while idle")))
    return step


def _still_lost(
    ctx: Context, t: Transition, alive_now: int, records: dict[str, WorkerRecord]
) -> _Step:
    """A lost worker still silent: its incident stays open with re-judged task fates and any
    late evidence of the cause, until the fleet is back to its size before the death."""
    record = t.record
    step = _Step(record=record)
    incident = ctx.open_incident(keys.lost(record.name, record.boot_at))
    if incident is None:
        return step
    tasks = rejudge_all(ctx, incident.finding.tasks, record.name)
    finding = replace(incident.finding, tasks=tasks)
    late = [e for e in ctx.exits_for(record.name) if not e.clean]
    if late:
        step.used.update(e.event_id for e in late)
        cause, exit_code, lines = cause_from(late)
        evidence = (*finding.evidence, *(x for x in lines if x not in finding.evidence))
        finding = _lost_finding(ctx, record, cause, exit_code, evidence, tasks)
    if incident.fleet_size is not None and alive_now >= incident.fleet_size > 0:
        newcomers = sorted(
            n
            for n, r in records.items()
            if r.status == WorkerStatus.ALIVE and r.first_seen > incident.opened_at
        )
        by = f" (replaced by {', '.join(newcomers[:3])})" if newcomers else ""
        why = f"{record.name} did not come back, but the fleet is back to {alive_now} worker(s){by}"
        step.resolutions.append(Resolution(incident.key, why, finding))
        return step
    step.signals.append(Signal(finding, fleet_size=incident.fleet_size))
    return step


# ------------------------------------------------------------------------ helpers


def _lost_finding(  # noqa: PLR0917 - a death is these facts
    ctx: Context,
    record: WorkerRecord,
    cause: Cause,
    exit_code: int | None,
    evidence: tuple[str, ...],
    dead: tuple[TaskFate, ...],
) -> Finding:
    fate_text = text.fates_text(dead)
    return Finding(
        kind=Kind.WORKER_LOST,
        severity=Severity.CRITICAL,
        worker=record.name,
        cause=cause,
        exit_code=exit_code,
        evidence=beat.with_periodic(ctx, evidence, dead),
        tasks=dead,
        summary=f"{record.name} died{text.cause_phrase(cause, exit_code)}"
        + (f"; {fate_text}" if fate_text else ""),
        advice=text.death_advice(cause, dead, ctx.policy.visibility_timeout_s),
        key=keys.lost(record.name, record.boot_at),
    )


def _within_limit(ctx: Context, tasks: list[ActiveTask], record: WorkerRecord) -> str | None:
    """The id of a task the silent quiet-pool worker may still be running within its limit."""
    for task in tasks:
        limit = ctx.limit(task.name, record.limits) or ctx.policy.busy_limit_s
        started = task.time_start
        if started is None or ctx.now - started <= limit + ctx.policy.stall_grace_s:
            return task.id
    return None


def _kills(
    ctx: Context, dead: Iterable[TaskFate], record: WorkerRecord, how: str, cause: Cause
) -> list[KillSeen]:
    return [
        KillSeen(f.id, f.name, Kill(record.name, f.worker_pid or record.pid, ctx.now, how, cause))
        for f in dead
    ]


_HANDLERS: dict[Change, Callable[[Context, Transition], _Step]] = {
    Change.NEW: _new,
    Change.ALIVE: _alive,
    Change.RETURNED: _returned,
    Change.RESTARTED: _restarted,
    Change.MISSING: _missing,
    Change.STILL_DEPARTED: _still_departed,
}
