"""The vocabulary of oomcheck: what sources observe, what evaluate() finds, what state keeps.

Everything here is an immutable value. Times are POSIX seconds (float, UTC) unless a name says
otherwise; None always means "not known", never zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class Kind(StrEnum):
    WORKER_LOST = "worker_lost"
    WORKER_DEPARTED = "worker_departed"
    WORKER_RESTARTED = "worker_restarted"
    CHILD_KILLED = "child_killed"
    TASK_ORPHANED = "task_orphaned"
    TASK_STALLED = "task_stalled"
    POISON_TASK = "poison_task"
    OOM_KILL = "oom_kill"
    MEMORY_PRESSURE = "memory_pressure"
    QUEUE_ORPHANED = "queue_orphaned"
    WORKER_RECOVERED = "worker_recovered"
    SOURCE_UNAVAILABLE = "source_unavailable"
    CONFIG_RISK = "config_risk"


class Severity(StrEnum):
    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"


class Cause(StrEnum):
    OOM_KILLED = "oom_killed"
    KILLED = "killed"
    EXITED = "exited"
    TIME_LIMIT = "time_limit"
    UNKNOWN = "unknown"


class Verdict(StrEnum):
    """What became of a task whose process died (or, for stalled tasks, that it still runs)."""

    LOST = "lost"
    AWAITING_REDELIVERY = "awaiting_redelivery"
    REDELIVERED = "redelivered"
    KILL_LOOP = "kill_loop"
    RUNNING = "running"
    UNKNOWN = "unknown"


class Action(StrEnum):
    OPEN = "open"
    # A material change of an open incident (cause, exit code or victim tasks became known):
    # sent once per change, threaded to the same incident id; PendingAlert.note says what changed.
    UPDATE = "update"
    REMIND = "remind"
    RESOLVE = "resolve"


class WorkerStatus(StrEnum):
    ALIVE = "alive"
    # A solo/threads worker inside a task does not answer remote control: not dead (yet).
    BUSY = "busy"
    LOST = "lost"
    DEPARTED = "departed"


class Source(StrEnum):
    INSPECT = "inspect"
    PRESENCE = "presence"
    RESULTS = "results"
    BROKER = "broker"
    QUEUES = "queues"
    EXITS = "exits"
    MEMORY = "memory"
    STATE = "state"
    ALERTS = "alerts"


class SourceState(StrEnum):
    OK = "ok"
    OFF = "off"  # not configured, or not possible with this broker/ACL: not a failure
    ERROR = "error"
    BUSY = "busy"  # state only: another run holds the lease, this run is read-only
    LOST = "lost lease"  # state only


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """How one source fared in a run. Rendered as a string only in the report."""

    state: SourceState
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.state is SourceState.ERROR

    def __str__(self) -> str:
        return f"{self.state.value}: {self.detail}" if self.detail else self.state.value


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


# --------------------------------------------------------------------------------------------
# Findings


@dataclass(frozen=True, slots=True, order=True)
class IncidentKey:
    """What makes two findings the same incident: a kind and its subject (a worker incarnation
    ``name@boot``, a task id, a source, an event id). Rendered as text only for storage."""

    kind: Kind
    subject: str

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.subject}"

    @classmethod
    def parse(cls, text: str) -> IncidentKey:
        """The inverse of str(): only the state codec reads keys back."""
        kind, _, subject = text.partition(":")
        return cls(Kind(kind), subject)


@dataclass(frozen=True, slots=True)
class TaskFate:
    id: str
    name: str | None
    state: str  # the result-backend state as last seen: STARTED, FAILURE, ... or "UNKNOWN"
    started_at: float | None
    verdict: Verdict
    redeliver_at: float | None = None
    worker_pid: int | None = None


@dataclass(frozen=True, slots=True)
class Finding:
    kind: Kind
    severity: Severity
    worker: str | None
    cause: Cause = Cause.UNKNOWN
    exit_code: int | None = None
    evidence: tuple[str, ...] = ()
    tasks: tuple[TaskFate, ...] = ()
    first_seen: float = 0.0
    incident_id: str | None = None
    summary: str = ""
    advice: tuple[str, ...] = ()
    key: IncidentKey | None = None

    @property
    def alertable(self) -> bool:
        return self.severity in (Severity.CRITICAL, Severity.WARNING)


# --------------------------------------------------------------------------------------------
# State kept between runs


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    """The roster's memory of one worker, changed only when something about it changes."""

    name: str
    pid: int
    boot_at: float  # now - uptime when first seen in this incarnation
    pool: str
    pool_pids: tuple[int, ...]
    status: WorkerStatus
    first_seen: float
    changed_at: float
    active: tuple[ActiveTask, ...] = ()
    limits: Mapping[str, TaskLimits] = field(default_factory=dict)
    incident_id: str | None = None
    # The queues it consumed when last seen (active_queues()): who consumed a queue left orphaned.
    queues: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Kill:
    worker: str | None
    pid: int | None
    at: float
    how: str  # short evidence: "worker lost", "WorkerLostError signal 9", "child pid changed"


