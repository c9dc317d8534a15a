"""Builders for scripted observation sequences replayed through evaluate()."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from oomcheck.alerting.outbox import due, mark_sent
from oomcheck.detect import evaluate
from oomcheck.model import (
    ActiveTask,
    Cause,
    ExitEvidence,
    Finding,
    Kind,
    LostFailure,
    MemorySample,
    Observation,
    Policy,
    QueueDepth,
    StartedTask,
    State,
    TaskLimits,
    UnackedMessage,
    WorkerSnapshot,
)

T0 = 1_790_000_000.0


def snap(
    name: str,
    pid: int = 100,
    *,
    boot: float = T0 - 1000,
    at: float = T0,
    pool: str = "prefork",
    pool_pids: Iterable[int] = (101, 102),
    active: Iterable[ActiveTask] | None = (),
    limits: dict[str, TaskLimits] | None = None,
    reping: bool = False,
    queues: Iterable[str] | None = None,
) -> WorkerSnapshot:
    return WorkerSnapshot(
        name=name,
        pid=pid,
        uptime_s=at - boot,
        pool=pool,
        pool_pids=tuple(pool_pids),
        active=tuple(active) if active is not None else None,
        registered=limits or {},
        reping=reping,
        queues=tuple(queues) if queues is not None else None,
    )


def task(
    task_id: str,
    pid: int | None = 101,
    *,
    name: str = "app.work",
    start: float = T0 - 30,
    acknowledged: bool | None = None,
) -> ActiveTask:
    return ActiveTask(
        id=task_id, name=name, worker_pid=pid, time_start=start, acknowledged=acknowledged
    )


def started(
    task_id: str,
    worker: str,
    pid: int | None = 101,
    *,
    name: str = "app.work",
    written: float = T0 - 30,
) -> StartedTask:
    return StartedTask(id=task_id, worker=worker, pid=pid, name=name, written_at=written)


def obs(
    at: float,
    workers: Iterable[WorkerSnapshot] | None,
    *,
    started_: Iterable[StartedTask] | None = (),
    lost: Iterable[LostFailure] | None = (),
    unacked: Iterable[UnackedMessage] | None = (),
    exits: Iterable[ExitEvidence] | None = (),
    errors: dict[str, str] | None = None,
    task_status: dict[str, str] | None = None,
    transport: str = "redis",
    memory: Iterable[MemorySample] | None = None,
    queues: Iterable[QueueDepth] | None = None,
) -> Observation:
    return Observation(
        at=at,
        workers=None if workers is None else {w.name: w for w in workers},
        started=None if started_ is None else tuple(started_),
        lost_failures=None if lost is None else tuple(lost),
        unacked=None if unacked is None else tuple(unacked),
        exits=None if exits is None else tuple(exits),
        errors=errors or {},
        task_status=task_status or {},
        broker_transport=transport,
        inspected_at=at,
        memory=None if memory is None else tuple(memory),
        queues=None if queues is None else tuple(queues),
    )


LIMITS = {
    "app.work": TaskLimits(time_limit=None, acks_late=False),
    "app.late": TaskLimits(time_limit=600, acks_late=True),
    "app.loop": TaskLimits(acks_late=True, reject_on_worker_lost=True),
}


@dataclass
class Replay:
    policy: Policy = field(default_factory=Policy)
    state: State = field(default_factory=State)
    deliver: bool = True
    history: list[list[Finding]] = field(default_factory=list)
    sent: list[tuple[str, str, str]] = field(default_factory=list)  # (incident, kind, action)

    def step(self, observation: Observation) -> list[Finding]:
        self.state, findings = evaluate(self.state, observation, self.policy, observation.at)
        self.history.append(findings)
        if self.deliver:
            for _ in range(3):
                pending = due(self.state)
                if not pending:
                    break
                for incident, action in pending:
                    self.sent.append((incident.id, incident.kind.value, action.value))
                    self.state = mark_sent(self.state, incident.id, action, observation.at)
        return findings


def kinds(findings: Iterable[Finding], alertable_only: bool = True) -> list[str]:
    return sorted(f.kind.value for f in findings if f.alertable or not alertable_only)


def only(findings: Iterable[Finding], kind: Kind) -> Finding:
    matching = [f for f in findings if f.kind == kind]
    assert len(matching) == 1, f"expected one {kind}, got {[f.kind.value for f in findings]}"
    return matching[0]


def ecs_oom(host: str = "10.0.1.5", *, at: float = T0 + 30, event_id: str = "e1") -> ExitEvidence:
    """An ECS task-stopped record for the container at ``host``: exit 137, OutOfMemoryError."""
    return ExitEvidence(
        source="ecs",
        event_id=event_id,
        at=at,
        cause=Cause.OOM_KILLED,
        exit_code=137,
        text="exitCode 137 OutOfMemoryError",
        hosts=(host,),
    )


def kernel_kill(pid: int, host: str = "10.0.1.5", *, at: float = T0 + 30) -> ExitEvidence:
    """A kernel line: the memory cgroup's OOM killer killed ``pid`` on ``host``."""
    return ExitEvidence(
        source="kernel",
        event_id=f"k-{pid}-{at:.0f}",
        at=at,
        cause=Cause.OOM_KILLED,
        exit_code=137,
        text=f"Memory cgroup out of memory: Killed process {pid} (celery)",
        hosts=(host,),
        pid=pid,
        process="celery",
    )


def mem(
    host: str,
    used_mb: float,
    at: float,
    *,
    limit_mb: float | None = 2048.0,
    basis: str = "hard limit",
    source: str = "eks",
) -> MemorySample:
    """A Container Insights memory sample of the container on ``host`` (an EKS pod name)."""
    return MemorySample(
        source=source,
        event_id=f"m-{host}-{at:.0f}",
        at=at,
        used_mb=used_mb,
        limit_mb=limit_mb,
        basis=basis,
        hosts=(host,),
        container="worker",
    )


def actions(replay: Replay, kind: str | None = None) -> list[str]:
    return [a for _, k, a in replay.sent if kind is None or k == kind]
