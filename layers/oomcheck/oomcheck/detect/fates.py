"""What became of the tasks of a process that died, and the cause a death's evidence shows."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from oomcheck.detect.context import Context, Place
from oomcheck.model import (
    ActiveTask,
    Cause,
    ExitEvidence,
    TaskFate,
    TaskLimits,
    Verdict,
    WorkerRecord,
)

_CAUSE_RANK = {
    Cause.OOM_KILLED: 0,
    Cause.KILLED: 1,
    Cause.EXITED: 2,
    Cause.TIME_LIMIT: 3,
    Cause.UNKNOWN: 4,
}


def cause_from(exits: Iterable[ExitEvidence]) -> tuple[Cause, int | None, tuple[str, ...]]:
    """The most telling cause among exit evidence (OOM beats killed beats exited), its exit
    code, and every piece of evidence as an evidence line."""
    exits = tuple(exits)
    abnormal = sorted((e for e in exits if not e.clean), key=lambda e: (_CAUSE_RANK[e.cause], e.at))
    lines = tuple(f"{e.source}: {e.text}" for e in exits)
    if not abnormal:
        return Cause.UNKNOWN, None, lines
    best = abnormal[0]
    exit_code = best.exit_code
    if exit_code is None:
        exit_code = next((e.exit_code for e in abnormal if e.exit_code is not None), None)
    return best.cause, exit_code, lines


def fate_of(
    ctx: Context, task: ActiveTask, limits: Mapping[str, TaskLimits] | None, dead: Place
) -> TaskFate:
    """The verdict (model.Verdict) on a task whose process ``dead`` died."""
    started = ctx.started_by_id.get(task.id)
    state = "STARTED" if started else ctx.obs.task_status.get(task.id, "UNKNOWN")
    if task.id in ctx.lost_failure_ids:
        state = "FAILURE"
    registered = (limits if limits is not None else ctx.limits_by_name).get(task.name or "")
    acks_late = registered.acks_late if registered else None
    if acks_late is None and task.acknowledged is not None:
        acks_late = not task.acknowledged
    verdict, redeliver_at = _verdict(ctx, task.id, acks_late, dead)
    return TaskFate(
        id=task.id,
        name=_name(ctx, task),
        state=state,
        started_at=task.time_start,
        verdict=verdict,
        redeliver_at=redeliver_at,
        worker_pid=task.worker_pid,
    )


def _name(ctx: Context, task: ActiveTask) -> str | None:
    """The task's name from whatever saw it: active(), its STARTED record (only with
    result_extended), or its message in the broker's unacked set (a solo worker acks after the
    task, so its running task's message is always there, with the name in its headers)."""
    if task.name:
        return task.name
    started = ctx.started_by_id.get(task.id)
    message = ctx.unacked.get(task.id)
    return (started.name if started else None) or (message.name if message else None)


def _verdict(
    ctx: Context, task_id: str, acks_late: bool | None, dead: Place
) -> tuple[Verdict, float | None]:
    where = ctx.running_now.get(task_id)
    if (
        where is not None
        and where != dead
        and not (where.worker == dead.worker and where.pid is None)
    ):
        return Verdict.REDELIVERED, None
    message = ctx.unacked.get(task_id)
    if message is not None:
        fetched = message.fetched_at
        at = fetched + ctx.policy.visibility_timeout_s if fetched is not None else None
        return Verdict.AWAITING_REDELIVERY, at
    if task_id in ctx.lost_failure_ids or acks_late is False:
        return Verdict.LOST, None
    if acks_late is True:
        if ctx.obs.broker_transport == "redis" and ctx.obs.unacked is None:
            return Verdict.UNKNOWN, None  # the unacked set could not be read this run
        return Verdict.REDELIVERED, None
    return Verdict.UNKNOWN, None


def fates(ctx: Context, tasks: Iterable[ActiveTask], record: WorkerRecord) -> tuple[TaskFate, ...]:
    return tuple(fate_of(ctx, t, record.limits, Place(record.name, t.worker_pid)) for t in tasks)


def rejudge(ctx: Context, fate: TaskFate, worker: str | None) -> TaskFate:
    """An open incident's task, judged again: awaiting_redelivery becomes redelivered once the
    message is back in a queue or running; unknown becomes whatever is now known."""
    if fate.verdict not in (Verdict.AWAITING_REDELIVERY, Verdict.UNKNOWN):
        return fate
    task = ActiveTask(
        id=fate.id, name=fate.name, worker_pid=fate.worker_pid, time_start=fate.started_at
    )
    new = fate_of(ctx, task, None, Place(worker or "", fate.worker_pid))
    if new.verdict == Verdict.REDELIVERED or (
        fate.verdict == Verdict.UNKNOWN and new.verdict != Verdict.UNKNOWN
    ):
        return replace(fate, verdict=new.verdict, redeliver_at=new.redeliver_at)
    if (
        fate.verdict == Verdict.AWAITING_REDELIVERY
        and fate.id not in ctx.unacked
        and ctx.obs.unacked is not None
    ):
        return replace(fate, verdict=Verdict.REDELIVERED)  # a live worker restored it
    return fate


def rejudge_all(
    ctx: Context, fates_: Iterable[TaskFate], worker: str | None
) -> tuple[TaskFate, ...]:
    return tuple(rejudge(ctx, f, worker) for f in fates_)


def tasks_of_dead_instance(
    ctx: Context, record: WorkerRecord, successor: tuple[float, frozenset[int]] | None
) -> list[ActiveTask]:
    """Tasks that were running in the worker instance that died: STARTED records naming it and
    the tasks it reported active last time, less those known to have finished. ``successor`` is
    the (boot time, processes) of the instance that replaced it, whose own tasks are not orphans.
    """
    tasks: dict[str, ActiveTask] = {}
    for started in ctx.started_by_worker.get(record.name, ()):
        if successor is not None and _belongs_to(started.written_at, started.pid, successor):
            continue
        tasks[started.id] = ActiveTask(
            id=started.id, name=started.name, worker_pid=started.pid, time_start=started.written_at
        )
    for task in record.active:
        seen = tasks.get(task.id)
        if seen is not None:
            tasks[task.id] = replace(
                task, name=task.name or seen.name, worker_pid=seen.worker_pid or task.worker_pid
            )
        else:
            tasks[task.id] = task
    return [t for _, t in sorted(tasks.items()) if not ctx.task_finished(t.id)]


def _belongs_to(
    written_at: float | None, pid: int | None, successor: tuple[float, frozenset[int]]
) -> bool:
    boot_at, processes = successor
    return written_at is not None and written_at >= boot_at - 1.0 and pid in processes


def unique(items: Iterable[TaskFate]) -> tuple[TaskFate, ...]:
    seen: dict[str, TaskFate] = {}
    for fate in items:
        seen.setdefault(fate.id, fate)
    return tuple(seen.values())
