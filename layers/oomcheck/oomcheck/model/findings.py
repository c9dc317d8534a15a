"""What evaluate() finds, and the keys that make findings one incident."""

from __future__ import annotations

from dataclasses import dataclass

from oomcheck.model.kinds import Cause, Kind, Severity, Verdict

# --------------------------------------------------------------------------------------------
# Findings


@dataclass(frozen=True, slots=True, order=True)
class IncidentKey:
    """What makes two findings the same incident: a kind and its subject. The subjects (all built in
    ``oomcheck.detect.keys``): a worker incarnation ``name:boot`` (boot time in whole epoch seconds)
    for worker_lost, worker_restarted and worker_departed; a task id for task_stalled and
    poison_task; ``worker:task,task`` (or ``worker:event,event`` for an idle child) for
    child_killed, ``old:task`` for a WorkerLostError from before oomcheck watched; a worker name for
    task_orphaned and memory_pressure; a queue name for queue_orphaned; a source name for
    source_unavailable; an exit event id for oom_kill; an advice key for config_risk (built in
    ``oomcheck.config.advice``). Rendered as text only for storage."""

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
    # Where an awaiting message waits until redeliver_at; None: the broker's unacked set (Redis).
    waits_in: str | None = None


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
