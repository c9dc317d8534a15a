"""The words oomcheck says: causes, task fates, advice, times, and per kind its alert headlines
and why its incident closed; shared by detection and alerts, said once here.

Pure functions of model values; nothing here decides anything.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from oomcheck.model import BeatEntry, Cause, Kind, Policy, TaskFate, Verdict

CAUSE_WORDS = {
    Cause.OOM_KILLED: "OOM-killed",
    Cause.KILLED: "killed",
    Cause.EXITED: "exited",
    Cause.TIME_LIMIT: "over its time limit",
    Cause.UNKNOWN: "",
}


def utc(ts: float | None) -> str:
    if ts is None:
        return "unknown"
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def short_utc(ts: float | None) -> str:
    if ts is None:
        return "?"
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%H:%M:%S UTC")


def cause_words(cause: Cause, exit_code: int | None) -> str:
    """ "OOM-killed, exit 137", "killed", "exit 1" or "" when nothing is known."""
    words = CAUSE_WORDS[cause]
    code = f"exit {exit_code}" if exit_code is not None else ""
    return ", ".join(part for part in (words, code) if part)


def cause_suffix(cause: Cause, exit_code: int | None) -> str:
    """For a headline: ", OOM-killed (exit 137)", " (exit 1)" or ""."""
    words = CAUSE_WORDS[cause]
    code = f" (exit {exit_code})" if exit_code is not None else ""
    return f", {words}{code}" if words else code


def cause_phrase(cause: Cause, exit_code: int | None) -> str:
    """For a summary sentence: like cause_suffix, but an unknown cause says so."""
    if cause == Cause.UNKNOWN and exit_code is None:
        return " without a trace"
    if cause == Cause.TIME_LIMIT:
        return ", past its time limit"
    return cause_suffix(cause, exit_code)


def verdict_word(verdict: Verdict) -> str:
    return verdict.value.replace("_", " ")


def fates_text(fates: Iterable[TaskFate]) -> str:
    """ "3 task(s): 1 awaiting redelivery, 2 lost" or ""."""
    counts: dict[str, int] = {}
    for fate in fates:
        word = verdict_word(fate.verdict)
        counts[word] = counts.get(word, 0) + 1
    if not counts:
        return ""
    total = sum(counts.values())
    parts = ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))
    return f"{total} task(s): {parts}"


# Where an acks_late message waits on Redis (TaskFate.waits_in None).
UNACKED_SET = "still in the broker's unacked set"


def fate_line(fate: TaskFate) -> str:
    name = fate.name or "task"
    where = f" on pid {fate.worker_pid}" if fate.worker_pid else ""
    started = f", started {short_utc(fate.started_at)}" if fate.started_at else ""
    what = {
        Verdict.LOST: "LOST - its message was acknowledged; it will not run again by itself",
        Verdict.AWAITING_REDELIVERY: "awaiting redelivery"
        + (f" at about {short_utc(fate.redeliver_at)}" if fate.redeliver_at else "")
        + f" ({fate.waits_in or UNACKED_SET})",
        Verdict.REDELIVERED: "redelivered - it is queued or running again",
        Verdict.KILL_LOOP: "in a KILL LOOP - every run of it kills its process",
        Verdict.DEAD_LETTERED: "DEAD-LETTERED - in a dead-letter queue; it will not run again "
        "until it is moved back",
        Verdict.RUNNING: "still running",
        Verdict.UNKNOWN: "fate unknown",
    }[fate.verdict]
    return f"  - {name} [{fate.id}]{where}{started}: {what}"


def death_advice(
    cause: Cause, fates: Iterable[TaskFate], visibility_timeout_s: float
) -> tuple[str, ...]:
    advice: list[str] = []
    fates = tuple(fates)
    if cause == Cause.OOM_KILLED:
        advice.append(
            "Raise the worker's memory limit or lower its concurrency, and set "
            "worker_max_memory_per_child so a bloated child is replaced before the kernel kills it."
        )
    lost = [f for f in fates if f.verdict == Verdict.LOST]
    if lost:
        advice.append(
            "Lost tasks will not run again by themselves: re-send them if they matter ("
            + ", ".join(f"{f.name or 'task'}[{f.id}]" for f in lost[:5])
            + "). acks_late=True makes Celery keep the message until the task ends."
        )
    if any(f.verdict == Verdict.AWAITING_REDELIVERY for f in fates):
        advice.append(
            "Tasks awaiting redelivery return to the queue once the broker's visibility_timeout "
            f"({visibility_timeout_s:.0f} s) passes; if one of them caused the death it may "
            "kill the next worker too."
        )
    if not advice:
        advice.append("Check the worker's host or container logs for why it stopped.")
    return tuple(advice)


# An alert's headline for one finding of a kind ({worker}, {cause}: cause_suffix, {subject}: the
# incident key's subject) and for a group of n; a kind without an entry is named as it is.
HEADLINES: dict[Kind, str] = {
    Kind.WORKER_LOST: "{worker} died{cause}",
    Kind.WORKER_RESTARTED: "{worker} restarted{cause}",
    Kind.CHILD_KILLED: "pool process killed{cause} on {worker}",
    Kind.TASK_ORPHANED: "tasks orphaned on {worker}",
    Kind.TASK_STALLED: "task stalled on {worker}",
    Kind.POISON_TASK: "poison task in a kill loop{cause}",
    Kind.OOM_KILL: "OOM kill on an unknown worker",
    Kind.SOURCE_UNAVAILABLE: "a source is unavailable",
    Kind.MEMORY_PRESSURE: "{worker} near its memory limit",
    Kind.QUEUE_ORPHANED: "queue {subject} has no live consumer",
    Kind.BEAT_STOPPED: "celery beat stopped: periodic tasks are not sent{cause}",
    Kind.TASK_DEAD_LETTERED: "task moved to a dead-letter queue",
}
GROUP_HEADLINES: dict[Kind, str] = {
    Kind.WORKER_LOST: "{n} workers died{cause}",
    Kind.WORKER_RESTARTED: "{n} workers restarted{cause}",
    Kind.CHILD_KILLED: "pool processes killed{cause} on {n} workers",
    Kind.TASK_ORPHANED: "tasks orphaned on {n} workers",
    Kind.TASK_STALLED: "{n} tasks stalled",
    Kind.POISON_TASK: "{n} poison tasks in kill loops{cause}",
    Kind.OOM_KILL: "{n} OOM kills on unknown workers",
    Kind.SOURCE_UNAVAILABLE: "{n} sources unavailable",
    Kind.MEMORY_PRESSURE: "{n} workers near their memory limit",
    Kind.QUEUE_ORPHANED: "{n} queues with no live consumer",
    Kind.BEAT_STOPPED: "{n} beat schedules stopped{cause}",
    Kind.TASK_DEAD_LETTERED: "{n} tasks moved to dead-letter queues",
}


def headline(kind: Kind) -> str:
    """The one-finding headline template of ``kind`` (see HEADLINES)."""
    return HEADLINES.get(kind, kind.value)


def group_headline(kind: Kind) -> str:
    """The group headline template of ``kind``: ``{n}`` findings, ``{cause}`` shared."""
    return GROUP_HEADLINES.get(kind, "{n} x " + kind.value)


# Why an incident closed, when nothing more particular is known.
GONE = "the condition is gone"

# Why an incident of a kind closed when its rule no longer sees the condition.
GONE_TEXTS: dict[Kind, str] = {
    Kind.TASK_STALLED: "the task is no longer running",
    Kind.TASK_ORPHANED: "no orphaned STARTED record remains",
    Kind.POISON_TASK: "the task has stopped dying and is not queued on any worker",
    Kind.BEAT_STOPPED: "the schedule advances again: no entry is overdue",
    Kind.TASK_DEAD_LETTERED: "the message left the dead-letter queue",
}


def gone_text(kind: Kind) -> str:
    return GONE_TEXTS.get(kind, GONE)


# ---------------------------------------------------------------------------------------------
# beat_stopped


def beat_entry_line(entry: BeatEntry, missed: int, now: float) -> str:
    """One overdue entry: its name and task, since when, the runs it missed, its schedule."""
    last = f"last ran {short_utc(entry.last_run_at)}" if entry.last_run_at else "never ran"
    late = now - (entry.next_due_at or now)
    return (
        f"entry {entry.name} ({entry.task or '?'}): due {short_utc(entry.next_due_at)}, "
        f"{late:.0f} s ago, {missed} run(s) missed; {entry.schedule}, {last}"
    )


PERIODIC = "periodic: "


def periodic_line(task: str, entry: BeatEntry, now: float) -> str:
    """A dead task's beat entry: beat does not resend the run that died; the next is due then."""
    due = entry.next_due_at
    when = "not known" if due is None else short_utc(due) + (" (overdue)" if due < now else "")
    return (
        f"{PERIODIC}{task} is sent by beat entry {entry.name} ({entry.schedule}); beat does not "
        f"resend the run that died; its next run: {when}"
    )


