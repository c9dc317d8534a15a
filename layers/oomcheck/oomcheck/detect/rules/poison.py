"""The tasks in a kill loop (poison_task), from the kill counts per task id."""

from __future__ import annotations

from oomcheck.detect import keys, text
from oomcheck.detect.carried import Carried
from oomcheck.detect.context import Context
from oomcheck.detect.signals import Outcome, Signal
from oomcheck.model import (
    BeatEntry,
    Cause,
    Finding,
    IncidentKey,
    Kill,
    KillRecord,
    Kind,
    Severity,
    TaskFate,
    Verdict,
)

KINDS = frozenset({Kind.POISON_TASK})
# the subject of a kill loop counted by beat entry (others are task ids)
ENTRY = "entry:"


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
    by_entry, held = _entry_loops(ctx, carried)
    return Outcome(KINDS, signals=(*signals, *by_entry), held=held)


def _entry_loops(
    ctx: Context, carried: Carried
) -> tuple[tuple[Signal, ...], frozenset[IncidentKey]]:
    """A periodic task killed on ``poison_kills`` runs in the window is a kill loop even though
    each run has a new task id: counted per beat entry (by its task's name). Without this run's
    schedule, open entry loops are held."""
    open_entries = frozenset(
        k for k in ctx.open_by_key if k.kind is Kind.POISON_TASK and k.subject.startswith(ENTRY)
    )
    schedule = ctx.obs.beat
    if schedule is None:
        return (), open_entries
    window_start = ctx.now - ctx.policy.poison_window_s
    signals: list[Signal] = []
    for entry in schedule.entries:
        if not entry.enabled or entry.task is None:
            continue
        runs = sorted(
            (r for r in carried.kills.values() if r.name == entry.task),
            key=lambda r: r.last_at,
        )
        recent = [r for r in runs if r.last_at >= window_start]
        key = keys.task_key(Kind.POISON_TASK, ENTRY + entry.name)
        is_open = ctx.open_incident(key) is not None
        if is_open and runs and ctx.now - runs[-1].last_at < ctx.policy.poison_quiet_s:
            signals.append(Signal(_entry_finding(ctx, entry, recent or runs[-1:], key)))
        elif not is_open and len(recent) >= ctx.policy.poison_kills:
            signals.append(Signal(_entry_finding(ctx, entry, recent, key)))
    return tuple(signals), frozenset()


def _entry_finding(
    ctx: Context, entry: BeatEntry, runs: list[KillRecord], key: IncidentKey
) -> Finding:
    kills = [k for r in runs for k in r.kills]
    workers = sorted({k.worker for k in kills if k.worker})
    return Finding(
        kind=Kind.POISON_TASK,
        severity=Severity.CRITICAL,
        worker=workers[-1] if len(workers) == 1 else None,
        cause=Cause.OOM_KILLED if any(k.cause == Cause.OOM_KILLED for k in kills) else Cause.KILLED,
        evidence=(
            *(
                f"run {r.task_id} killed on {r.kills[-1].worker or '?'} pid "
                f"{r.kills[-1].pid or '?'}: {r.kills[-1].how}"
                for r in runs[-5:]
            ),
            text.periodic_line(entry.task or "?", entry, ctx.now),
        ),
        tasks=tuple(
            TaskFate(
                id=r.task_id,
                name=r.name,
                state="STARTED",
                started_at=None,
                verdict=Verdict.KILL_LOOP,
            )
            for r in runs[-5:]
        ),
        summary=(
            f"beat entry {entry.name} ({entry.task}): {len(runs)} runs in a row killed their "
            f"process in {ctx.policy.poison_window_s / 3600:.0f} h, each a new task id: a kill loop"
        ),
        advice=(
            f"Each run of {entry.name} ({entry.schedule}) will die the same way: disable the "
            "entry (RedBeat: set enabled to false in its definition, or remove it from "
            "beat_schedule) until the task is fixed.",
            "Then find why it needs so much memory, or route it to a worker with more.",
        ),
        key=key,
    )


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
