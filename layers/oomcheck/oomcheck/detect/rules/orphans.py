"""STARTED records of workers that answer nothing and that the roster never knew: they died
before oomcheck saw them, or before its first run. One whose broker connections the broker still
shows is a newcomer busy in its task (a solo pool answers nothing meanwhile), not an orphan; one
the broker cannot tell apart is not called gone while its task may still run within its limit."""

from __future__ import annotations

from oomcheck.detect import keys, text
from oomcheck.detect.carried import Carried
from oomcheck.detect.context import Context, Place
from oomcheck.detect.fates import fate_of
from oomcheck.detect.signals import Outcome, Signal
from oomcheck.model import ActiveTask, Cause, Finding, Kind, Severity, StartedTask

KINDS = frozenset({Kind.TASK_ORPHANED})


def judge(ctx: Context, carried: Carried) -> Outcome:
    """One task_orphaned per unknown silent worker with STARTED records; once none remain, the
    ledger closes its incident ("no orphaned STARTED record remains")."""
    if not (ctx.inspect_ok and ctx.results_ok):
        return Outcome(KINDS, judged=False)
    signals = []
    presence = ctx.obs.presence or {}
    for worker, tasks in sorted(ctx.started_by_worker.items()):
        if worker in ctx.live or worker in ctx.state.workers:
            continue
        seen = presence.get(worker)
        if seen is not None and seen.present:
            continue  # it holds its broker connections: busy in its task, not gone
        if (seen is None or seen.present is None) and _may_still_run(ctx, tasks):
            # the broker cannot tell: a newcomer busy in its first task (a solo pool answers
            # nothing) looks the same as a dead worker until the task's limit passes
            continue
        fates = tuple(
            fate_of(
                ctx,
                ActiveTask(id=t.id, name=t.name, worker_pid=t.pid, time_start=t.written_at),
                None,
                Place(worker, t.pid),
            )
            for t in sorted(tasks, key=lambda t: t.id)
        )
        signals.append(
            Signal(
                Finding(
                    kind=Kind.TASK_ORPHANED,
                    severity=Severity.WARNING,
                    worker=worker,
                    evidence=(
                        f"results: {len(fates)} STARTED record(s) of {worker}, which does not "
                        "answer and was never seen alive by oomcheck",
                    ),
                    tasks=fates,
                    summary=f"{len(fates)} task(s) STARTED on {worker}, which is gone: "
                    + text.fates_text(fates),
                    advice=text.death_advice(Cause.UNKNOWN, fates, ctx.policy.visibility_timeout_s),
                    key=keys.orphaned(worker),
                )
            )
        )
    return Outcome(KINDS, signals=tuple(signals))


def _may_still_run(ctx: Context, tasks: tuple[StartedTask, ...]) -> bool:
    """Whether one of a silent stranger's tasks may still be running within its limit, as a
    silent known worker's task may (rules/workers.py)."""
    for task in tasks:
        limit = ctx.limit(task.name, ctx.limits_by_name) or ctx.policy.busy_limit_s
        if task.written_at is not None and ctx.now - task.written_at <= limit:
            return True
    return False