@dataclass(frozen=True, slots=True)
class KillRecord:
    """Deaths of processes that were running one task id: the basis of poison_task."""

    task_id: str
    name: str | None
    kills: tuple[Kill, ...]

    @property
    def last_at(self) -> float:
        return max(k.at for k in self.kills)


@dataclass(frozen=True, slots=True)
class PendingAlert:
    action: Action
    queued_at: float
    attempts: int = 0
    last_error: str | None = None
    # For an update: what changed, in words ("now known: OOM-killed, exit 137").
    note: str | None = None
    # Counts the incident's messages: with the incident id and action it makes the dedup key.
    seq: int = 0


@dataclass(frozen=True, slots=True)
class Incident:
    id: str
    key: IncidentKey
    kind: Kind
    opened_at: float
    finding: Finding
    closed_at: float | None = None
    resolution: str | None = None
    pending: tuple[PendingAlert, ...] = ()
    last_alert_at: float | None = None
    alerts_sent: int = 0
    # Live workers before a worker_lost: the incident closes when the fleet is back to this size.
    fleet_size: int | None = None

    @property
    def is_open(self) -> bool:
        return self.closed_at is None


@dataclass(frozen=True, slots=True)
class MemoryPoint:
    """One remembered memory sample of a worker's container (kept only while above threshold)."""

    at: float
    used_mb: float
    limit_mb: float


@dataclass(frozen=True, slots=True)
class State:
    workers: Mapping[str, WorkerRecord] = field(default_factory=dict)
    incidents: Mapping[str, Incident] = field(default_factory=dict)
    kills: Mapping[str, KillRecord] = field(default_factory=dict)
    # source -> consecutive failed runs
    source_failures: Mapping[str, int] = field(default_factory=dict)
    # CloudWatch event id -> when it happened: evidence already used
    processed_events: Mapping[str, float] = field(default_factory=dict)
    # result-backend failures already counted: task id -> written_at of that failure record
    processed_failures: Mapping[str, float] = field(default_factory=dict)
    last_run_at: float | None = None
    last_discovery_at: float | None = None
    scan_cursor: str | None = None
    # worker -> its latest samples above the memory threshold, oldest first (empty: absent)
    pressure: Mapping[str, tuple[MemoryPoint, ...]] = field(default_factory=dict)
    # queue -> since when it has held messages with no live consumer
    orphaned_since: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Policy:
    """Thresholds of evaluate(). Seconds throughout."""

    visibility_timeout_s: float = 3600.0  # the Redis broker's visibility_timeout
    remind_after_s: float = 3600.0
    poison_kills: int = 3
    poison_window_s: float = 6 * 3600.0
    # A poison incident closes once its task has not run or died for this long.
    poison_quiet_s: float = 900.0
    # Limits for task_stalled when a task registered no time_limit: per name, then a default.
    task_expectations: Mapping[str, float] = field(default_factory=dict)
    default_task_limit_s: float | None = None
    stall_grace_s: float = 30.0
    # A solo/threads worker that does not answer is presumed busy for this long when its task
    # has no known limit.
    busy_limit_s: float = 3600.0
    restart_tolerance_s: float = 5.0
    # A STARTED record must be this much older than the inspect replies before a pid missing from
    # the pool counts as a dead child (a child may fork between stats() and the scan).
    pid_grace_s: float = 2.0
    source_alert_after: int = 3
    incident_expiry_s: float = 24 * 3600.0
    retention_s: float = 7 * 24 * 3600.0
    # WorkerLostError records older than this when first seen are reported, not alerted.
    failure_lookback_s: float = 900.0
    app_name: str | None = None
    # Evidence host (exact or glob: IP, hostname, pod name) -> worker nodename (exact or glob),
    # for fleets whose nodenames do not contain the host.
    worker_map: Mapping[str, str] = field(default_factory=dict)
    # memory_pressure: a container's use over this share of its limit for this many samples
    memory_threshold: float = 0.9
    memory_samples: int = 2
    # queue_orphaned: a queue with messages and no consumer that no known worker ever consumed
    # is reported after this long (one whose last consumer died or left, at once)
    queue_orphan_after_s: float = 300.0
    ignored_queues: frozenset[str] = frozenset()
