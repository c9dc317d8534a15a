"""Kinds, severities, causes, verdicts, actions, run modes, delivery outcomes and source
statuses."""

from __future__ import annotations

from dataclasses import dataclass
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
    BEAT_STOPPED = "beat_stopped"
    # Amazon SQS: a Celery message the queue's redrive policy moved to its dead-letter queue
    TASK_DEAD_LETTERED = "task_dead_lettered"
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
    # in a dead-letter queue: it will not run again until someone moves it back
    DEAD_LETTERED = "dead_lettered"
    RUNNING = "running"
    UNKNOWN = "unknown"


class Action(StrEnum):
    OPEN = "open"
    # A material change of an open incident (cause, exit code or victim tasks became known):
    # sent once per change, threaded to the same incident id; PendingAlert.note says what changed.
    UPDATE = "update"
    REMIND = "remind"
    RESOLVE = "resolve"


class Mode(StrEnum):
    """How a run goes: a check (observe, evaluate, save, alert), an audit (read only: no alerts,
    no state writes) or one check of a watch (repeated checks)."""

    CHECK = "check"
    AUDIT = "audit"
    WATCH = "watch"
    # the weekly digest: reads the state's history by task type, sends one message, no check
    DIGEST = "digest"


class Delivery(StrEnum):
    """What became of one alert's message in a run (rendered in the report's ``alerts``)."""

    PUBLISHED = "published"
    # taken by the printer alone (no topic, chat topic or bus configured): shown, not published
    PRINTED = "printed"
    # publishing failed in a way that may pass (throttling, 5xx, a timeout): kept, retried next run
    FAILED = "failed"
    # not tried this run (an earlier failure stopped publishing, or the deadline was near): kept
    DEFERRED = "deferred"
    # refused for good (SNS refused the message itself, the reduced form too): dropped
    UNDELIVERABLE = "undeliverable"


class WorkerStatus(StrEnum):
    ALIVE = "alive"
    # A solo/threads worker inside a task does not answer remote control: not dead (yet).
    BUSY = "busy"
    LOST = "lost"
    DEPARTED = "departed"


class Source(StrEnum):
    INSPECT = "inspect"
    PRESENCE = "presence"
    # the broker's listing of its workers' pidbox queues: newcomers asked in the same check
    NEWCOMERS = "newcomers"
    RESULTS = "results"
    BROKER = "broker"
    QUEUES = "queues"
    SQS = "sqs"
    ECS = "ecs"
    EXITS = "exits"
    MEMORY = "memory"
    BEAT = "beat"
    STATE = "state"
    ALERTS = "alerts"
    # the silences read for this run (oomcheck.silences): an error means none held anything
    SILENCES = "silences"


class SourceState(StrEnum):
    OK = "ok"
    OFF = "off"  # not configured, or not possible with this broker/ACL: not a failure
    ERROR = "error"
    BUSY = "busy"  # state only: another run holds the lease, this run is read-only
    LOST = "lost lease"  # state only


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """How one source fared in a run; ``detail``: why it is off, busy or failed, or, when ok,
    what it is (the alerts' channels). Rendered as a string only in the report
    (oomcheck.report.document.source_text)."""

    state: SourceState
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.state is SourceState.ERROR
