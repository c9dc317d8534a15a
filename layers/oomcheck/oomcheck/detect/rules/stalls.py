"""Tasks running past their limit on a live worker (task_stalled), and their end."""

from __future__ import annotations

from collections.abc import Iterator

from oomcheck.detect import keys
from oomcheck.detect.context import Context
from oomcheck.detect.signals import Outcome, Resolution, Signal
from oomcheck.model import Cause, Finding, Kind, Severity, TaskFate, Verdict, WorkerSnapshot

KINDS = frozenset({Kind.TASK_STALLED})

# task id -> (name, started at, pid)
_Running = dict[str, tuple[str | None, float | None, int | None]]


def judge(ctx: Context) -> Outcome:
    if not ctx.inspect_ok:
        return Outcome(KINDS, judged=False)
    running: set[str] = set()
    signals: list[Signal] = []
    for _, snap in sorted(ctx.live.items()):
        tasks = _running(ctx, snap)
        running.update(tasks)
        signals.extend(_stalled(ctx, snap, tasks))
    seen = {s.key for s in signals}
    resolutions = tuple(
        Resolution(key, "the task is no longer running")
        for key, incident in ctx.open_by_key.items()
        if key.kind == Kind.TASK_STALLED
        and key not in seen
        and _judgeable(ctx, incident.finding.worker, key.subject, running)
    )
    return Outcome(KINDS, signals=tuple(signals), resolutions=resolutions)


def _judgeable(ctx: Context, worker: str | None, task_id: str, running: set[str]) -> bool:
    """A stalled task is over when its worker answered with its tasks and it is not among them
    (or when its worker is gone: the death is then the workers rule's incident)."""
    if task_id in running:
        return False  # still running, within its limit again only if the limit changed
    snap = ctx.live.get(worker or "")
    return snap is None or snap.active is not None or ctx.results_ok


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
