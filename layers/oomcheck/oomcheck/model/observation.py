"""What one run observed: built by the adapters in oomcheck.sources."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from oomcheck.model.beat import BeatSchedule
from oomcheck.model.kinds import Cause

# --------------------------------------------------------------------------------------------
# Observations: what one run saw. Built by the adapters in oomcheck.sources.


@dataclass(frozen=True, slots=True)
class TaskLimits:
    """A task's settings as the worker registered them (`inspect().registered(...)`)."""

    time_limit: float | None = None
    soft_time_limit: float | None = None
    acks_late: bool | None = None
    reject_on_worker_lost: bool | None = None


@dataclass(frozen=True, slots=True)
class ActiveTask:
    """A task a worker reported in `inspect().active()`, or remembered from a previous run."""

    id: str
    name: str | None = None
    worker_pid: int | None = None
    time_start: float | None = None
    acknowledged: bool | None = None
    redelivered: bool = False


@dataclass(frozen=True, slots=True)
class WorkerSnapshot:
    """One worker's answer to stats/active/registered in this run."""

    name: str
    pid: int
    uptime_s: float
    pool: str = "prefork"  # prefork | solo | threads | gevent | eventlet | custom
    pool_pids: tuple[int, ...] = ()
    max_concurrency: int | None = None
    # None when the worker answered stats() but not active(): then nothing is known of its tasks.
    active: tuple[ActiveTask, ...] | None = ()
    registered: Mapping[str, TaskLimits] = field(default_factory=dict)
    rss_kib: int | None = None
    # True when it missed the broadcast and answered only the direct re-ping.
    reping: bool = False
    # The queues it consumes (`inspect().active_queues()`); None when not asked or no answer.
    queues: tuple[str, ...] | None = None
    # Its long-lived pub/sub connections to the broker, learned this run (broker presence);
    # None: not learned this run.
    subscriptions: int | None = None
    # whether its connections carry its nodename as their name (learned with subscriptions)
    named_connections: bool = False


@dataclass(frozen=True, slots=True)
class StartedTask:
    """A STARTED record in the result backend. `written_at` comes from the key's TTL."""

    id: str
    worker: str | None
    pid: int | None
    name: str | None = None
    written_at: float | None = None


@dataclass(frozen=True, slots=True)
class LostFailure:
    """A FAILURE record whose exception is WorkerLostError: a pool child died under its task."""

    id: str
    message: str
    name: str | None = None
    worker: str | None = None
    signal: int | None = None
    exitcode: int | None = None
    written_at: float | None = None
    # from the message where it was parsed: ``killed`` for signal 9, else unknown
    cause: Cause = Cause.UNKNOWN


@dataclass(frozen=True, slots=True)
class UnackedMessage:
    """A message a Redis-broker worker fetched but has not acked (acks_late, or prefetched)."""

    task_id: str
    name: str | None
    delivery_tag: str
    fetched_at: float | None
    redelivered: bool = False


@dataclass(frozen=True, slots=True)
class ExitEvidence:
    """A process or container death reported outside Celery (CloudWatch: ECS, EKS, kernel)."""

    source: str  # ecs | eks | kernel | local
    event_id: str
    at: float
    cause: Cause
    exit_code: int | None
    text: str
    # Ways to tie it to a worker; any may be None.
    hosts: tuple[str, ...] = ()
    pid: int | None = None
    process: str | None = None
    clean: bool = False


@dataclass(frozen=True, slots=True)
class Presence:
    """What the broker shows of a worker that did not answer remote control.

    ``present``: True while it still holds its broker connections (busy or frozen, not dead),
    False once they are gone (dead), None when the broker's view cannot tell this worker apart
    (then detection behaves as without the source, and ``evidence`` says why).
    """

    worker: str
    present: bool | None
    evidence: str
    # When its connections were last seen (broker clock), if known.
    last_seen: float | None = None
    # Once its connections are gone: whether it closed its channels as a clean shutdown does
    # (True: kombu removed its pidbox binding), or died holding them (False: a SIGKILL or OOM kill
    # leaves the binding behind). None: the broker cannot tell (RabbitMQ deletes the queue either
    # way) or it is not gone.
    closed_cleanly: bool | None = None


