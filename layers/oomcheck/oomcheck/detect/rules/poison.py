"""The tasks in a kill loop (poison_task), from the kill counts per task id."""

from __future__ import annotations

from oomcheck.detect import keys
from oomcheck.detect.carried import Carried
from oomcheck.detect.context import Context
from oomcheck.detect.signals import Outcome, Signal
from oomcheck.model import (
    Cause,
    Finding,
    Kill,
    KillRecord,
    Kind,
    Severity,
    TaskFate,
    Verdict,
)

KINDS = frozenset({Kind.POISON_TASK})


def judge(ctx: Context, carried: Carried) -> Outcome:
    """A poison_task per task killed ``poison_kills`` times in the window (``carried.kills``: the
    counts after this run's deaths); an open one stays while the task runs, waits in the broker
    or died recently, and is over (in the ledger's hands) once it does none of these."""
    window_start = ctx.now - ctx.policy.poison_window_s
    signals: list[Signal] = []
    for task_id, record in sorted(carried.kills.items()):
        key = keys.task_key(Kind.POISON_TASK, task_id)
        recent = tuple(k for k in record.kills if k.at >= window_start)
        if ctx.open_incident(key) is not None:
            if not _still_active(ctx, task_id, record):
                continue
        elif len(recent) < ctx.policy.poison_kills:
            continue
        signals.append(Signal(_finding(ctx, task_id, record, recent or record.kills)))
    return Outcome(KINDS, signals=tuple(signals))


def _still_active(ctx: Context, task_id: str, record: KillRecord) -> bool:
    if task_id in ctx.running_now or task_id in ctx.unacked:
        return True
    return ctx.now - record.last_at < ctx.policy.poison_quiet_s


def _finding(ctx: Context, task_id: str, record: KillRecord, kills: tuple[Kill, ...]) -> Finding:
    workers = sorted({k.worker for k in kills if k.worker})
    revoke = (
        f"celery -A {ctx.policy.app_name or '<your_app>'} control revoke {task_id} "
        "--terminate --signal=SIGKILL"
    )
    return Finding(
        kind=Kind.POISON_TASK,
        severity=Severity.CRITICAL,
        worker=workers[-1] if len(workers) == 1 else None,
        cause=Cause.OOM_KILLED if any(k.cause == Cause.OOM_KILLED for k in kills) else Cause.KILLED,
        evidence=tuple(
            f"killed on {k.worker or '?'} pid {k.pid or '?'}: {k.how}" for k in kills[-5:]
        ),
        tasks=(
            TaskFate(
                id=task_id,
                name=record.name,
                state="STARTED",
                started_at=None,
                verdict=Verdict.KILL_LOOP,
            ),
        ),
        summary=(
            f"{record.name or 'task'} {task_id} killed its process {len(kills)} times in "
            f"{ctx.policy.poison_window_s / 3600:.0f} h: a kill loop"
        ),
        advice=(
            f"Stop the loop: {revoke}",
            "It loops because acks_late with reject_on_worker_lost (or a visibility timeout "
            "redelivery) puts the message back each time the process dies; revoked ids live in "
            "worker memory, so run workers with --statedb to keep the revoke across restarts.",
            "Then find why it needs so much memory (its arguments are in the broker message) "
            "or give it a worker with more.",
        ),
        key=keys.task_key(Kind.POISON_TASK, task_id),
    )
