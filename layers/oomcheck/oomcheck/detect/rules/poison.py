"""Kill counts per task id, and the tasks in a kill loop (poison_task)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from oomcheck.detect import keys
from oomcheck.detect.context import Context
from oomcheck.detect.signals import KillSeen, Outcome, Resolution, Signal
from oomcheck.model import Cause, Finding, Kill, KillRecord, Kind, Severity, TaskFate, Verdict

KINDS = frozenset({Kind.POISON_TASK})


def merge_kills(
    previous: Mapping[str, KillRecord], seen: Iterable[KillSeen]
) -> dict[str, KillRecord]:
    """The kill records after this run: one kill per (worker, pid) of a task, with the cause of
    whichever sign of it knew one (a pid gone from the pool says nothing; the kernel line about
    it says OOM); records that gain nothing stay the same objects."""
    kills = dict(previous)
    for item in seen:
        record = kills.get(item.task_id)
        kill = item.kill
        if record is None:
            kills[item.task_id] = KillRecord(item.task_id, item.name, (kill,))
            continue
        same = [
            i
            for i, k in enumerate(record.kills)
            if kill.worker is not None
            and kill.pid is not None
            and (k.worker, k.pid) == (kill.worker, kill.pid)
        ]
        if not same:
            kills[item.task_id] = replace(
                record, name=record.name or item.name, kills=(*record.kills, kill)
            )
        elif kill.cause != Cause.UNKNOWN and record.kills[same[0]].cause == Cause.UNKNOWN:
            known = replace(record.kills[same[0]], cause=kill.cause)
            updated = tuple(known if i == same[0] else k for i, k in enumerate(record.kills))
            kills[item.task_id] = replace(record, kills=updated)
    return kills


def judge(ctx: Context, kills: Mapping[str, KillRecord]) -> Outcome:
    window_start = ctx.now - ctx.policy.poison_window_s
    signals: list[Signal] = []
    resolutions: list[Resolution] = []
    for task_id, record in sorted(kills.items()):
        key = keys.task_key(Kind.POISON_TASK, task_id)
        recent = tuple(k for k in record.kills if k.at >= window_start)
        is_open = ctx.open_incident(key) is not None
        if not is_open and len(recent) < ctx.policy.poison_kills:
            continue
        if is_open and not _still_active(ctx, task_id, record):
            resolutions.append(Resolution(key, "the task has stopped dying and is not queued"))
            continue
        signals.append(Signal(_finding(ctx, task_id, record, recent or record.kills)))
    return Outcome(KINDS, signals=tuple(signals), resolutions=tuple(resolutions))


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
