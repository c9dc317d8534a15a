"""Celery on Amazon SQS: deaths, stalls, dead letters and orphaned queues without remote control.

On SQS no worker answers ``inspect`` and the broker shows no connections, so the families that
judge the roster (workers, stalls, queues) cannot judge and hold their incidents. These two judge
in their place; since each kind has one owner that sweeps it, they close what they raised of
those kinds by explicit resolutions, and own only task_dead_lettered. A
worker is known only from its STARTED records (hostname and pool pid); its death only from exit
evidence (ECS, Container Insights, kernel). What became of a task's message follows from its ack
mode: deleted when the task started (early ack: ``lost``), or invisible until the queue's
visibility timeout passes (acks_late: ``awaiting_redelivery``, then ``redelivered`` once the same
task id is STARTED again, or finished, elsewhere).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from oomcheck.detect import keys, text
from oomcheck.detect.carried import Carried
from oomcheck.detect.context import Context
from oomcheck.detect.correlate import WorkerIdentity, match_evidence
from oomcheck.detect.signals import Carry, KillSeen, Outcome, Resolution, Signal
from oomcheck.model import (
    Cause,
    DeadLetter,
    ExitEvidence,
    Finding,
    IncidentKey,
    Kill,
    Kind,
    Severity,
    SqsQueue,
    SqsView,
    StartedTask,
    TaskFate,
    Verdict,
)

# worker_lost, task_stalled and queue_orphaned belong to the workers, stalls and queues families
DEATH_KINDS: frozenset[Kind] = frozenset()
QUEUE_KINDS = frozenset({Kind.TASK_DEAD_LETTERED})
# A STARTED record written this much after the evidence's time is a later run, not a victim.
_CLOCK_SLACK_S = 2.0
# Fates nothing more will be learnt of (an unknown ack mode stays unknown).
_FINAL = frozenset({Verdict.LOST, Verdict.REDELIVERED, Verdict.DEAD_LETTERED, Verdict.UNKNOWN})
DLQ_PREFIX = "dlq:"
SQS_WAITS_IN = "invisible in its SQS queue until the visibility timeout passes"


def on_sqs(ctx: Context) -> bool:
    return ctx.obs.broker_transport == "sqs"


# ------------------------------------------------------------------------------------- deaths


def judge_deaths(ctx: Context, carried: Carried) -> Outcome:
    """worker_lost for an abnormal exit of a worker with STARTED tasks; the open ones re-judged
    (awaiting -> redelivered) and resolved once every task's fate is final; task_stalled for a
    task STARTED past its limit with no evidence either way."""
    if not on_sqs(ctx) or not ctx.results_ok:
        return Outcome(DEATH_KINDS, judged=False)
    signals: list[Signal] = []
    resolutions: list[Resolution] = []
    kills: list[KillSeen] = []
    deaths, claimed = _deaths(ctx, carried)
    victims: set[str] = set()
    for worker, evidence in sorted(deaths.items()):
        finding, dead = _death(ctx, worker, evidence)
        if finding is None:
            continue
        signals.append(Signal(finding))
        victims.update(t.id for t in finding.tasks)
        kills.extend(dead)
    for key, incident in sorted(ctx.open_by_key.items()):
        if key.kind is not Kind.WORKER_LOST or any(s.key == key for s in signals):
            continue
        victims.update(t.id for t in incident.finding.tasks)
        outcome = _rejudged(ctx, incident.finding)
        if outcome is None:
            signals.append(Signal(incident.finding))
        elif isinstance(outcome, Resolution):
            resolutions.append(outcome)
        else:
            signals.append(Signal(outcome, news=_news(incident.finding, outcome)))
    stalls = _stalls(ctx, victims)
    signals.extend(stalls)
    resolutions.extend(_stalls_over(ctx, {s.key for s in stalls}))
    return Outcome(
        DEATH_KINDS,
        signals=tuple(signals),
        resolutions=tuple(resolutions),
        carry=Carry(kills=tuple(kills), events=frozenset(claimed)),
    )


def _deaths(ctx: Context, carried: Carried) -> tuple[dict[str, tuple[ExitEvidence, ...]], set[str]]:
    """Fresh abnormal exits tied to the workers the STARTED records name, and the ids of the
    evidence this family claims (so no oom_kill of an unknown worker repeats it)."""
    identities = [
        WorkerIdentity(name=worker, pool_pids=tuple(sorted({t.pid for t in tasks if t.pid})))
        for worker, tasks in sorted(ctx.started_by_worker.items())
    ]
    fresh = [
        e
        for e in ctx.obs.exits or ()
        if e.event_id not in ctx.state.processed_events
        and e.event_id not in carried.events
        and not e.clean
    ]
    matched, _ = match_evidence(fresh, identities, ctx.policy.worker_map)
    claimed = {e.event_id for items in matched.values() for e in items}
    return {w: tuple(sorted(items, key=lambda e: e.at)) for w, items in matched.items()}, claimed


def _death(
    ctx: Context, worker: str, evidence: Sequence[ExitEvidence]
) -> tuple[Finding | None, list[KillSeen]]:
    running = ctx.started_by_worker.get(worker, ())
    # evidence from before any of its tasks started is an earlier incarnation's (same address)
    evidence = [
        e
        for e in evidence
        if any(t.written_at is None or t.written_at <= e.at + _CLOCK_SLACK_S for t in running)
    ]
    if not evidence:
        return None, []
    died_at = evidence[0].at
    tasks = [t for t in running if t.written_at is None or t.written_at <= died_at + _CLOCK_SLACK_S]
    vt = _visibility_timeout(ctx.obs.sqs)
    fates = tuple(_fate(ctx, t, vt) for t in sorted(tasks, key=lambda t: t.id))
    e = min(evidence, key=lambda e: (_cause_rank(e.cause), e.at))
    kills = [
        KillSeen(t.id, t.name, Kill(worker, t.pid, died_at, f"{e.source} exit", e.cause))
        for t in tasks
    ]
    return _lost_finding(worker, died_at, evidence, fates=fates, vt=vt), kills


def _lost_finding(
    worker: str,
    died_at: float,
    evidence: Sequence[ExitEvidence],
    *,
    fates: tuple[TaskFate, ...],
    vt: float,
) -> Finding:
    best = min(evidence, key=lambda e: (_cause_rank(e.cause), e.at))
    lines = tuple(f"{e.source}: {e.text}"[:300] for e in evidence)
    return Finding(
        kind=Kind.WORKER_LOST,
        severity=Severity.CRITICAL,
        worker=worker,
        cause=best.cause,
        exit_code=best.exit_code,
        evidence=(
            *lines,
            "sqs: no remote control on SQS; the worker is known from its STARTED records",
        ),
        tasks=fates,
        summary=f"{worker} died{text.cause_phrase(best.cause, best.exit_code)}; "
        f"{text.fates_text(fates)}",
        advice=_advice(best.cause, fates, vt),
        key=keys.lost(worker, died_at),
    )


def _advice(cause: Cause, fates: Sequence[TaskFate], vt: float) -> tuple[str, ...]:
    advice = list(text.death_advice(cause, fates, vt))
    if any(f.verdict is Verdict.UNKNOWN for f in fates):
        advice.append(text.SQS_UNKNOWN_ACK_ADVICE)
    return tuple(advice)


def _cause_rank(cause: Cause) -> int:
    order = (Cause.OOM_KILLED, Cause.KILLED, Cause.TIME_LIMIT, Cause.EXITED, Cause.UNKNOWN)
    return order.index(cause)


def acks_late(ctx: Context, name: str | None) -> bool | None:
    modes = ctx.policy.task_acks_late
    if name is not None and name in modes:
        return modes[name]
    return modes.get("*")


def _fate(ctx: Context, task: StartedTask, vt: float) -> TaskFate:
    late = acks_late(ctx, task.name)
    verdict = (
        Verdict.UNKNOWN if late is None else Verdict.AWAITING_REDELIVERY if late else Verdict.LOST
    )
    started = task.written_at
    return TaskFate(
        id=task.id,
        name=task.name,
        state="STARTED",
        started_at=started,
        verdict=verdict,
        redeliver_at=started + vt
        if verdict is Verdict.AWAITING_REDELIVERY and started is not None
        else None,
        worker_pid=task.pid,
        waits_in=SQS_WAITS_IN if verdict is Verdict.AWAITING_REDELIVERY else None,
    )


def _rejudged(ctx: Context, finding: Finding) -> Finding | Resolution | None:
    """An open death: a task awaiting redelivery that is STARTED again on another process, or
    whose STARTED record on the dead one is gone (it ran again and finished), is redelivered.
    Once every task's fate is final and said, the incident is over. None: nothing new."""
    fates = tuple(_refate(ctx, finding.worker, f) for f in finding.tasks)
    if fates != finding.tasks:
        return replace(
            finding,
            tasks=fates,
            summary=finding.summary.split(";")[0] + f"; {text.fates_text(fates)}",
        )
    if all(f.verdict in _FINAL for f in fates):
        assert finding.key is not None
        return Resolution(finding.key, f"every task's fate is known: {text.fates_text(fates)}")
    return None


