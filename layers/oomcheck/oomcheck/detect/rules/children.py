"""Pool children killed under a live worker.

Four ways a child's death shows: (a) a WorkerLostError failure record; (b) a task remembered on
pool pid P now runs on another pid of the same worker and P left the pool (reject_on_worker_lost
requeued it); (c) a STARTED record whose pid is neither in the pool nor in active(); (d) a kernel
OOM line naming a pid that was in the pool. Deaths are gathered first (and their kills counted);
the findings are built once the kill counts are known, since a task in a kill loop is reported
as poison_task rather than again and again as a child death. Only the kill-loop task is left to
poison: another child killed on the same worker in the same run (an idle one, or one under a task
that is not looping) still gets its child_killed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from oomcheck.detect import keys, text
from oomcheck.detect.carried import Carried, merge_kills
from oomcheck.detect.context import Context, Place
from oomcheck.detect.fates import cause_from, fate_of, unique
from oomcheck.detect.rules import beat
from oomcheck.detect.signals import Carry, KillSeen, Outcome, Signal
from oomcheck.model import (
    ActiveTask,
    Cause,
    Finding,
    Kill,
    KillRecord,
    Kind,
    LostFailure,
    Severity,
    TaskFate,
    Verdict,
)

KINDS = frozenset({Kind.CHILD_KILLED})


@dataclass(frozen=True, slots=True)
class ChildDeath:
    worker: str  # "" when no worker is known
    fate: TaskFate | None  # None: the child was idle
    line: str
    event_id: str | None = None
    cause: Cause = Cause.UNKNOWN  # as parsed from its evidence


@dataclass(frozen=True, slots=True)
class Gathered:
    deaths: tuple[ChildDeath, ...]
    kills: tuple[KillSeen, ...]
    failures: dict[str, float]
    info: tuple[Signal, ...]
    used_events: frozenset[str]


def _gather(ctx: Context) -> Gathered:
    deaths: list[ChildDeath] = []
    kills: list[KillSeen] = []
    failures: dict[str, float] = {}
    info: list[Signal] = []
    for failure in ctx.obs.lost_failures or ():
        written = failure.written_at if failure.written_at is not None else ctx.now
        seen = ctx.state.processed_failures.get(failure.id)
        if seen is not None and abs(seen - written) < 2.0:
            continue
        failures[failure.id] = written
        death, kill = _from_failure(ctx, failure, written)
        if kill is None:
            info.append(_old_failure(death, failure))
        else:
            deaths.append(death)
            kills.append(kill)
    if ctx.inspect_ok:
        for death, kill in (*_moved(ctx), *_stale_started(ctx), *_kernel_lines(ctx)):
            deaths.append(death)
            if kill is not None:
                kills.append(kill)
    used = frozenset(d.event_id for d in deaths if d.event_id)
    return Gathered(tuple(deaths), tuple(kills), failures, tuple(info), used)


def judge(ctx: Context, carried: Carried) -> Outcome:
    """One child_killed per worker, naming its tasks; tasks in a kill loop (counting this run's
    kills, the workers family's among them) are left to poison."""
    gathered = _gather(ctx)
    kills = merge_kills(carried.kills, gathered.kills)
    by_worker: dict[str, list[ChildDeath]] = {}
    for death in gathered.deaths:
        if death.fate is None or not in_kill_loop(ctx, death.fate.id, kills):
            by_worker.setdefault(death.worker, []).append(death)
    signals = list(gathered.info)
    for worker, deaths in sorted(by_worker.items()):
        fates = unique(d.fate for d in deaths if d.fate is not None)
        signals.append(Signal(_finding(ctx, worker, deaths, fates)))
    return Outcome(
        KINDS,
        signals=tuple(signals),
        carry=Carry(kills=gathered.kills, events=gathered.used_events, failures=gathered.failures),
    )


def in_kill_loop(ctx: Context, task_id: str, kills: Mapping[str, KillRecord]) -> bool:
    if ctx.open_incident(keys.task_key(Kind.POISON_TASK, task_id)) is not None:
        return True
    record = kills.get(task_id)
    if record is None:
        return False
    window_start = ctx.now - ctx.policy.poison_window_s
    return sum(1 for k in record.kills if k.at >= window_start) >= ctx.policy.poison_kills


# ------------------------------------------------------------------------ the four signs


def _from_failure(
    ctx: Context, failure: LostFailure, written: float
) -> tuple[ChildDeath, KillSeen | None]:
    place = _last_place(ctx, failure.id)
    worker = failure.worker or (place.worker if place else None)
    pid = place.pid if place else None
    how = f"WorkerLostError: {failure.message}"[:160]
    fate = TaskFate(
        id=failure.id,
        name=failure.name or _task_name(ctx, failure.id),
        state="FAILURE",
        started_at=None,
        verdict=Verdict.REDELIVERED if failure.id in ctx.running_now else Verdict.LOST,
        worker_pid=pid,
    )
    death = ChildDeath(worker or "", fate, f"results: {how}", cause=failure.cause)
    recent = (
        ctx.state.last_run_at is not None and ctx.now - written <= ctx.policy.failure_lookback_s
    )
    if not recent:
        return death, None
    return death, KillSeen(failure.id, fate.name, Kill(worker, pid, written, how, failure.cause))


def _old_failure(death: ChildDeath, failure: LostFailure) -> Signal:
    return Signal(
        Finding(
            kind=Kind.CHILD_KILLED,
            severity=Severity.INFO,
            worker=death.worker or None,
            cause=failure.cause,
            evidence=(death.line,),
            tasks=(death.fate,) if death.fate else (),
            summary=f"an older WorkerLostError (before oomcheck watched): {failure.id}",
            key=keys.old_failure(failure.id),
        )
    )


Found = tuple[ChildDeath, KillSeen | None]


def _same_incarnations(ctx: Context) -> Iterator[tuple[str, frozenset[int]]]:
    for name, snap in sorted(ctx.live.items()):
        record = ctx.state.workers.get(name)
        if record is not None and not ctx.is_new_incarnation(record, snap):
            yield name, ctx.processes(snap)


def _moved(ctx: Context) -> Iterator[Found]:
    """(b) requeued by reject_on_worker_lost onto another child of the same worker."""
    for name, processes in _same_incarnations(ctx):
        for task in ctx.state.workers[name].active:
            if task.worker_pid is None or task.worker_pid in processes:
                continue
            now_at = ctx.running_now.get(task.id)
            if now_at is None or now_at.pid == task.worker_pid:
                continue
            if _already_killed(ctx, task.id, name, task.worker_pid):
                continue
            how = f"pool child {task.worker_pid} gone; task now on {now_at.worker} pid {now_at.pid}"
            fate = TaskFate(
                id=task.id,
                name=task.name,
                state="STARTED",
                started_at=task.time_start,
                verdict=Verdict.REDELIVERED,
                worker_pid=task.worker_pid,
            )
            kill = KillSeen(task.id, task.name, Kill(name, task.worker_pid, ctx.now, how))
            yield ChildDeath(name, fate, f"inspect: {how}"), kill


def _stale_started(ctx: Context) -> Iterator[Found]:
    """(c) STARTED by a pid that is not in the live worker's pool and not in its active()."""
    inspected = ctx.obs.inspected_at if ctx.obs.inspected_at is not None else ctx.obs.at
    for name, snap in sorted(ctx.live.items()):
        record = ctx.state.workers.get(name)
        if snap.active is None or (record is not None and ctx.is_new_incarnation(record, snap)):
            continue  # a restarted worker's old tasks are the workers rule's (worker_restarted)
        processes = ctx.processes(snap)
        active_ids = {t.id for t in snap.active}
        boot_at = ctx.boot_at(snap)
        for orphan in ctx.started_by_worker.get(name, ()):
            if orphan.pid in processes or orphan.id in active_ids:
                continue
            if orphan.written_at is None or orphan.written_at > inspected - ctx.policy.pid_grace_s:
                continue  # a child may have forked between stats() and the scan
            if orphan.id in ctx.lost_failure_ids or _already_killed(
                ctx, orphan.id, name, orphan.pid
            ):
                continue
            how = (
                f"STARTED by pid {orphan.pid} of an earlier run of this worker"
                if orphan.written_at < boot_at
                else f"STARTED by pid {orphan.pid}, which is no longer in the pool"
            )
            task = ActiveTask(
                id=orphan.id, name=orphan.name, worker_pid=orphan.pid, time_start=orphan.written_at
            )
            fate = fate_of(ctx, task, record.limits if record else None, Place(name, orphan.pid))
            kill = KillSeen(orphan.id, orphan.name, Kill(name, orphan.pid, ctx.now, how))
            yield ChildDeath(name, fate, f"results: {how}"), kill


def _kernel_lines(ctx: Context) -> Iterator[Found]:
    """(d) kill evidence naming a pid that was in a live worker's pool and is gone from it; the
    child may have been idle (then there is no task, but the kill is still news)."""
    for name, processes in _same_incarnations(ctx):
        record = ctx.state.workers[name]
        for evidence in ctx.exits_for(name):
            pid = evidence.pid
            if evidence.clean or pid is None or pid == record.pid or pid in processes:
                continue  # a pid still alive: the line is about another process
            line = f"{evidence.source}: {evidence.text}"
            ran = [t for t in record.active if t.worker_pid == pid]
            if not ran:
                yield ChildDeath(name, None, line, evidence.event_id, evidence.cause), None
            for task in ran:
                fate = fate_of(ctx, task, record.limits, Place(name, pid))
                kill = KillSeen(task.id, task.name, Kill(name, pid, ctx.now, line, evidence.cause))
                yield ChildDeath(name, fate, line, evidence.event_id, evidence.cause), kill


# ------------------------------------------------------------------------ the finding


def _finding(
    ctx: Context, worker: str, deaths: list[ChildDeath], fates: tuple[TaskFate, ...]
) -> Finding:
    lines = tuple(dict.fromkeys(d.line for d in deaths))
    event_ids = {d.event_id for d in deaths if d.event_id}
    pids = {f.worker_pid for f in fates}
    exits = [
        e
        for e in ctx.exits_for(worker)
        if e.pid is not None and (e.pid in pids or e.event_id in event_ids)
    ]
    cause, exit_code, ev_lines = cause_from(exits)
    if cause == Cause.UNKNOWN:
        cause = next((d.cause for d in deaths if d.cause != Cause.UNKNOWN), Cause.UNKNOWN)
    under = (
        " under " + ", ".join(f"{f.name or 'task'} {f.id}" for f in fates)
        if fates
        else " while idle"
    )
    name = worker or None
    return Finding(
        kind=Kind.CHILD_KILLED,
        severity=Severity.WARNING,
        worker=name,
        cause=cause,
        exit_code=exit_code,
        evidence=beat.with_periodic(ctx, tuple(dict.fromkeys((*lines, *ev_lines))), fates),
        tasks=fates,
        summary=f"a pool process of {name or 'an unknown worker'} was killed"
        f"{text.cause_phrase(cause, exit_code)}{under}",
        advice=text.death_advice(cause, fates, ctx.policy.visibility_timeout_s),
        key=keys.child(worker, [f.id for f in fates], sorted(event_ids) or [f"{ctx.now:.0f}"]),
    )


def _last_place(ctx: Context, task_id: str) -> Place | None:
    started = ctx.started_by_id.get(task_id)
    if started and started.worker:
        return Place(started.worker, started.pid)
    for record in ctx.state.workers.values():
        for task in record.active:
            if task.id == task_id:
                return Place(record.name, task.worker_pid)
    return None


def _task_name(ctx: Context, task_id: str) -> str | None:
    for record in ctx.state.workers.values():
        for task in record.active:
            if task.id == task_id:
                return task.name
    known = ctx.state.kills.get(task_id)
    return known.name if known else None


def _already_killed(ctx: Context, task_id: str, worker: str, pid: int | None) -> bool:
    record = ctx.state.kills.get(task_id)
    return record is not None and any(k.worker == worker and k.pid == pid for k in record.kills)
