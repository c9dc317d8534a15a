"""Tasks running past their limit on a live worker (task_stalled), and their end."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from oomcheck.detect import keys, text
from oomcheck.detect.context import Context
from oomcheck.detect.signals import Outcome, Resolution, Signal
from oomcheck.model import (
    ActiveTask,
    Cause,
    Finding,
    Kind,
    Severity,
    TaskFate,
    Verdict,
    WorkerRecord,
    WorkerSnapshot,
    WorkerStatus,
)

KINDS = frozenset({Kind.TASK_STALLED})

# task id -> (name, started at, pid)
_Running = dict[str, tuple[str | None, float | None, int | None]]


def judge(ctx: Context, roster: Mapping[str, WorkerRecord]) -> Outcome:
    """``roster`` is the roster after this run (to tell a worker that died from one that is
    only too busy to answer)."""
    if not ctx.inspect_ok:
        return Outcome(KINDS, judged=False)
    running: set[str] = set()
    signals: list[Signal] = []
    for _, snap in sorted(ctx.live.items()):
        tasks = _running(ctx, snap)
        running.update(tasks)
        signals.extend(_stalled(ctx, snap, tasks))
    seen = {s.key for s in signals}
    resolutions = []
    for key, incident in ctx.open_by_key.items():
        if key.kind == Kind.TASK_STALLED and key not in seen and key.subject not in running:
            why = _over(ctx, incident.finding.worker or "", roster)
            if why is not None:
                resolutions.append(Resolution(key, why))
    return Outcome(KINDS, signals=tuple(signals), resolutions=tuple(resolutions))


def _over(ctx: Context, worker: str, roster: Mapping[str, WorkerRecord]) -> str | None:
    """Why a stalled task no longer seen is over, or None when this run cannot tell: its worker
    answered without it in active(), or its worker is gone (the death is its own incident). A
    worker that answered stats but not active(), or that is only busy, shows nothing."""
    snap = ctx.live.get(worker)
    if snap is not None:
        return text.gone_text(Kind.TASK_STALLED) if snap.active is not None else None
    record = roster.get(worker)
    if record is None or record.status in (WorkerStatus.LOST, WorkerStatus.DEPARTED):
        return f"its worker {worker} is gone"
    return None


def _running(ctx: Context, snap: WorkerSnapshot) -> _Running:
    tasks: _Running = {}
    for task in snap.active or ():
        tasks[task.id] = (task.name, task.time_start, task.worker_pid)
    processes = ctx.processes(snap)
    for started in ctx.started_by_worker.get(snap.name, ()):
        if started.pid in processes and started.id not in tasks:
            tasks[started.id] = (started.name, started.written_at, started.pid)
    return tasks


def _stalled(ctx: Context, snap: WorkerSnapshot, tasks: _Running) -> Iterator[Signal]:
    record = ctx.state.workers.get(snap.name)
    limits = snap.registered or (record.limits if record else {})
    for task_id, (task_name, started_at, pid) in sorted(tasks.items()):
        limit = ctx.limit(task_name, limits)
        if limit is None or started_at is None:
            continue
        # A task cannot have run longer than its worker's process: that bounds the damage a
        # skewed clock can do to the age.
        age = min(ctx.now - started_at, snap.uptime_s)
        if age <= limit + ctx.policy.stall_grace_s:
            continue
        registered = limits.get(task_name or "")
        hard = registered.time_limit if registered else None
        why = (
            f"past its registered time_limit of {hard:.0f} s, which the {snap.pool} pool did "
            "not enforce"
            if hard
            else f"past the expected {limit:.0f} s"
        )
        fate = TaskFate(
            id=task_id,
            name=task_name,
            state="STARTED",
            started_at=started_at,
            verdict=Verdict.RUNNING,
            worker_pid=pid,
        )
        yield Signal(
            Finding(
                kind=Kind.TASK_STALLED,
                severity=Severity.WARNING,
                worker=snap.name,
                cause=Cause.TIME_LIMIT,
                evidence=(f"running {age:.0f} s on pid {pid}, {why}",),
                tasks=(fate,),
                summary=(
                    f"{task_name or 'task'} {task_id} on {snap.name} has run {age:.0f} s, {why}"
                ),
                advice=(
                    f"Check what the task is waiting on (py-spy dump --pid {pid}) and set a "
                    "time_limit it can honour; on solo/threads pools time limits are not "
                    "enforced.",
                ),
                key=keys.task_key(Kind.TASK_STALLED, task_id),
            )
        )


def hung(
    ctx: Context, record: WorkerRecord, tasks: Iterable[ActiveTask], evidence: str
) -> Iterator[Signal]:
    """The tasks of a worker that does not answer but holds its broker connections, once past
    their limit: the worker is hung in them (not dead; a stall to look into)."""
    for task in tasks:
        limit = ctx.limit(task.name, record.limits) or ctx.policy.busy_limit_s
        if task.time_start is None:
            continue
        age = ctx.now - task.time_start
        if age <= limit + ctx.policy.stall_grace_s:
            continue
        fate = TaskFate(
            id=task.id,
            name=task.name,
            state="STARTED",
            started_at=task.time_start,
            verdict=Verdict.RUNNING,
            worker_pid=task.worker_pid,
        )
        yield Signal(
            Finding(
                kind=Kind.TASK_STALLED,
                severity=Severity.WARNING,
                worker=record.name,
                cause=Cause.TIME_LIMIT,
                evidence=(
                    f"running {age:.0f} s, past {limit:.0f} s; the worker does not answer "
                    "remote control",
                    evidence,
                ),
                tasks=(fate,),
                summary=f"{record.name} is hung in {task.name or 'task'} {task.id}: it has run "
                f"{age:.0f} s (limit {limit:.0f} s), the worker does not answer but is still "
                "connected",
                advice=(
                    "Look at what it is stuck on (py-spy dump --pid "
                    f"{task.worker_pid or record.pid}); restart the worker if it is frozen. Its "
                    "task is not lost while it runs.",
                ),
                key=keys.task_key(Kind.TASK_STALLED, task.id),
            )
        )