def _news(before: Finding, after: Finding) -> str | None:
    """On SQS the redelivery of an awaited task is the news a death's alert promised."""
    awaited = {t.id for t in before.tasks if t.verdict is Verdict.AWAITING_REDELIVERY}
    back = [t for t in after.tasks if t.id in awaited and t.verdict is Verdict.REDELIVERED]
    return f"{len(back)} task(s) redelivered: running again" if back else None


def _refate(ctx: Context, worker: str | None, fate: TaskFate) -> TaskFate:
    if fate.verdict is not Verdict.AWAITING_REDELIVERY:
        return fate
    again = ctx.started_by_id.get(fate.id)
    same = again is not None and again.worker == worker and again.pid == fate.worker_pid
    if same:
        return fate
    return replace(fate, verdict=Verdict.REDELIVERED, state="STARTED" if again else "UNKNOWN")


def _stalls(ctx: Context, victims: set[str]) -> list[Signal]:
    signals: list[Signal] = []
    for task in sorted(ctx.started_by_id.values(), key=lambda t: t.id):
        if task.id in victims or task.written_at is None:
            continue
        limit = ctx.limit(task.name, ctx.limits_by_name)
        if limit is None:
            continue
        running = ctx.now - task.written_at
        if running <= limit + ctx.policy.stall_grace_s:
            continue
        signals.append(Signal(_stall_finding(task, running, limit)))
    return signals