def beat_lock_words(held: bool, ttl_s: float | None) -> str:
    if not held:
        return "lock: free, no beat holds it (beat is not running)"
    if ttl_s is None:
        return "lock: held with no expiry, yet nothing is sent"
    return (
        f"lock: held, expires in {ttl_s:.0f} s, yet nothing is sent (the beat that took it died "
        "and the lock has not expired yet, or it hangs)"
    )


def beat_advice(held: bool, ttl_s: float | None, cause: Cause, policy: Policy) -> tuple[str, ...]:
    app = policy.app_name or "<your_app>"
    advice = [
        f"Start beat again (celery -A {app} beat -S redbeat.RedBeatScheduler): missed runs are "
        "not caught up, each entry runs next at its next due time; send the ones that matter "
        "by hand."
    ]
    if held:
        advice.append(
            "A new beat waits for the lock"
            + (f" (about {ttl_s:.0f} s more)" if ttl_s is not None else "")
            + "; if the beat holding it is gone, a shorter redbeat_lock_timeout lets the next "
            "one take over sooner."
        )
    if cause is Cause.OOM_KILLED:
        advice.append(
            "Beat was OOM-killed: give its container more memory; beat itself is small, so "
            "look for a large schedule or a task module imported into beat."
        )
    if not policy.beat_containers:
        advice.append(
            "Name beat's container or service in OOMCHECK_BEAT_CONTAINERS for the alert to say "
            "how it died."
        )
    return tuple(advice)


