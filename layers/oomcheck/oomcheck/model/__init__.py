"""The vocabulary of oomcheck: what sources observe, what evaluate() finds, what state keeps.

Everything here is an immutable value. Times are POSIX seconds (float, UTC) unless a name says
otherwise; None always means "not known", never zero.

One package, imported as ``oomcheck.model``: kinds (enums and statuses), observation (what a
run saw), findings, and state (what is kept between runs, and the policy).
"""

from oomcheck.model.beat import BeatEntry, BeatSchedule
from oomcheck.model.findings import Finding, IncidentKey, TaskFate
from oomcheck.model.kinds import (
    Action,
    Cause,
    Delivery,
    Kind,
    Mode,
    Severity,
    Source,
    SourceState,
    SourceStatus,
    Verdict,
    WorkerStatus,
)
from oomcheck.model.observation import (
    ActiveTask,
    DeadLetter,
    ExitEvidence,
    LostFailure,
    MemorySample,
    Observation,
    PidboxNames,
    Presence,
    QueueDepth,
    SqsQueue,
    SqsView,
    StartedTask,
    TaskLimits,
    UnackedMessage,
    WorkerSnapshot,
)
from oomcheck.model.state import (
    Incident,
    Kill,
    KillRecord,
    MemoryPoint,
    PendingAlert,
    Policy,
    PressureOnset,
    QuorumLimit,
    State,
    TaskDeath,
    TaskHistory,
    WorkerRecord,
)

__all__ = [
    "Action",
    "ActiveTask",
    "BeatEntry",
    "BeatSchedule",
    "Cause",
    "DeadLetter",
    "Delivery",
    "ExitEvidence",
    "Finding",
    "Incident",
    "IncidentKey",
    "Kill",
    "KillRecord",
    "Kind",
    "LostFailure",
    "MemoryPoint",
    "MemorySample",
    "Mode",
    "Observation",
    "PendingAlert",
    "PidboxNames",
    "Policy",
    "Presence",
    "PressureOnset",
    "QueueDepth",
    "QuorumLimit",
    "Severity",
    "Source",
    "SourceState",
    "SourceStatus",
    "SqsQueue",
    "SqsView",
    "StartedTask",
    "State",
    "TaskDeath",
    "TaskFate",
    "TaskHistory",
    "TaskLimits",
    "UnackedMessage",
    "Verdict",
    "WorkerRecord",
    "WorkerSnapshot",
    "WorkerStatus",
]