def _stalls_over(ctx: Context, stalled: set[IncidentKey]) -> list[Resolution]:
    """An open task_stalled no longer STARTED past its limit: it finished, failed or died."""
    return [
        Resolution(key, text.gone_text(Kind.TASK_STALLED))
        for key in sorted(ctx.open_by_key)
        if key.kind is Kind.TASK_STALLED and key not in stalled
    ]


def _stall_finding(task: StartedTask, running: float, limit: float) -> Finding:
    name = task.name or "task"
    return Finding(
        kind=Kind.TASK_STALLED,
        severity=Severity.WARNING,
        worker=task.worker,
        evidence=(
            f"results: STARTED {running:.0f} s ago on {task.worker} pid {task.pid}",
            "sqs: no remote control on SQS; nothing shows whether the worker still runs it",
        ),
        tasks=(
            TaskFate(
                task.id, task.name, "STARTED", task.written_at, Verdict.RUNNING, None, task.pid
            ),
        ),
        summary=f"{name} [{task.id}] on {task.worker} has run {running:.0f} s, past its "
        f"{limit:.0f} s limit. {text.SQS_STALL_NOTE}",
        advice=(
            "Look at the worker's container or host: if it is gone, the task died with it "
            "(add its log group to OOMCHECK_LOG_GROUPS so the next death is seen).",
            "If it hangs, set time_limit on the task so Celery kills it.",
        ),
        key=keys.task_key(Kind.TASK_STALLED, task.id),
    )


def _visibility_timeout(view: SqsView | None) -> float:
    """When an acks_late message comes back: the longest visibility timeout of the watched
    queues (a task's queue is not in its STARTED record)."""
    timeouts = [q.visibility_timeout_s for q in view.queues] if view else []
    return max(timeouts) if timeouts else text.SQS_DEFAULT_VISIBILITY_S


# ------------------------------------------------------------------------------------- queues


def judge_queues(ctx: Context, carried: Carried) -> Outcome:
    """A Celery message in a dead-letter queue (task_dead_lettered, or poison_task where kills of
    it were seen), resolved when it leaves; queue_orphaned for a queue with waiting messages and
    none in flight (nobody receives from it) for OOMCHECK_QUEUE_ORPHAN_AFTER."""
    view = ctx.obs.sqs
    if not on_sqs(ctx) or view is None:
        return Outcome(QUEUE_KINDS, judged=False)
    signals = [Signal(_dead_finding(ctx, carried, d)) for d in _unique(view.dead_letters)]
    said = {s.key for s in signals}
    resolutions: list[Resolution] = []
    held: set[IncidentKey] = set()
    for key in ctx.open_by_key:
        if not key.subject.startswith(DLQ_PREFIX) or key in said:
            continue
        if key.kind not in (Kind.TASK_DEAD_LETTERED, Kind.POISON_TASK):
            continue
        if view.complete:
            resolutions.append(Resolution(key, text.SQS_DLQ_LEFT))
        else:
            held.add(key)
    orphans, since, over = _orphaned_queues(ctx, view.queues)
    return Outcome(
        QUEUE_KINDS,
        signals=(*signals, *orphans),
        resolutions=(*resolutions, *over),
        held=frozenset(held),
        carry=Carry(orphaned_since=since),
    )