@dataclass(frozen=True, slots=True)
class PidboxNames:
    """The nodenames the broker holds a pidbox queue (or binding) for, and how many entries of
    its listing were skipped as malformed (data from the network, counted, never acted on)."""

    names: frozenset[str]
    skipped: int = 0


@dataclass(frozen=True, slots=True)
class MemorySample:
    """A container's memory use at one instant (Container Insights performance events)."""

    source: str  # ecs | eks
    event_id: str
    at: float
    used_mb: float
    # The container's hard limit; None when unknown (then ``basis`` says what limit_mb is).
    limit_mb: float | None
    basis: str  # "hard limit" | "reservation" | "node allocatable" ...: what the share is of
    # Ways to tie it to a worker (pod name, task IP or id), as in ExitEvidence.
    hosts: tuple[str, ...] = ()
    container: str | None = None

    @property
    def share(self) -> float | None:
        return self.used_mb / self.limit_mb if self.limit_mb else None


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """A broker queue's backlog: Redis list (with priority sub-lists) or RabbitMQ queue."""

    name: str
    messages: int
    # Consumers the broker counts (RabbitMQ); None where the broker does not say (Redis).
    consumers: int | None = None
    # When the oldest waiting message was published, where the broker shows it.
    oldest_at: float | None = None


@dataclass(frozen=True, slots=True)
class SqsQueue:
    """An Amazon SQS queue's attributes (GetQueueAttributes): never a message of it."""

    name: str  # as Celery names it (without queue_name_prefix)
    visible: int  # ApproximateNumberOfMessages: waiting
    in_flight: int  # ApproximateNumberOfMessagesNotVisible: received, not yet deleted
    visibility_timeout_s: float
    # From its RedrivePolicy: the dead-letter queue's name and the receives before a move.
    dead_letter_queue: str | None = None
    max_receive_count: int | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A Celery message in a dead-letter queue, looked at without taking it."""

    queue: str  # the live queue whose redrive policy names the dead-letter queue
    dead_letter_queue: str
    message_id: str
    task_id: str | None
    name: str | None
    receive_count: int | None
    sent_at: float | None = None


@dataclass(frozen=True, slots=True)
class SqsView:
    """One run's read of the SQS queues and their dead-letter queues. ``complete``: every message
    the dead-letter queues count was seen (a message not seen may still be there otherwise)."""

    queues: tuple[SqsQueue, ...]
    dead_letters: tuple[DeadLetter, ...]
    complete: bool = True


@dataclass(frozen=True, slots=True)
class Observation:
    """Everything one run saw. A source that failed is None and has an entry in `errors`."""

    at: float
    workers: Mapping[str, WorkerSnapshot] | None
    started: tuple[StartedTask, ...] | None = ()
    lost_failures: tuple[LostFailure, ...] | None = ()
    unacked: tuple[UnackedMessage, ...] | None = ()
    exits: tuple[ExitEvidence, ...] | None = ()
    # Result-backend status of specific task ids the runner asked about (tasks that were active on
    # a worker that has since gone); a missing id means no result record exists.
    task_status: Mapping[str, str] = field(default_factory=dict)
    errors: Mapping[str, str] = field(default_factory=dict)
    broker_transport: str = "redis"  # redis | amqp | other
    # When the inspect replies were gathered; STARTED records written before this instant must
    # belong to tasks that active() would have listed.
    inspected_at: float | None = None
    keys_scanned: int = 0
    skipped_values: int = 0
    # Broker presence of the workers that did not answer; None when the source is off or failed.
    presence: Mapping[str, Presence] | None = None
    # Container memory samples since the last run (oldest first); None when off or failed.
    memory: tuple[MemorySample, ...] | None = None
    # Queue backlogs; None when the source is off or failed.
    queues: tuple[QueueDepth, ...] | None = None
    # The periodic schedule (RedBeat); None when the source is off or failed.
    beat: BeatSchedule | None = None
    # Amazon SQS broker: its queues and dead letters; None when off or failed.
    sqs: SqsView | None = None
