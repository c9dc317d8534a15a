"""The frozen context of one evaluation: the previous state, this observation, and read-only
indexes over them, built once before any rule runs. No rule writes to it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from oomcheck.detect.correlate import WorkerIdentity, match_evidence, workers_for_hosts
from oomcheck.model import (
    ExitEvidence,
    Incident,
    IncidentKey,
    MemorySample,
    Observation,
    Policy,
    StartedTask,
    State,
    TaskLimits,
    UnackedMessage,
    WorkerRecord,
    WorkerSnapshot,
    WorkerStatus,
)

# Result states after which a task is finished and no death can orphan it.
FINISHED = frozenset({"SUCCESS", "FAILURE", "REVOKED", "RETRY", "IGNORED", "REJECTED"})
QUIET_POOLS = frozenset({"solo", "threads"})
ALIVE = frozenset({WorkerStatus.ALIVE, WorkerStatus.BUSY})


@dataclass(frozen=True, slots=True)
class Place:
    """Where a task runs (or ran): a worker and the pid of its process, if known."""

    worker: str
    pid: int | None


@dataclass(frozen=True)
class Context:
    state: State
    obs: Observation
    policy: Policy
    now: float
    live: Mapping[str, WorkerSnapshot]
    started_by_id: Mapping[str, StartedTask]
    started_by_worker: Mapping[str, tuple[StartedTask, ...]]
    unacked: Mapping[str, UnackedMessage]
    lost_failure_ids: frozenset[str]
    # task id -> the live process that runs it now
    running_now: Mapping[str, Place]
    # worker name -> fresh (not yet processed) exit evidence tied to it
    evidence: Mapping[str, tuple[ExitEvidence, ...]]
    unmatched: tuple[ExitEvidence, ...]
    limits_by_name: Mapping[str, TaskLimits]
    open_by_key: Mapping[IncidentKey, Incident]
    # worker name -> this run's memory samples of its container, oldest first
    memory: Mapping[str, tuple[MemorySample, ...]]

    # ---------------------------------------------------------------- what this run can judge

    @property
    def inspect_ok(self) -> bool:
        return self.obs.workers is not None

    @property
    def results_ok(self) -> bool:
        return self.obs.started is not None

    # ---------------------------------------------------------------- small derived facts

    def boot_at(self, snap: WorkerSnapshot) -> float:
        return self.obs.at - snap.uptime_s

    @staticmethod
    def processes(snap: WorkerSnapshot) -> frozenset[int]:
        return frozenset((*snap.pool_pids, snap.pid))

    def is_new_incarnation(self, record: WorkerRecord, snap: WorkerSnapshot) -> bool:
        """A new process under the same nodename: its pid changed, or it booted later than the
        one we knew (uptime is the worker's own measure; boot_at is on the observation's clock)."""
        return (
            snap.pid != record.pid
            or abs(self.boot_at(snap) - record.boot_at) > self.policy.restart_tolerance_s
        )

    def exits_for(self, worker: str) -> tuple[ExitEvidence, ...]:
        return self.evidence.get(worker, ())

    def open_incident(self, key: IncidentKey) -> Incident | None:
        return self.open_by_key.get(key)

    def limit(self, task_name: str | None, limits: Mapping[str, TaskLimits]) -> float | None:
        """A task's limit in seconds: its registered time_limit, else the configured expectation
        for its name, else the default; None when nothing applies."""
        if task_name is None:
            return self.policy.default_task_limit_s
        registered = limits.get(task_name)
        if registered is not None and registered.time_limit:
            return registered.time_limit
        expected = self.policy.task_expectations.get(task_name)
        if expected is not None:
            return expected
        return self.policy.default_task_limit_s

    def task_finished(self, task_id: str) -> bool:
        if task_id in self.started_by_id:
            return False
        status = self.obs.task_status.get(task_id)
        return status in FINISHED and task_id not in self.lost_failure_ids

    def alive_before(self) -> int:
        return sum(1 for r in self.state.workers.values() if r.status in ALIVE)


def build(state: State, obs: Observation, policy: Policy, now: float) -> Context:
    live: Mapping[str, WorkerSnapshot] = obs.workers or {}
    by_worker: dict[str, list[StartedTask]] = {}
    for task in obs.started or ():
        if task.worker:
            by_worker.setdefault(task.worker, []).append(task)
    started_by_worker = {name: tuple(tasks) for name, tasks in by_worker.items()}
    limits: dict[str, TaskLimits] = {}
    for record in state.workers.values():
        limits.update(record.limits)
    for snap in live.values():
        limits.update(snap.registered)
    evidence, unmatched = _match(state, obs, policy, live)
    return Context(
        state=state,
        obs=obs,
        policy=policy,
        now=now,
        live=live,
        started_by_id=MappingProxyType({t.id: t for t in obs.started or ()}),
        started_by_worker=MappingProxyType(started_by_worker),
        unacked=MappingProxyType({m.task_id: m for m in obs.unacked or ()}),
        lost_failure_ids=frozenset(f.id for f in obs.lost_failures or ()),
        running_now=MappingProxyType(_running_now(obs, live, started_by_worker)),
        evidence=MappingProxyType(evidence),
        unmatched=unmatched,
        limits_by_name=MappingProxyType(limits),
        open_by_key=MappingProxyType({i.key: i for i in state.incidents.values() if i.is_open}),
        memory=MappingProxyType(_match_memory(state, obs, policy, live)),
    )


def _running_now(
    obs: Observation,
    live: Mapping[str, WorkerSnapshot],
    started_by_worker: Mapping[str, tuple[StartedTask, ...]],
) -> dict[str, Place]:
    running: dict[str, Place] = {}
    for name, snap in live.items():
        processes = Context.processes(snap)
        boot_at = obs.at - snap.uptime_s
        for started in started_by_worker.get(name, ()):
            fresh = started.written_at is None or started.written_at >= boot_at - 1.0
            if started.pid in processes and fresh:
                running[started.id] = Place(name, started.pid)
        for task in snap.active or ():
            running[task.id] = Place(name, task.worker_pid)
    return running


def _identities(state: State, live: Mapping[str, WorkerSnapshot]) -> list[WorkerIdentity]:
    identities = [
        WorkerIdentity(name=r.name, pid=r.pid, pool_pids=r.pool_pids)
        for r in state.workers.values()
    ]
    identities += [
        WorkerIdentity(name=s.name, pid=s.pid, pool_pids=s.pool_pids)
        for s in live.values()
        if s.name not in state.workers
    ]
    return identities


def _match_memory(
    state: State, obs: Observation, policy: Policy, live: Mapping[str, WorkerSnapshot]
) -> dict[str, tuple[MemorySample, ...]]:
    if not obs.memory:
        return {}
    identities = _identities(state, live)
    out: dict[str, list[MemorySample]] = {}
    for sample in sorted(obs.memory, key=lambda m: m.at):
        names = workers_for_hosts(sample.hosts, identities, policy.worker_map)
        if len(names) == 1:  # a sample two workers could own belongs to neither
            out.setdefault(names[0], []).append(sample)
    return {name: tuple(samples) for name, samples in out.items()}


def _match(
    state: State, obs: Observation, policy: Policy, live: Mapping[str, WorkerSnapshot]
) -> tuple[dict[str, tuple[ExitEvidence, ...]], tuple[ExitEvidence, ...]]:
    fresh = [e for e in obs.exits or () if e.event_id not in state.processed_events]
    matched, unmatched = match_evidence(fresh, _identities(state, live), policy.worker_map)
    return {name: tuple(items) for name, items in matched.items()}, tuple(unmatched)