def _unique(letters: Iterable[DeadLetter]) -> list[DeadLetter]:
    out: dict[str, DeadLetter] = {}
    for letter in letters:
        out.setdefault(_dlq_subject(letter), letter)
    return [out[k] for k in sorted(out)]


def _dlq_subject(letter: DeadLetter) -> str:
    return f"{DLQ_PREFIX}{letter.dead_letter_queue}:{letter.task_id or letter.message_id}"


def _dead_finding(ctx: Context, carried: Carried, letter: DeadLetter) -> Finding:
    record = carried.kills.get(letter.task_id) if letter.task_id else None
    kills = len(record.kills) if record else 0
    kind = Kind.POISON_TASK if kills else Kind.TASK_DEAD_LETTERED
    name = letter.name or "a message that is not a Celery task"
    ident = letter.task_id or letter.message_id
    received = (
        f", received {letter.receive_count} time(s)" if letter.receive_count is not None else ""
    )
    killed = f", its runs killed {kills} worker process(es)" if kills else ""
    kill_lines = tuple(
        f"kill: {k.how} on {k.worker} at {text.short_utc(k.at)}"
        for k in (record.kills[-3:] if record else ())
    )
    return Finding(
        kind=kind,
        severity=Severity.CRITICAL,
        worker=None,
        cause=record.kills[-1].cause if record else Cause.UNKNOWN,
        evidence=(
            f"sqs: {letter.dead_letter_queue} (dead-letter queue of {letter.queue}) holds "
            f"message {letter.message_id}{received}",
            *kill_lines,
        ),
        tasks=(
            TaskFate(ident, letter.name, "DEAD_LETTERED", letter.sent_at, Verdict.DEAD_LETTERED),
        ),
        summary=f"{name} [{ident}] was moved to the dead-letter queue {letter.dead_letter_queue} "
        f"by {letter.queue}'s redrive policy{received}{killed}; it will not run again by itself",
        advice=text.sqs_dead_letter_advice(letter.queue, letter.dead_letter_queue),
        key=IncidentKey(kind, _dlq_subject(letter)),
    )


def _orphaned_queues(
    ctx: Context, queues: Sequence[SqsQueue]
) -> tuple[list[Signal], Mapping[str, float], list[Resolution]]:
    signals: list[Signal] = []
    over: list[Resolution] = []
    since: dict[str, float] = {}
    for queue in sorted(queues, key=lambda q: q.name):
        if queue.name in ctx.policy.ignored_queues:
            continue
        key = keys.queue(queue.name)
        if queue.visible == 0 or queue.in_flight > 0:
            if ctx.open_incident(key) is not None:
                why = "the queue is empty" if queue.visible == 0 else "a worker receives again"
                over.append(Resolution(key, why))
            continue
        first = ctx.state.orphaned_since.get(queue.name, ctx.now)
        since[queue.name] = first
        if ctx.now - first >= ctx.policy.queue_orphan_after_s or ctx.open_incident(key):
            signals.append(Signal(_orphan_finding(queue, first)))
    return signals, since, over


def _orphan_finding(queue: SqsQueue, first: float) -> Finding:
    return Finding(
        kind=Kind.QUEUE_ORPHANED,
        severity=Severity.CRITICAL,
        worker=None,
        evidence=(
            f"sqs: {queue.name} holds {queue.visible:,} waiting message(s) and none in flight "
            f"since {text.short_utc(first)}",
        ),
        summary=f"queue {queue.name} has {queue.visible:,} message(s) and no live consumer: "
        f"nothing has received from it since {text.short_utc(first)}",
        advice=(
            f"Start a worker for it (celery -A <app> worker -Q {queue.name}); the messages wait "
            "and run once one consumes the queue.",
            "If nobody consumes it on purpose, list it in OOMCHECK_IGNORED_QUEUES.",
        ),
        key=keys.queue(queue.name),
    )
