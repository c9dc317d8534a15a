"""What is kept between runs, and the thresholds of evaluate()."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from oomcheck.model.findings import Finding, IncidentKey, TaskFate
from oomcheck.model.kinds import Action, Cause, Kind, WorkerStatus
from oomcheck.model.observation import ActiveTask, TaskLimits

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
    # Its long-lived pub/sub connections to the broker, learned while every worker on its
    # address answered (oomcheck.sources.presence.owners); None: not learned.
    subscriptions: int | None = None
    # its connections carry its nodename as their name (oomcheck.naming)
    named_connections: bool = False


@dataclass(frozen=True, slots=True)
class Kill:
    worker: str | None
    pid: int | None
    at: float
    how: str  # short evidence: "worker lost", "WorkerLostError signal 9", "child pid changed"
    # what the evidence said of the death where it was parsed (kernel/ECS OOM, signal 9...)
    cause: Cause = Cause.UNKNOWN


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
    # Channels (their describe() names) that took this alert in an earlier run while another
    # failed: the retry goes to the others only, in any process.
    taken: tuple[str, ...] = ()


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
    # Task id -> the verdict last sent as a task event (oomcheck.alerting.taskevents)
    task_events: Mapping[str, str] = field(default_factory=dict)
    # Task events a run could not send (its deadline, a throttle), kept whole: the state keeps
    # only the first tasks of a finding, and these must go out next run all the same
    task_events_due: tuple[TaskFate, ...] = ()

    @property
    def is_open(self) -> bool:
        return self.closed_at is None


@dataclass(frozen=True, slots=True)
class MemoryPoint:
    """One remembered memory sample of a worker's container (kept only while above threshold)."""

    at: float
    used_mb: float
    limit_mb: float
    # what limit_mb is, in words: "limit" (the container's hard limit), "ECS reservation",
    # "EKS request", "EKS node memory" (oomcheck.detect.rules.memory.basis_words)
    basis: str = "limit"


@dataclass(frozen=True, slots=True)
class TaskDeath:
    """One death a task type was in: the incident (one per death), what killed it, how many of
    its tasks were running and what became of them."""

    incident_id: str
    at: float
    kind: Kind  # worker_lost, worker_restarted, child_killed or task_orphaned
    cause: Cause
    worker: str | None
    victims: int
    lost: int = 0
    redelivered: int = 0  # awaiting redelivery or redelivered
    # the highest share of its memory limit the worker's container reached before the death
    # (from the memory_pressure samples kept; None when none was above the threshold)
    peak_share: float | None = None


@dataclass(frozen=True, slots=True)
class PressureOnset:
    """A memory_pressure episode that began while a task of this type was running."""

    incident_id: str
    at: float
    worker: str


@dataclass(frozen=True, slots=True)
class TaskHistory:
    """What one task type (a task name) went through within the history window; written only
    when a death or a pressure onset is added or changes."""

    name: str
    deaths: tuple[TaskDeath, ...] = ()
    pressure: tuple[PressureOnset, ...] = ()

    @property
    def last_at(self) -> float:
        return max((*(d.at for d in self.deaths), *(p.at for p in self.pressure)), default=0.0)


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
    # Nodenames with a pidbox binding on the broker that were asked once and did not answer (a
    # killed worker's leftover binding): not asked again while the binding stays.
    stale_bindings: tuple[str, ...] = ()
    # worker -> its latest samples above the memory threshold, oldest first (empty: absent)
    pressure: Mapping[str, tuple[MemoryPoint, ...]] = field(default_factory=dict)
    # queue -> since when it has held messages with no live consumer
    orphaned_since: Mapping[str, float] = field(default_factory=dict)
    # task name -> the deaths and pressure onsets it was in (oomcheck.detect.history)
    task_history: Mapping[str, TaskHistory] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class QuorumLimit:
    """A RabbitMQ quorum queue's ``x-delivery-limit`` and where the broker sends a message over
    it: to ``dead_letter_exchange`` (with ``dead_letter_routing_key``, or the message's own
    routing key when None), or nowhere (dropped) when there is no dead-letter exchange."""

    delivery_limit: int
    dead_letter_exchange: str | None = None
    dead_letter_routing_key: str | None = None


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
    # beat_stopped: an entry overdue by more than this is not a late tick but a stopped beat
    beat_grace_s: float = 60.0
    # ECS/EKS container (or service, host) names, globs, that run beat: their exits explain it
    beat_containers: tuple[str, ...] = ()
    # Amazon SQS: each task's acks_late by name ("*": every other task); a task not covered has
    # an unknown ack mode, so what its death did to its message is unknown.
    task_acks_late: Mapping[str, bool] = field(default_factory=dict)
    # RabbitMQ: quorum queues with a delivery limit (queue name -> limit), and each task's queue
    # by name ("*": the default queue), so a kill loop's end is known without the management API
    quorum_queues: Mapping[str, QuorumLimit] = field(default_factory=dict)
    task_queues: Mapping[str, str] = field(default_factory=dict)
    # how long the history by task type keeps a death or a pressure onset
    history_retention_s: float = 30 * 24 * 3600.0