# ------------------------------------------------------------------------- Celery on Amazon SQS

# kombu's SQS transport creates queues with this visibility timeout when none is configured.
SQS_DEFAULT_VISIBILITY_S = 1800.0
SQS_UNKNOWN_ACK_ADVICE = (
    "The ack mode of some tasks is not known, so neither is whether their messages survive: "
    "run oomcheck with -A <app>, or set OOMCHECK_TASK_ACKS_LATE "
    '(e.g. {"shop.tasks.report": true, "*": false}).'
)
SQS_STALL_NOTE = (
    "On SQS a hung task and a dead worker without exit evidence look alike: no remote control "
    "can ask the worker."
)
SQS_DLQ_LEFT = "the message left the dead-letter queue (moved back by a redrive, or purged)"


def sqs_dead_letter_advice(queue: str, dead_letter_queue: str) -> tuple[str, ...]:
    return (
        "Find out why every run of it failed or died (a kill on each receive: memory); fix it.",
        f"Then move it back with SQS's redrive (aws sqs start-message-move-task --source-arn "
        f"<ARN of {dead_letter_queue}> --destination-arn <ARN of {queue}>), or purge "
        f"{dead_letter_queue} if it must not run.",
    )


# --------------------------------------------------------------------------------------------
# History by task type (the audit's top killers, the digest)


def task_type_advice(
    name: str, *, deaths: int, oom: int, peak_share: float | None, lost: int, onsets: int
) -> list[str]:
    """What to do about a task type that keeps dying: the seed's advice, given where it fits."""
    advice: list[str] = []
    heavy = oom > 0 or (peak_share is not None and peak_share >= 0.9) or onsets > 0
    if heavy:
        advice.append(
            f"route {name} to a dedicated queue (task_routes={{'{name}': {{'queue': 'heavy'}}}}) "
            "served by workers with a larger memory limit and a lower --concurrency"
        )
    if deaths >= 2 and heavy:
        advice.append(
            f"process {name}'s input in chunks (celery's chunks() or smaller batches per call) "
            "so one call never holds the whole of it"
        )
    if onsets > 0 or heavy:
        advice.append(
            "recycle pool children before they grow: worker_max_memory_per_child "
            "(KiB) below the limit divided by the concurrency"
        )
    if lost > 0:
        advice.append(
            f"{lost} {name} task(s) were lost: make it safe to run twice, then acks_late=True "
            "with reject_on_worker_lost=True so a kill redelivers it (once the memory is fixed: "
            "a task that kills every worker it runs on then loops, as poison_task)"
        )
    if not advice:
        advice.append(f"{name} died without memory evidence: read the deaths' evidence")
    return advice


# Kinds whose subject is not a worker: an alert names no worker for them (rather than "unknown")
NOT_ABOUT_A_WORKER = frozenset(
    {Kind.BEAT_STOPPED, Kind.QUEUE_ORPHANED, Kind.SOURCE_UNAVAILABLE, Kind.CONFIG_RISK}
)


def quorum_destination(exchange: str, routing_key: str | None) -> str:
    """Where a RabbitMQ quorum queue dead-letters a message over its delivery limit."""
    key = f"routing key {routing_key!r}" if routing_key else "its own routing key"
    return f"dead-letter exchange {exchange!r} ({key})"


def quorum_line(queue: str, limit: int, kills: int, destination: str | None) -> str:
    """The evidence line of a kill loop on a quorum queue with a delivery limit: RabbitMQ returns
    a message killed mid-task (reject_on_worker_lost) and counts each return; over the limit it
    dead-letters the message, or drops it without a dead-letter exchange."""
    over = destination or "drops it"
    head = f"rabbitmq: quorum queue {queue} has x-delivery-limit {limit}"
    if kills > limit:
        return f"{head}: {kills} deliveries killed, over the limit, so the broker {over}"
    return f"{head}: {kills} of {limit + 1} deliveries killed; at the limit the broker {over}"


QUORUM_DROPPED = "dropped by the delivery limit"


def quorum_advice(queue: str, exchange: str | None) -> tuple[str, ...]:
    """What to do once the broker has taken a kill loop's message out of ``queue``."""
    fix = "Find why every run of it dies (a kill on each delivery: memory) and fix it."
    if exchange is None:
        return (
            fix,
            f"Its message is gone: {queue} has no x-dead-letter-exchange, so RabbitMQ dropped "
            "it at the delivery limit. Send the task again once it is fixed; set a dead-letter "
            "exchange on the queue to keep the next one.",
        )
    return (
        fix,
        f"Then move it back from the queue bound to {exchange!r} (a shovel, or read and "
        "re-publish it), or purge it: it will not run again by itself.",
    )
