"""Roster transitions: how each worker's situation changed between the previous state and this
observation. Computed from those two alone, before any rule runs, so no rule ever sees a roster
that another rule is half-way through rewriting."""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from oomcheck.detect.context import ALIVE, Context
from oomcheck.model import ActiveTask, WorkerRecord, WorkerSnapshot, WorkerStatus


class Change(StrEnum):
    NEW = "new"  # answers, never seen before
    ALIVE = "alive"  # answers, same process as before
    RESTARTED = "restarted"  # answers, same nodename, another process
    RETURNED = "returned"  # answers again, same process, after we had given up on it
    MISSING = "missing"  # answered before, not now: busy, departed or lost (the rules judge)
    STILL_LOST = "still_lost"  # judged lost before, still silent
    STILL_DEPARTED = "still_departed"  # left quietly before, still silent (late evidence?)


@dataclass(frozen=True, slots=True)
class Transition:
    change: Change
    name: str
    before: WorkerRecord | None
    snap: WorkerSnapshot | None

    @property
    def record(self) -> WorkerRecord:
        assert self.before is not None, f"{self.change} has a previous record"
        return self.before

    @property
    def answer(self) -> WorkerSnapshot:
        assert self.snap is not None, f"{self.change} has a reply"
        return self.snap


def transitions(ctx: Context) -> tuple[Transition, ...]:
    """One transition per worker in the roster or the replies; none when inspect failed (then
    nothing is known of anyone's liveness)."""
    if not ctx.inspect_ok:
        return ()
    out: list[Transition] = []
    for name in sorted({*ctx.state.workers, *ctx.live}):
        before = ctx.state.workers.get(name)
        snap = ctx.live.get(name)
        out.append(Transition(_change(ctx, before, snap), name, before, snap))
    return tuple(out)


def _change(ctx: Context, before: WorkerRecord | None, snap: WorkerSnapshot | None) -> Change:
    if before is None:
        return Change.NEW
    if snap is not None:
        if ctx.is_new_incarnation(before, snap):
            return Change.RESTARTED
        if before.status not in ALIVE:
            return Change.RETURNED
        return Change.ALIVE
    if before.status in ALIVE:
        return Change.MISSING
    if before.status == WorkerStatus.LOST:
        return Change.STILL_LOST
    return Change.STILL_DEPARTED


def record_from(ctx: Context, snap: WorkerSnapshot, first_seen: float) -> WorkerRecord:
    return WorkerRecord(
        name=snap.name,
        pid=snap.pid,
        boot_at=ctx.boot_at(snap),
        pool=snap.pool,
        pool_pids=tuple(sorted(snap.pool_pids)),
        status=WorkerStatus.ALIVE,
        first_seen=first_seen,
        changed_at=ctx.now,
        active=remembered_active(ctx, snap),
        limits=dict(snap.registered),
        queues=tuple(sorted(snap.queues or ())),
        subscriptions=snap.subscriptions,
        named_connections=snap.named_connections,
    )


def refreshed(ctx: Context, record: WorkerRecord, snap: WorkerSnapshot) -> WorkerRecord:
    """A live worker, same process as before: the same object unless something changed (the
    state codec skips records that are their predecessor). Compared field by field first: this
    runs for every worker of every run."""
    pool_pids = tuple(sorted(snap.pool_pids))
    active = remembered_active(ctx, snap)
    limits = dict(snap.registered) if snap.registered else record.limits
    # active_queues() unanswered this run: keep what we knew
    queues = tuple(sorted(snap.queues)) if snap.queues is not None else record.queues
    learned = snap.subscriptions is not None
    subscriptions = snap.subscriptions if learned else record.subscriptions
    named = snap.named_connections if learned else record.named_connections
    if (
        record.status == WorkerStatus.ALIVE
        and record.incident_id is None
        and (record.pool, record.pool_pids, record.active) == (snap.pool, pool_pids, active)
        and record.limits == limits
        and record.queues == queues
        and (record.subscriptions, record.named_connections) == (subscriptions, named)
    ):
        return record
    return replace(
        record,
        pool=snap.pool,
        pool_pids=pool_pids,
        status=WorkerStatus.ALIVE,
        active=active,
        limits=limits,
        queues=queues,
        subscriptions=subscriptions,
        named_connections=named,
        incident_id=None,
        changed_at=ctx.now,
    )


def with_status(
    ctx: Context, record: WorkerRecord, status: WorkerStatus, **changes: object
) -> WorkerRecord:
    updated = replace(record, status=status, **changes)  # type: ignore[arg-type]
    return record if updated == record else replace(updated, changed_at=ctx.now)


def remembered_active(ctx: Context, snap: WorkerSnapshot) -> tuple[ActiveTask, ...]:
    """The tasks to remember for a worker: its active() reply, else its STARTED records."""
    if snap.active is not None:
        return tuple(sorted(snap.active, key=lambda t: t.id))
    processes = ctx.processes(snap)
    return tuple(
        sorted(
            (
                ActiveTask(id=t.id, name=t.name, worker_pid=t.pid, time_start=t.written_at)
                for t in ctx.started_by_worker.get(snap.name, ())
                if t.pid in processes
            ),
            key=lambda t: t.id,
        )
    )
