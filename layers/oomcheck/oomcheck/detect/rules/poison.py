"""The tasks in a kill loop (poison_task), from the kill counts per task id."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

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
        incident = ctx.open_incident(key)
        if incident is not None:
            if not _still_active(ctx, task_id, record):
                continue
        elif len(recent) < ctx.policy.poison_kills:
            continue
        finding = _finding(ctx, task_id, record, recent or record.kills)
        signals.append(
            Signal(finding, news=_ended(incident.finding if incident else None, finding))
        )
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
    return Finding(
        kind=Kind.POISON_TASK,
        severity=Severity.CRITICAL,
        worker=_only_worker(kills),
        cause=_loop_cause(kills),
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


def _only_worker(kills: Iterable[Kill]) -> str | None:
    """The worker every kill was on, where there is one."""
    workers = {k.worker for k in kills if k.worker}
    return next(iter(workers)) if len(workers) == 1 else None


def _loop_cause(kills: Iterable[Kill]) -> Cause:
    """OOM when any kill of the loop is known to be the OOM killer's; else killed."""
    return Cause.OOM_KILLED if any(k.cause == Cause.OOM_KILLED for k in kills) else Cause.KILLED


def _still_active(ctx: Context, task_id: str, record: KillRecord) -> bool:
    if task_id in ctx.running_now or task_id in ctx.unacked:
        return True
    return ctx.now - record.last_at < ctx.policy.poison_quiet_s


def _finding(ctx: Context, task_id: str, record: KillRecord, kills: tuple[Kill, ...]) -> Finding:
    end = _limit_end(ctx, record)
    fate = TaskFate(
        id=task_id,
        name=record.name,
        state="STARTED",
        started_at=None,
        verdict=end.verdict if end else Verdict.KILL_LOOP,
        waits_in=end.waits_in if end else None,
    )
    summary = (
        f"{record.name or 'task'} {task_id} killed its process {len(kills)} times in "
        f"{ctx.policy.poison_window_s / 3600:.0f} h: a kill loop"
    )
    return Finding(
        kind=Kind.POISON_TASK,
        severity=Severity.CRITICAL,
        worker=_only_worker(kills),
        cause=_loop_cause(kills),
        evidence=(
            *(f"killed on {k.worker or '?'} pid {k.pid or '?'}: {k.how}" for k in kills[-5:]),
            *((end.line,) if end else ()),
        ),
        tasks=(fate,),
        summary=summary + (f"; {end.outcome}" if end and end.outcome else ""),
        advice=end.advice if end and end.advice else _loop_advice(ctx, task_id),
        key=keys.task_key(Kind.POISON_TASK, task_id),
    )


def _ended(before: Finding | None, after: Finding) -> str | None:
    """The news of an open loop whose message the broker took out at its delivery limit."""
    if before is None or not before.tasks or not after.tasks:
        return None
    was, now = before.tasks[0].verdict, after.tasks[0].verdict
    if was is now or now not in (Verdict.DEAD_LETTERED, Verdict.LOST):
        return None
    return after.summary.rsplit("; ", 1)[-1]


def _loop_advice(ctx: Context, task_id: str) -> tuple[str, ...]:
    revoke = (
        f"celery -A {ctx.policy.app_name or '<your_app>'} control revoke {task_id} "
        "--terminate --signal=SIGKILL"
    )
    return (
        f"Stop the loop: {revoke}",
        "It loops because acks_late with reject_on_worker_lost (or a visibility timeout "
        "redelivery) puts the message back each time the process dies; revoked ids live in "
        "worker memory, so run workers with --statedb to keep the revoke across restarts.",
        "Then find why it needs so much memory (its arguments are in the broker message) "
        "or give it a worker with more.",
    )


@dataclass(frozen=True, slots=True)
class _LimitEnd:
    """A kill loop on a RabbitMQ quorum queue with a delivery limit: the evidence line, and once
    the kills pass the limit, what the broker did with the message (``outcome``, ``advice``)."""

    line: str
    verdict: Verdict = Verdict.KILL_LOOP
    waits_in: str | None = None
    outcome: str | None = None
    advice: tuple[str, ...] = ()


def _limit_end(ctx: Context, record: KillRecord) -> _LimitEnd | None:
    """The delivery limit of the task's queue (OOMCHECK_QUORUM_QUEUES, the queue from
    OOMCHECK_TASK_QUEUES) against the kills seen: RabbitMQ delivers a message limit + 1 times
    (each kill returns it), then dead-letters it, or drops it without a dead-letter exchange.
    The kills seen are a lower bound, so the verdict comes late, never early. None: not on
    RabbitMQ, or the queue has no known limit."""
    if ctx.obs.broker_transport != "amqp":
        return None
    routes = ctx.policy.task_queues
    queue = routes.get(record.name or "", routes.get("*"))
    limit = ctx.policy.quorum_queues.get(queue) if queue else None
    if queue is None or limit is None:
        return None
    kills = len(record.kills)
    exchange = limit.dead_letter_exchange
    where = text.quorum_destination(exchange, limit.dead_letter_routing_key) if exchange else None
    line = text.quorum_line(
        queue, limit.delivery_limit, kills, f"dead-letters it to {where}" if where else None
    )
    if kills <= limit.delivery_limit:
        return _LimitEnd(line)
    advice = text.quorum_advice(queue, exchange)
    if where is None:
        return _LimitEnd(line, Verdict.LOST, None, text.QUORUM_DROPPED, advice)
    return _LimitEnd(line, Verdict.DEAD_LETTERED, where, f"dead-lettered to {where}", advice)
