"""A queue that holds messages while no live worker consumes it (queue_orphaned): the backlog
that silently grows once the only workers of a queue are dead."""

from __future__ import annotations

from collections.abc import Mapping

from oomcheck.detect import keys
from oomcheck.detect.carried import Carried
from oomcheck.detect.context import ALIVE, Context
from oomcheck.detect.signals import Carry, Outcome, Resolution, Signal
from oomcheck.detect.text import short_utc
from oomcheck.model import (
    Finding,
    IncidentKey,
    Kind,
    QueueDepth,
    Severity,
    WorkerRecord,
    WorkerStatus,
)

KINDS = frozenset({Kind.QUEUE_ORPHANED})


def gone(key: IncidentKey) -> str:
    return f"queue {key.subject} is no longer watched"


def judge(ctx: Context, carried: Carried) -> Outcome:
    """queue_orphaned for a queue with messages and no live consumer (in ``carried.workers``, the
    roster after this run); carries since when each queue has been so. A queue not measured this
    run keeps its incident and its time as they were; an ignored one is no longer watched."""
    if ctx.obs.queues is None or not ctx.inspect_ok:
        return Outcome(KINDS, judged=False)
    roster = carried.workers
    consumers = _consumers(ctx, roster)
    since: dict[str, float] = {}
    signals: list[Signal] = []
    resolutions: list[Resolution] = []
    for depth in sorted(ctx.obs.queues, key=lambda q: q.name):
        if depth.name in ctx.policy.ignored_queues:
            continue
        key = keys.queue(depth.name)
        live = consumers.get(depth.name, [])
        if live or (depth.consumers or 0) > 0 or depth.messages == 0:
            if ctx.open_incident(key) is not None:
                resolutions.append(Resolution(key, _why_over(live, depth)))
            continue
        first = ctx.state.orphaned_since.get(depth.name, ctx.now)
        since[depth.name] = first
        former = sorted(
            r.name for r in roster.values() if depth.name in r.queues and r.status not in ALIVE
        )
        due = former or ctx.now - first >= ctx.policy.queue_orphan_after_s
        if due or ctx.open_incident(key) is not None:
            signals.append(Signal(_finding(ctx, depth, former, first, roster)))
    measured = {q.name for q in ctx.obs.queues}
    # queues not measured this run keep what was known of them
    since.update({q: t for q, t in ctx.state.orphaned_since.items() if q not in measured})
    held = frozenset(
        k for k in ctx.open_by_key if k.kind == Kind.QUEUE_ORPHANED and k.subject not in measured
    )
    return Outcome(
        KINDS,
        signals=tuple(signals),
        resolutions=tuple(resolutions),
        held=held,
        gone=gone,
        carry=Carry(orphaned_since=since),
    )


def _why_over(live: list[str], depth: QueueDepth) -> str:
    if live:
        return f"a consumer is back: {', '.join(live[:3])}"
    if depth.consumers:
        return "the broker counts a consumer again"
    return "the queue is empty"


def _consumers(ctx: Context, roster: Mapping[str, WorkerRecord]) -> dict[str, list[str]]:
    """Queue -> live workers consuming it: those that answered (their active_queues(), else
    what the roster remembers) and the busy ones that cannot answer but still consume."""
    out: dict[str, list[str]] = {}
    for name in sorted(roster):
        record = roster[name]
        if record.status not in ALIVE:
            continue
        snap = ctx.live.get(name)
        queues = snap.queues if snap is not None and snap.queues is not None else record.queues
        for queue in queues:
            out.setdefault(queue, []).append(name)
    return out


def _finding(
    ctx: Context,
    depth: QueueDepth,
    former: list[str],
    first: float,
    roster: Mapping[str, WorkerRecord],
) -> Finding:
    oldest = (
        f"; its oldest message is {ctx.now - depth.oldest_at:.0f} s old"
        if depth.oldest_at is not None
        else ""
    )
    if former:
        how = {
            WorkerStatus.LOST: "died",
            WorkerStatus.DEPARTED: "left",
        }
        gone = ", ".join(f"{n} ({how.get(roster[n].status, 'gone')})" for n in former[:3])
        why = f"its consumer(s) {gone}"
    else:
        why = f"no live worker has consumed it since {short_utc(first)}"
    return Finding(
        kind=Kind.QUEUE_ORPHANED,
        severity=Severity.CRITICAL,
        worker=former[0] if len(former) == 1 else None,
        evidence=(
            f"broker: {depth.name} holds {depth.messages:,} message(s)"
            + (f", {depth.consumers} consumer(s)" if depth.consumers is not None else "")
            + oldest,
            f"inspect: no live worker lists {depth.name} in active_queues()",
        ),
        summary=f"queue {depth.name} has {depth.messages:,} message(s) and no live consumer: "
        f"{why}{oldest}",
        advice=(
            f"Start a worker for it (celery -A <app> worker -Q {depth.name}); the messages wait "
            "and run once one consumes the queue.",
            "If nobody consumes it on purpose, list it in OOMCHECK_IGNORED_QUEUES.",
        ),
        key=keys.queue(depth.name),
    )
