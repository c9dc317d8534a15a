"""evaluate(state, observation, policy, now) -> (state, findings): the detection logic.

Pure: no I/O, no clock (``now`` is passed in), no randomness. The same inputs always give the same
outputs, so every rule is tested by replaying scripted observations.

How one evaluation goes:
 1. sources: count consecutive failures, report the ones that failed;
 2. liveness: every roster worker is matched to this run's replies: new, alive, restarted,
    returned, busy (solo/threads pool inside a task), lost or departed;
 3. child deaths under live workers: WorkerLostError records, a task that moved to a new pool pid,
    a STARTED record whose pid is no longer in the pool;
 4. stalled tasks on live workers, orphans on workers nobody knows;
 5. kill counts -> poison tasks; unmatched OOM evidence -> oom_kill;
 6. incidents: open, update, remind and resolve on transitions, never on conditions alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from oomcheck.correlate import WorkerIdentity, match_evidence
from oomcheck.model import (
    Action,
    ActiveTask,
    Cause,
    ExitEvidence,
    Finding,
    Incident,
    Kill,
    KillRecord,
    Kind,
    Observation,
    PendingAlert,
    Policy,
    Severity,
    StartedTask,
    State,
    TaskFate,
    TaskLimits,
    Verdict,
    WorkerRecord,
    WorkerSnapshot,
    WorkerStatus,
)

# Result states after which a task is finished and no death can orphan it.
_FINISHED = frozenset({"SUCCESS", "FAILURE", "REVOKED", "RETRY", "IGNORED", "REJECTED"})
_QUIET_POOLS = frozenset({"solo", "threads"})
# Kinds whose incident closes as soon as its alert is out: the event is over when we see it.
_EVENT_KINDS = frozenset({Kind.WORKER_RESTARTED, Kind.CHILD_KILLED, Kind.OOM_KILL})
_PROCESSED_EVENTS_KEEP_S = 24 * 3600.0


def evaluate(
    state: State, obs: Observation, policy: Policy, now: float
) -> tuple[State, list[Finding]]:
    """Compare this run's observation with the remembered state.

    Returns the next state (roster, incidents with their pending alerts, kill counts) and the
    findings of this run: new conditions, conditions still open, and recoveries.
    """
    return _Evaluation(state, obs, policy, now).run()


def incident_id_for(key: str, opened_at: float) -> str:
    digest = hashlib.sha256(f"{key}@{opened_at:.0f}".encode()).hexdigest()
    return f"inc-{digest[:12]}"


@dataclass(frozen=True, slots=True)
class _Place:
    worker: str
    pid: int | None


class _Evaluation:
    def __init__(self, state: State, obs: Observation, policy: Policy, now: float) -> None:
        self.state = state
        self.obs = obs
        self.policy = policy
        self.now = now
        self.workers: dict[str, WorkerRecord] = dict(state.workers)
        self.incidents: dict[str, Incident] = dict(state.incidents)
        # key -> id of the open incident with that key (at most one), kept in step by _add and
        # _resolve so that lookups do not scan every incident
        self.open_ids: dict[str, str] = {i.key: i.id for i in state.incidents.values() if i.is_open}
        self.kills: dict[str, KillRecord] = dict(state.kills)
        self.source_failures: dict[str, int] = dict(state.source_failures)
        self.processed_events: dict[str, float] = dict(state.processed_events)
        self.processed_failures: dict[str, float] = dict(state.processed_failures)
        self.conditions: list[Finding] = []
        self.info: list[Finding] = []
        self.recoveries: list[Finding] = []
        self.handled_keys: set[str] = set()
        self.live: Mapping[str, WorkerSnapshot] = obs.workers or {}
        self.started_by_id: dict[str, StartedTask] = {t.id: t for t in obs.started or ()}
        self.started_by_worker: dict[str, list[StartedTask]] = {}
        for t in obs.started or ():
            if t.worker:
                self.started_by_worker.setdefault(t.worker, []).append(t)
        self.unacked = {m.task_id: m for m in obs.unacked or ()}
        self.lost_failure_ids = {f.id for f in obs.lost_failures or ()}
        self.running_now = self._running_now()
        self.unmatched: list[ExitEvidence] = []
        self.evidence = self._match_evidence()

    # ---------------------------------------------------------------------------- orchestration

    def run(self) -> tuple[State, list[Finding]]:
        self._sources()
        if self.obs.workers is not None:
            self._liveness()
            self._child_deaths()
            self._stalled()
        self._unknown_orphans()
        self._poison()
        self._unmatched_evidence()
        self._reconcile()
        self._prune()
        new_state = State(
            workers=self.workers,
            incidents=self.incidents,
            kills=self.kills,
            source_failures=self.source_failures,
            processed_events=self.processed_events,
            processed_failures=self.processed_failures,
            last_run_at=self.now,
            last_discovery_at=self.state.last_discovery_at,
            scan_cursor=self.state.scan_cursor,
        )
        findings = self._report_findings()
        return new_state, findings

    # ---------------------------------------------------------------------------- 1. sources

    def _sources(self) -> None:
        for source in sorted(set(self.source_failures) | set(self.obs.errors)):
            error = self.obs.errors.get(source)
            if error is None:
                self.source_failures.pop(source, None)
                continue
            count = self.source_failures.get(source, 0) + 1
            self.source_failures[source] = count
            persistent = count >= self.policy.source_alert_after
            self._add(
                Finding(
                    kind=Kind.SOURCE_UNAVAILABLE,
                    severity=Severity.WARNING if persistent else Severity.INFO,
                    worker=None,
                    evidence=(f"{source}: {error}", f"failed {count} run(s) in a row"),
                    summary=f"source {source} unavailable: {error}",
                    advice=(
                        "The rest of the run went on without it; deaths it would show may be "
                        "missed until it is back.",
                    ),
                    key=f"source_unavailable:{source}",
                )
            )

    # ---------------------------------------------------------------------------- 2. liveness

    def _liveness(self) -> None:
        for name, snap in sorted(self.live.items()):
            record = self.workers.get(name)
            boot_at = self.obs.at - snap.uptime_s
            if record is None:
                self.workers[name] = self._record_from(snap, boot_at, first_seen=self.now)
            elif self._is_new_incarnation(record, snap, boot_at):
                self._new_incarnation(record, snap, boot_at)
            elif record.status in (WorkerStatus.LOST, WorkerStatus.DEPARTED):
                self._returned_same_process(record, snap)
            else:
                self._refresh(record, snap)
        alive_before = sum(
            1
            for r in self.state.workers.values()
            if r.status in (WorkerStatus.ALIVE, WorkerStatus.BUSY)
        )
        for name, record in sorted(self.state.workers.items()):
            if name in self.live:
                continue
            if record.status in (WorkerStatus.ALIVE, WorkerStatus.BUSY):
                self._missing(record, alive_before)
            elif record.status == WorkerStatus.LOST:
                self._still_lost(record)
            elif record.status == WorkerStatus.DEPARTED:
                self._late_evidence(record)

    def _is_new_incarnation(
        self, record: WorkerRecord, snap: WorkerSnapshot, boot_at: float
    ) -> bool:
        return (
            snap.pid != record.pid
            or abs(boot_at - record.boot_at) > self.policy.restart_tolerance_s
        )

    def _record_from(self, snap: WorkerSnapshot, boot_at: float, first_seen: float) -> WorkerRecord:
        return WorkerRecord(
            name=snap.name,
            pid=snap.pid,
            boot_at=boot_at,
            pool=snap.pool,
            pool_pids=tuple(sorted(snap.pool_pids)),
            status=WorkerStatus.ALIVE,
            first_seen=first_seen,
            changed_at=self.now,
            active=self._remembered_active(snap),
            limits=dict(snap.registered),
        )

    def _remembered_active(self, snap: WorkerSnapshot) -> tuple[ActiveTask, ...]:
        """The tasks to remember for a worker: active() replies, else its STARTED records."""
        if snap.active is not None:
            return tuple(sorted(snap.active, key=lambda t: t.id))
        processes = self._processes(snap)
        return tuple(
            sorted(
                (
                    ActiveTask(id=t.id, name=t.name, worker_pid=t.pid, time_start=t.written_at)
                    for t in self.started_by_worker.get(snap.name, ())
                    if t.pid in processes
                ),
                key=lambda t: t.id,
            )
        )

    def _refresh(self, record: WorkerRecord, snap: WorkerSnapshot) -> None:
        """A live worker, same process as before: store only what changed."""
        updated = replace(
            record,
            pool=snap.pool,
            pool_pids=tuple(sorted(snap.pool_pids)),
            status=WorkerStatus.ALIVE,
            active=self._remembered_active(snap),
            limits=dict(snap.registered) if snap.registered else record.limits,
            incident_id=None,
        )
        if updated != record:
            self.workers[record.name] = replace(updated, changed_at=self.now)

    def _new_incarnation(self, record: WorkerRecord, snap: WorkerSnapshot, boot_at: float) -> None:
        """Same nodename, new process: Kubernetes restarted an OOMKilled container in place, a
        supervisor restarted a killed worker, or a deploy restarted it cleanly."""
        new_processes = self._processes(snap)
        orphans = self._tasks_of_dead_instance(record, boot_at, new_processes)
        exits = self.evidence.get(record.name, [])
        cause, exit_code, ev_lines = _cause_from(exits)
        fates = self._fates(orphans, record)
        incident = self._open_incident_for_worker(record)
        self.workers[record.name] = replace(
            self._record_from(snap, boot_at, first_seen=record.first_seen),
            changed_at=self.now,
        )
        evidence = (
            f"inspect: pid {record.pid} -> {snap.pid}, uptime {snap.uptime_s:.0f} s",
            *ev_lines,
        )
        for fate in fates:
            self._record_kill(
                fate.id, fate.name, record.name, fate.worker_pid or record.pid, "worker restarted"
            )
        if incident is not None:
            self._resolve(
                incident,
                f"{record.name} is back: it restarted (pid {snap.pid}, up {snap.uptime_s:.0f} s)",
                tasks=self._refresh_fates(incident.finding.tasks, record),
            )
            return
        if record.status == WorkerStatus.DEPARTED:
            return
        abnormal = bool(fates) or any(not e.clean for e in exits)
        fate_text = _fates_text(fates)
        self._add(
            Finding(
                kind=Kind.WORKER_RESTARTED,
                severity=Severity.WARNING if abnormal else Severity.INFO,
                worker=record.name,
                cause=cause if abnormal else Cause.UNKNOWN,
                exit_code=exit_code,
                evidence=evidence,
                tasks=fates,
                summary=(
                    f"{record.name} restarted{_cause_phrase(cause, exit_code)}"
                    + (f"; {fate_text}" if fate_text else "")
                ),
                advice=_death_advice(cause, fates, self.policy) if abnormal else (),
                key=f"worker_restarted:{record.name}:{boot_at:.0f}",
            )
        )

    def _returned_same_process(self, record: WorkerRecord, snap: WorkerSnapshot) -> None:
        """A worker we had given up on answers again with the same pid and boot time: it was
        unreachable or stuck, not dead."""
        incident = self._open_incident_for_worker(record)
        self._refresh(replace(record, status=WorkerStatus.ALIVE), snap)
        self.workers[record.name] = replace(
            self.workers[record.name],
            status=WorkerStatus.ALIVE,
            incident_id=None,
            changed_at=self.now,
        )
        if incident is not None:
            self._resolve(
                incident,
                f"{record.name} answers again with the same pid {snap.pid}: it was unresponsive, "
                "not dead",
                tasks=self._refresh_fates(incident.finding.tasks, record),
            )

    def _missing(self, record: WorkerRecord, alive_before: int) -> None:
        """A worker that answered before did not answer the broadcast nor the direct re-ping."""
        orphans = self._tasks_of_dead_instance(record, None, frozenset())
        exits = self.evidence.get(record.name, [])
        abnormal_exit = [e for e in exits if not e.clean]
        cause, exit_code, ev_lines = _cause_from(exits)
        if record.pool in _QUIET_POOLS and not abnormal_exit:
            busy_with = self._within_limit(orphans, record)
            if busy_with is not None:
                if record.status != WorkerStatus.BUSY:
                    self.workers[record.name] = replace(
                        record, status=WorkerStatus.BUSY, changed_at=self.now
                    )
                self.info.append(
                    Finding(
                        kind=Kind.WORKER_DEPARTED,
                        severity=Severity.INFO,
                        worker=record.name,
                        evidence=(f"inspect: no reply; {record.pool} pool busy with {busy_with}",),
                        summary=(
                            f"{record.name} ({record.pool} pool) does not answer while it runs "
                            f"{busy_with}; not a death until the task's limit passes"
                        ),
                        key=f"busy:{record.name}",
                    )
                )
                return
        fates = self._fates(orphans, record)
        if not fates and not abnormal_exit:
            self.workers[record.name] = replace(
                record, status=WorkerStatus.DEPARTED, changed_at=self.now, active=()
            )
            self.info.append(
                Finding(
                    kind=Kind.WORKER_DEPARTED,
                    severity=Severity.INFO,
                    worker=record.name,
                    evidence=(
                        "inspect: no reply to broadcast or direct ping; no task was running",
                        *ev_lines,
                    ),
                    summary=f"{record.name} left with no task running (clean exit or scale-in)",
                    key=f"worker_departed:{record.name}:{record.boot_at:.0f}",
                )
            )
            return
        if record.pool in _QUIET_POOLS and not abnormal_exit:
            ev_lines = (
                *ev_lines,
                f"inspect: {record.pool} pool silent past the limit of its task",
            )
        for fate in fates:
            self._record_kill(
                fate.id, fate.name, record.name, fate.worker_pid or record.pid, "worker lost"
            )
        key = f"worker_lost:{record.name}:{record.boot_at:.0f}"
        self._add(
            Finding(
                kind=Kind.WORKER_LOST,
                severity=Severity.CRITICAL,
                worker=record.name,
                cause=cause,
                exit_code=exit_code,
                evidence=(
                    f"inspect: no reply to broadcast or direct ping (last pid {record.pid})",
                    *ev_lines,
                    *(
                        f"results: STARTED {f.id} on pid {f.worker_pid}"
                        for f in fates
                        if f.state == "STARTED"
                    ),
                ),
                tasks=fates,
                summary=f"{record.name} died{_cause_phrase(cause, exit_code)}; {_fates_text(fates)}"
                if fates
                else f"{record.name} died{_cause_phrase(cause, exit_code)}",
                advice=_death_advice(cause, fates, self.policy),
                key=key,
            ),
            fleet_size=alive_before,
        )
        incident_id = self._incident_id_of(key)
        self.workers[record.name] = replace(
            record, status=WorkerStatus.LOST, changed_at=self.now, incident_id=incident_id
        )

    def _late_evidence(self, record: WorkerRecord) -> None:
        """CloudWatch evidence lags: a worker judged departed (no task running) whose container
        is then reported OOM-killed or killed is a death after all."""
        exits = [e for e in self.evidence.get(record.name, []) if not e.clean]
        if not exits or record.changed_at < self.now - self.policy.failure_lookback_s:
            return
        cause, exit_code, ev_lines = _cause_from(exits)
        key = f"worker_lost:{record.name}:{record.boot_at:.0f}"
        self._add(
            Finding(
                kind=Kind.WORKER_LOST,
                severity=Severity.CRITICAL,
                worker=record.name,
                cause=cause,
                exit_code=exit_code,
                evidence=("inspect: no reply since it left (no task was running)", *ev_lines),
                summary=f"{record.name} died{_cause_phrase(cause, exit_code)} while idle",
                advice=_death_advice(cause, (), self.policy),
                key=key,
            )
        )
        self.workers[record.name] = replace(
            record,
            status=WorkerStatus.LOST,
            changed_at=self.now,
            incident_id=self._incident_id_of(key),
        )

    def _incident_id_of(self, key: str) -> str | None:
        incident = self._open_incident(key)
        return incident.id if incident else None

    def _still_lost(self, record: WorkerRecord) -> None:
        """A lost worker still not answering: keep its incident open with updated task fates,
        or close it once the fleet is back to its size before the death."""
        incident = self._open_incident_for_worker(record)
        if incident is None:
            return
        alive_now = sum(
            1 for r in self.workers.values() if r.status in (WorkerStatus.ALIVE, WorkerStatus.BUSY)
        )
        tasks = self._refresh_fates(incident.finding.tasks, record)
        finding = replace(incident.finding, tasks=tasks)
        late = [e for e in self.evidence.get(record.name, []) if not e.clean]
        if late:
            cause, exit_code, ev_lines = _cause_from(late)
            finding = replace(
                finding,
                cause=cause,
                exit_code=exit_code,
                evidence=(*finding.evidence, *ev_lines),
                summary=f"{record.name} died{_cause_phrase(cause, exit_code)}"
                + (f"; {_fates_text(tasks)}" if tasks else ""),
            )
        if incident.fleet_size is not None and alive_now >= incident.fleet_size > 0:
            newcomers = sorted(
                n
                for n, r in self.workers.items()
                if r.status == WorkerStatus.ALIVE and r.first_seen > incident.opened_at
            )
            by = f" (replaced by {', '.join(newcomers[:3])})" if newcomers else ""
            self._resolve(
                incident,
                f"{record.name} did not come back, but the fleet is back to {alive_now} "
                f"worker(s){by}",
                tasks=tasks,
            )
            self.workers[record.name] = replace(record, incident_id=None, changed_at=self.now)
            return
        self._add(finding)

    def _within_limit(self, tasks: list[ActiveTask], record: WorkerRecord) -> str | None:
        """The id of a task the quiet worker may still be running within its limit, if any."""
        for task in tasks:
            if self._task_finished(task.id):
                continue
            limit = self._limit(task.name, record.limits) or self.policy.busy_limit_s
            started = task.time_start
            if started is None or self.now - started <= limit + self.policy.stall_grace_s:
                return task.id
        return None

    # ---------------------------------------------------------------------------- 3. children

    def _child_deaths(self) -> None:
        killed: dict[str, list[tuple[TaskFate | None, str]]] = {}
        # (a) WorkerLostError failure records
        for failure in self.obs.lost_failures or ():
            seen = self.processed_failures.get(failure.id)
            written = failure.written_at if failure.written_at is not None else self.now
            if seen is not None and abs(seen - written) < 2.0:
                continue
            self.processed_failures[failure.id] = written
            place = self._last_place(failure.id)
            worker = failure.worker or (place.worker if place else None)
            pid = place.pid if place else None
            how = f"WorkerLostError: {failure.message}"[:160]
            where = self.running_now.get(failure.id)
            fate = TaskFate(
                id=failure.id,
                name=failure.name or self._task_name(failure.id),
                state="FAILURE",
                started_at=None,
                verdict=Verdict.REDELIVERED if where else Verdict.LOST,
                worker_pid=pid,
            )
            recent = self.state.last_run_at is not None and (
                self.now - written <= self.policy.failure_lookback_s
            )
            if not recent:
                self.info.append(
                    Finding(
                        kind=Kind.CHILD_KILLED,
                        severity=Severity.INFO,
                        worker=worker,
                        cause=_signal_cause(failure.signal),
                        evidence=(f"results: {how}",),
                        tasks=(fate,),
                        summary=f"an older WorkerLostError (before oomcheck watched): {failure.id}",
                        key=f"old_failure:{failure.id}",
                    )
                )
                continue
            self._record_kill(failure.id, fate.name, worker, pid, how, at=written)
            killed.setdefault(worker or "", []).append((fate, f"results: {how}"))
        # (b) a task remembered on pool pid P now runs on another pid of the same worker, and P is
        # gone from the pool: reject_on_worker_lost requeued it after its child was killed.
        for name, snap in self.live.items():
            record = self.state.workers.get(name)
            if record is None or self._is_new_incarnation(
                record, snap, self.obs.at - snap.uptime_s
            ):
                continue
            processes = self._processes(snap)
            for task in record.active:
                if task.worker_pid is None or task.worker_pid in processes:
                    continue
                now_at = self.running_now.get(task.id)
                if now_at is None or now_at.pid == task.worker_pid:
                    continue
                if self._already_killed(task.id, name, task.worker_pid):
                    continue
                how = (
                    f"pool child {task.worker_pid} gone; "
                    f"task now on {now_at.worker} pid {now_at.pid}"
                )
                self._record_kill(task.id, task.name, name, task.worker_pid, how)
                fate = TaskFate(
                    id=task.id,
                    name=task.name,
                    state="STARTED",
                    started_at=task.time_start,
                    verdict=Verdict.REDELIVERED,
                    worker_pid=task.worker_pid,
                )
                killed.setdefault(name, []).append((fate, f"inspect: {how}"))
        # (c) STARTED by a pid that is not in the live worker's pool and not in its active()
        for name, snap in self.live.items():
            processes = self._processes(snap)
            active_ids = {t.id for t in snap.active or ()}
            boot_at = self.obs.at - snap.uptime_s
            inspected = self.obs.inspected_at if self.obs.inspected_at is not None else self.obs.at
            for orphan in self.started_by_worker.get(name, ()):
                if orphan.pid in processes or orphan.id in active_ids or snap.active is None:
                    continue
                if (
                    orphan.written_at is None
                    or orphan.written_at > inspected - self.policy.pid_grace_s
                ):
                    continue
                if self._already_killed(orphan.id, name, orphan.pid):
                    continue
                if orphan.id in self.lost_failure_ids:
                    continue
                before_boot = orphan.written_at < boot_at
                how = (
                    f"STARTED by pid {orphan.pid} of an earlier run of this worker"
                    if before_boot
                    else f"STARTED by pid {orphan.pid}, which is no longer in the pool"
                )
                self._record_kill(orphan.id, orphan.name, name, orphan.pid, how)
                fate = self._fate_of(
                    ActiveTask(
                        id=orphan.id,
                        name=orphan.name,
                        worker_pid=orphan.pid,
                        time_start=orphan.written_at,
                    ),
                    self.state.workers.get(name),
                    dead=_Place(name, orphan.pid),
                )
                killed.setdefault(name, []).append((fate, f"results: {how}"))
        # (d) OOM/kill evidence (kernel line) naming a pool pid of a live worker
        for name, snap in self.live.items():
            record = self.state.workers.get(name)
            if record is None or self._is_new_incarnation(
                record, snap, self.obs.at - snap.uptime_s
            ):
                continue
            for evidence in self.evidence.get(name, []):
                if evidence.clean or evidence.pid is None or evidence.pid == snap.pid:
                    continue
                if evidence.pid in self._processes(snap):
                    continue  # that pid is alive: the line is about another process
                line = f"{evidence.source}: {evidence.text}"
                ran = [t for t in record.active if t.worker_pid == evidence.pid]
                items = killed.setdefault(name, [])
                listed = {f.id for f, _ in items if f is not None}
                for task in ran:
                    self._record_kill(task.id, task.name, name, evidence.pid, line)
                    if task.id not in listed:
                        items.append(
                            (self._fate_of(task, record, _Place(name, evidence.pid)), line)
                        )
                if not ran:
                    items.append((None, line))
        for worker, items in sorted(killed.items()):
            fates = tuple(
                f for f in _unique_fates(f for f, _ in items) if not self._poison_open(f.id)
            )
            if not fates and any(f is not None for f, _ in items):
                continue
            if not fates:
                continue
            worker_name = worker or None
            pids = {f.worker_pid for f in fates}
            exits = [
                e
                for e in self.evidence.get(worker, [])
                if e.pid is not None
                and (e.pid in pids or f"{e.source}: {e.text}" in {line for _, line in items})
            ]
            cause, exit_code, ev_lines = _cause_from(exits)
            if cause == Cause.UNKNOWN:
                cause = Cause.KILLED if any("signal 9" in line for _, line in items) else cause
            self._add(
                Finding(
                    kind=Kind.CHILD_KILLED,
                    severity=Severity.WARNING,
                    worker=worker_name,
                    cause=cause,
                    exit_code=exit_code,
                    evidence=tuple(dict.fromkeys((*(line for _, line in items), *ev_lines))),
                    tasks=fates,
                    summary=(
                        f"a pool process of {worker_name or 'an unknown worker'} was killed"
                        f"{_cause_phrase(cause, exit_code)}"
                        + (
                            " under " + ", ".join(f"{f.name or 'task'} {f.id}" for f in fates)
                            if fates
                            else " while idle"
                        )
                    ),
                    advice=_death_advice(cause, fates, self.policy),
                    key=f"child_killed:{worker}:"
                    + ",".join(sorted(f.id for f in fates) or [f"{self.now:.0f}"]),
                )
            )

    # ------------------------------------------------------------------------ 4. stalls, orphans

    def _stalled(self) -> None:
        for name, snap in sorted(self.live.items()):
            limits = snap.registered or self._limits_of(name)
            processes = self._processes(snap)
            seen: dict[str, tuple[str | None, float | None, int | None]] = {}
            for task in snap.active or ():
                seen[task.id] = (task.name, task.time_start, task.worker_pid)
            for started in self.started_by_worker.get(name, ()):
                if started.pid in processes and started.id not in seen:
                    seen[started.id] = (started.name, started.written_at, started.pid)
            for task_id, (task_name, started_at, pid) in sorted(seen.items()):
                limit = self._limit(task_name, limits)
                if limit is None or started_at is None:
                    continue
                age = self.now - started_at
                if age <= limit + self.policy.stall_grace_s:
                    continue
                registered = limits.get(task_name or "")
                hard = registered.time_limit if registered else None
                why = (
                    f"past its registered time_limit of {hard:.0f} s, which the "
                    f"{snap.pool} pool did not enforce"
                    if hard
                    else f"past the expected {limit:.0f} s"
                )
                self._add(
                    Finding(
                        kind=Kind.TASK_STALLED,
                        severity=Severity.WARNING,
                        worker=name,
                        cause=Cause.TIME_LIMIT,
                        evidence=(f"running {age:.0f} s on pid {pid}, {why}",),
                        tasks=(
                            TaskFate(
                                id=task_id,
                                name=task_name,
                                state="STARTED",
                                started_at=started_at,
                                verdict=Verdict.RUNNING,
                                worker_pid=pid,
                            ),
                        ),
                        summary=(
                            f"{task_name or 'task'} {task_id} on {name} has run {age:.0f} s, {why}"
                        ),
                        advice=(
                            "Check what the task is waiting on (py-spy dump --pid "
                            f"{pid}) and set a time_limit it can honour; on solo/threads pools "
                            "time limits are not enforced.",
                        ),
                        key=f"task_stalled:{task_id}",
                    )
                )

    def _unknown_orphans(self) -> None:
        """STARTED records of workers that answer nothing and that the roster never knew (they
        died before oomcheck saw them, or in its first run)."""
        if self.obs.workers is None or self.obs.started is None:
            return
        for worker, tasks in sorted(self.started_by_worker.items()):
            if worker in self.live or worker in self.workers:
                continue
            fates = tuple(
                self._fate_of(
                    ActiveTask(id=t.id, name=t.name, worker_pid=t.pid, time_start=t.written_at),
                    None,
                    dead=_Place(worker, t.pid),
                )
                for t in sorted(tasks, key=lambda t: t.id)
            )
            self._add(
                Finding(
                    kind=Kind.TASK_ORPHANED,
                    severity=Severity.WARNING,
                    worker=worker,
                    evidence=(
                        f"results: {len(fates)} STARTED record(s) of {worker}, which does not "
                        "answer and was never seen alive by oomcheck",
                    ),
                    tasks=fates,
                    summary=f"{len(fates)} task(s) STARTED on {worker}, which is gone: "
                    + _fates_text(fates),
                    advice=_death_advice(Cause.UNKNOWN, fates, self.policy),
                    key=f"task_orphaned:{worker}",
                )
            )

    # ------------------------------------------------------------------------ 5. poison, evidence

    def _poison(self) -> None:
        window_start = self.now - self.policy.poison_window_s
        for task_id, record in sorted(self.kills.items()):
            recent = tuple(k for k in record.kills if k.at >= window_start)
            key = f"poison_task:{task_id}"
            open_incident = self._open_incident(key)
            if len(recent) < self.policy.poison_kills:
                if open_incident is not None and not self._poison_still_active(task_id, record):
                    continue
                if open_incident is None:
                    continue
            elif open_incident is not None and not self._poison_still_active(task_id, record):
                continue
            kills = recent or record.kills
            workers = sorted({k.worker for k in kills if k.worker})
            revoke = (
                f"celery -A {self.policy.app_name or '<your_app>'} control revoke {task_id} "
                "--terminate --signal=SIGKILL"
            )
            self._add(
                Finding(
                    kind=Kind.POISON_TASK,
                    severity=Severity.CRITICAL,
                    worker=workers[-1] if len(workers) == 1 else None,
                    cause=Cause.OOM_KILLED
                    if any("oom" in k.how.lower() for k in kills)
                    else Cause.KILLED,
                    evidence=tuple(
                        f"killed on {k.worker or '?'} pid {k.pid or '?'}: {k.how}"
                        for k in kills[-5:]
                    ),
                    tasks=(
                        TaskFate(
                            id=task_id,
                            name=record.name,
                            state="STARTED",
                            started_at=None,
                            verdict=Verdict.KILL_LOOP,
                        ),
                    ),
                    summary=(
                        f"{record.name or 'task'} {task_id} killed its process {len(kills)} "
                        f"times in {self.policy.poison_window_s / 3600:.0f} h: a kill loop"
                    ),
                    advice=(
                        f"Stop the loop: {revoke}",
                        "It loops because acks_late with reject_on_worker_lost (or a visibility "
                        "timeout redelivery) puts the message back each time the process dies; "
                        "revoked ids live in worker memory, so run workers with --statedb to "
                        "keep the revoke across restarts.",
                        "Then find why it needs so much memory (its arguments are in the "
                        "broker message) or give it a worker with more.",
                    ),
                    key=key,
                )
            )

    def _poison_still_active(self, task_id: str, record: KillRecord) -> bool:
        if task_id in self.running_now or task_id in self.unacked:
            return True
        return self.now - record.last_at < self.policy.poison_quiet_s

    def _unmatched_evidence(self) -> None:
        for evidence in self.unmatched:
            if evidence.clean or evidence.cause != Cause.OOM_KILLED:
                continue
            self._add(
                Finding(
                    kind=Kind.OOM_KILL,
                    severity=Severity.WARNING,
                    worker=None,
                    cause=Cause.OOM_KILLED,
                    exit_code=evidence.exit_code,
                    evidence=(f"{evidence.source}: {evidence.text}",),
                    summary=f"OOM kill that matches no known worker: {evidence.text}"[:300],
                    advice=(
                        "If this was a Celery worker, set OOMCHECK_WORKER_MAP so that oomcheck "
                        "can tie its host to the nodename.",
                    ),
                    key=f"oom_kill:{evidence.event_id}",
                )
            )

    # ---------------------------------------------------------------------------- 6. incidents

    def _add(self, finding: Finding, fleet_size: int | None = None) -> None:
        if not finding.alertable:
            self.info.append(finding)
            return
        existing = self._open_incident(finding.key)
        if existing is not None:
            self.handled_keys.add(finding.key)
            finding = replace(finding, first_seen=existing.opened_at, incident_id=existing.id)
            self.incidents[existing.id] = replace(existing, finding=finding)
            self.conditions.append(finding)
            return
        incident_id = incident_id_for(finding.key, self.now)
        finding = replace(finding, first_seen=self.now, incident_id=incident_id)
        closed = self.now if finding.kind in _EVENT_KINDS else None
        self.incidents[incident_id] = Incident(
            id=incident_id,
            key=finding.key,
            kind=finding.kind,
            opened_at=self.now,
            finding=finding,
            closed_at=closed,
            resolution="event: alerted once, nothing to recover" if closed else None,
            pending=(PendingAlert(Action.OPEN, self.now),),
            fleet_size=fleet_size,
        )
        if closed is None:
            self.open_ids[finding.key] = incident_id
        self.handled_keys.add(finding.key)
        self.conditions.append(finding)

    def _resolve(
        self, incident: Incident, why: str, tasks: tuple[TaskFate, ...] | None = None
    ) -> None:
        finding = incident.finding if tasks is None else replace(incident.finding, tasks=tasks)
        needs_notice = incident.alerts_sent > 0 or any(
            p.action == Action.OPEN for p in incident.pending
        )
        pending = incident.pending + (
            (PendingAlert(Action.RESOLVE, self.now),) if needs_notice else ()
        )
        self.incidents[incident.id] = replace(
            incident,
            finding=finding,
            closed_at=self.now,
            resolution=why,
            pending=tuple(p for p in pending if p.action != Action.REMIND),
        )
        self.open_ids.pop(incident.key, None)
        self.handled_keys.add(incident.key)
        self.recoveries.append(
            Finding(
                kind=Kind.WORKER_RECOVERED,
                severity=Severity.INFO,
                worker=finding.worker,
                cause=finding.cause,
                exit_code=finding.exit_code,
                evidence=(why,),
                tasks=finding.tasks,
                first_seen=incident.opened_at,
                incident_id=incident.id,
                summary=f"resolved {incident.kind.value}: {why}",
                key=incident.key,
            )
        )

    def _reconcile(self) -> None:
        """Close persistent incidents whose condition is gone; remind the open ones."""
        can_judge = self.obs.workers is not None and self.obs.started is not None
        for incident in list(self.incidents.values()):
            if not incident.is_open or incident.key in self.handled_keys:
                continue
            if incident.kind == Kind.SOURCE_UNAVAILABLE:
                source = incident.key.split(":", 1)[1]
                if source not in self.obs.errors:
                    self._resolve(incident, f"source {source} works again")
                continue
            if incident.kind == Kind.WORKER_LOST:
                continue  # resolved by liveness only: a missing inspect source proves nothing
            if can_judge:
                self._resolve(incident, _gone_text(incident.kind))
        for incident in list(self.incidents.values()):
            if not incident.is_open:
                continue
            if self.now - incident.opened_at >= self.policy.incident_expiry_s:
                self._resolve(
                    incident,
                    f"still open after {self.policy.incident_expiry_s / 3600:.0f} h; closed to "
                    "stop reminders (run an audit to see the current state)",
                )
                continue
            due = (
                incident.last_alert_at is not None
                and not incident.pending
                and self.now - incident.last_alert_at >= self.policy.remind_after_s
            )
            if due:
                self.incidents[incident.id] = replace(
                    incident, pending=(PendingAlert(Action.REMIND, self.now),)
                )
            if incident.key not in self.handled_keys:
                # kept open but not re-evaluated (a source is down): still report it
                self.conditions.append(incident.finding)

    def _report_findings(self) -> list[Finding]:
        order = {Severity.CRITICAL: 0, Severity.WARNING: 1, Severity.INFO: 2}
        findings = [*self.conditions, *self.info, *self.recoveries]
        return sorted(
            findings, key=lambda f: (order[f.severity], f.kind.value, f.worker or "", f.key)
        )

    # ---------------------------------------------------------------------------- pruning

    def _prune(self) -> None:
        horizon = self.now - self.policy.retention_s
        for name, record in list(self.workers.items()):
            if record.status in (WorkerStatus.LOST, WorkerStatus.DEPARTED) and (
                record.changed_at < horizon and record.incident_id is None
            ):
                del self.workers[name]
        for incident_id, incident in list(self.incidents.items()):
            if (
                incident.closed_at is not None
                and incident.closed_at < horizon
                and not incident.pending
            ):
                del self.incidents[incident_id]
        window_start = self.now - self.policy.poison_window_s
        for task_id, kill_record in list(self.kills.items()):
            kept = tuple(k for k in kill_record.kills if k.at >= window_start)
            if not kept and self._open_incident(f"poison_task:{task_id}") is None:
                del self.kills[task_id]
            elif kept != kill_record.kills and kept:
                self.kills[task_id] = replace(kill_record, kills=kept)
        for event_id, at in list(self.processed_events.items()):
            if at < self.now - _PROCESSED_EVENTS_KEEP_S:
                del self.processed_events[event_id]
        for task_id, at in list(self.processed_failures.items()):
            if at < horizon:
                del self.processed_failures[task_id]

    # ---------------------------------------------------------------------------- helpers

    def _processes(self, snap: WorkerSnapshot) -> frozenset[int]:
        return frozenset((*snap.pool_pids, snap.pid))

    def _running_now(self) -> dict[str, _Place]:
        """Task id -> the live process that runs it now."""
        running: dict[str, _Place] = {}
        for name, snap in self.live.items():
            processes = self._processes(snap)
            boot_at = self.obs.at - snap.uptime_s
            for started in self.started_by_worker.get(name, ()):
                fresh = started.written_at is None or started.written_at >= boot_at - 1.0
                if started.pid in processes and fresh:
                    running[started.id] = _Place(name, started.pid)
            for task in snap.active or ():
                running[task.id] = _Place(name, task.worker_pid)
        return running

    def _match_evidence(self) -> dict[str, list[ExitEvidence]]:
        fresh = [e for e in self.obs.exits or () if e.event_id not in self.processed_events]
        identities = [
            WorkerIdentity(name=r.name, pid=r.pid, pool_pids=r.pool_pids)
            for r in self.state.workers.values()
        ]
        identities += [
            WorkerIdentity(name=s.name, pid=s.pid, pool_pids=s.pool_pids)
            for s in self.live.values()
            if s.name not in self.state.workers
        ]
        matched, self.unmatched = match_evidence(fresh, identities, self.policy.worker_map)
        for evidence in fresh:
            self.processed_events[evidence.event_id] = evidence.at
        return matched

    def _tasks_of_dead_instance(
        self, record: WorkerRecord, new_boot_at: float | None, new_processes: frozenset[int]
    ) -> list[ActiveTask]:
        """Tasks that were running in the worker instance that died (STARTED records naming it,
        and the tasks it reported active last time), minus those known to have finished."""
        tasks: dict[str, ActiveTask] = {}
        for started in self.started_by_worker.get(record.name, ()):
            if (
                new_boot_at is not None
                and started.written_at is not None
                and (started.written_at >= new_boot_at - 1.0 and started.pid in new_processes)
            ):
                continue  # the new instance's own task
            tasks[started.id] = ActiveTask(
                id=started.id,
                name=started.name,
                worker_pid=started.pid,
                time_start=started.written_at,
            )
        for task in record.active:
            if task.id in tasks:
                tasks[task.id] = replace(
                    task,
                    name=task.name or tasks[task.id].name,
                    worker_pid=tasks[task.id].worker_pid or task.worker_pid,
                )
                continue
            if not self._task_finished(task.id):
                tasks[task.id] = task
        return [t for _, t in sorted(tasks.items()) if not self._task_finished(t.id)]

    def _task_finished(self, task_id: str) -> bool:
        if task_id in self.started_by_id:
            return False
        status = self.obs.task_status.get(task_id)
        return status in _FINISHED and task_id not in self.lost_failure_ids

    def _fates(self, tasks: Iterable[ActiveTask], record: WorkerRecord) -> tuple[TaskFate, ...]:
        return tuple(
            self._fate_of(t, record, dead=_Place(record.name, t.worker_pid)) for t in tasks
        )

    def _fate_of(self, task: ActiveTask, record: WorkerRecord | None, dead: _Place) -> TaskFate:
        """What became of a task whose process died (see the verdicts in model.Verdict)."""
        started = self.started_by_id.get(task.id)
        state = "STARTED" if started else self.obs.task_status.get(task.id, "UNKNOWN")
        if task.id in self.lost_failure_ids:
            state = "FAILURE"
        limits = record.limits if record else self._limits_by_name()
        registered = limits.get(task.name or "")
        acks_late = registered.acks_late if registered else None
        if acks_late is None and task.acknowledged is not None:
            acks_late = not task.acknowledged
        where = self.running_now.get(task.id)
        redeliver_at = None
        if (
            where is not None
            and where != dead
            and not (where.worker == dead.worker and where.pid is None)
        ):
            verdict = Verdict.REDELIVERED
        elif task.id in self.unacked:
            verdict = Verdict.AWAITING_REDELIVERY
            fetched = self.unacked[task.id].fetched_at
            if fetched is not None:
                redeliver_at = fetched + self.policy.visibility_timeout_s
        elif task.id in self.lost_failure_ids or acks_late is False:
            verdict = Verdict.LOST
        elif acks_late is True:
            if self.obs.broker_transport == "redis" and self.obs.unacked is None:
                verdict = Verdict.UNKNOWN
            else:
                verdict = Verdict.REDELIVERED
        else:
            verdict = Verdict.UNKNOWN
        return TaskFate(
            id=task.id,
            name=task.name or (started.name if started else None),
            state=state,
            started_at=task.time_start,
            verdict=verdict,
            redeliver_at=redeliver_at,
            worker_pid=task.worker_pid,
        )

    def _refresh_fates(
        self, fates: tuple[TaskFate, ...], record: WorkerRecord
    ) -> tuple[TaskFate, ...]:
        """Re-judge the tasks of an open incident: awaiting_redelivery becomes redelivered."""
        return tuple(self._rejudge(fate, record) for fate in fates)

    def _rejudge(self, fate: TaskFate, record: WorkerRecord) -> TaskFate:
        if fate.verdict not in (Verdict.AWAITING_REDELIVERY, Verdict.UNKNOWN):
            return fate
        task = ActiveTask(
            id=fate.id, name=fate.name, worker_pid=fate.worker_pid, time_start=fate.started_at
        )
        new = self._fate_of(task, record, dead=_Place(record.name, fate.worker_pid))
        if new.verdict == Verdict.REDELIVERED or (
            fate.verdict == Verdict.UNKNOWN and new.verdict != Verdict.UNKNOWN
        ):
            return replace(fate, verdict=new.verdict, redeliver_at=new.redeliver_at)
        if (
            fate.verdict == Verdict.AWAITING_REDELIVERY
            and fate.id not in self.unacked
            and self.obs.unacked is not None
        ):
            # gone from the unacked set: a live worker restored it to the queue
            return replace(fate, verdict=Verdict.REDELIVERED)
        return fate

    def _limit(self, task_name: str | None, limits: Mapping[str, TaskLimits]) -> float | None:
        if task_name is None:
            return self.policy.default_task_limit_s
        registered = limits.get(task_name)
        if registered is not None and registered.time_limit:
            return registered.time_limit
        expected = self.policy.task_expectations.get(task_name)
        if expected is not None:
            return expected
        return self.policy.default_task_limit_s

    def _limits_of(self, worker: str) -> Mapping[str, TaskLimits]:
        record = self.workers.get(worker)
        return record.limits if record else {}

    def _limits_by_name(self) -> dict[str, TaskLimits]:
        merged: dict[str, TaskLimits] = {}
        for record in self.state.workers.values():
            merged.update(record.limits)
        for snap in self.live.values():
            merged.update(snap.registered)
        return merged

    def _last_place(self, task_id: str) -> _Place | None:
        started = self.started_by_id.get(task_id)
        if started and started.worker:
            return _Place(started.worker, started.pid)
        for record in self.state.workers.values():
            for task in record.active:
                if task.id == task_id:
                    return _Place(record.name, task.worker_pid)
        return None

    def _task_name(self, task_id: str) -> str | None:
        for record in self.state.workers.values():
            for task in record.active:
                if task.id == task_id:
                    return task.name
        known = self.kills.get(task_id)
        return known.name if known else None

    def _already_killed(self, task_id: str, worker: str, pid: int | None) -> bool:
        record = self.kills.get(task_id)
        return record is not None and any(k.worker == worker and k.pid == pid for k in record.kills)

    def _record_kill(  # noqa: PLR0917 - a kill is these six facts
        self,
        task_id: str,
        name: str | None,
        worker: str | None,
        pid: int | None,
        how: str,
        at: float | None = None,
    ) -> None:
        if worker is not None and pid is not None and self._already_killed(task_id, worker, pid):
            return
        kill = Kill(worker=worker, pid=pid, at=at if at is not None else self.now, how=how)
        record = self.kills.get(task_id)
        if record is None:
            self.kills[task_id] = KillRecord(task_id=task_id, name=name, kills=(kill,))
        else:
            self.kills[task_id] = replace(
                record, name=record.name or name, kills=(*record.kills, kill)
            )

    def _open_incident(self, key: str) -> Incident | None:
        incident_id = self.open_ids.get(key)
        return self.incidents[incident_id] if incident_id is not None else None

    def _open_incident_for_worker(self, record: WorkerRecord) -> Incident | None:
        if record.incident_id is None:
            return None
        incident = self.incidents.get(record.incident_id)
        return incident if incident is not None and incident.is_open else None

    def _poison_open(self, task_id: str) -> bool:
        record = self.kills.get(task_id)
        if self._open_incident(f"poison_task:{task_id}") is not None:
            return True
        if record is None:
            return False
        window_start = self.now - self.policy.poison_window_s
        return sum(1 for k in record.kills if k.at >= window_start) >= self.policy.poison_kills


# -------------------------------------------------------------------------------- text helpers


def _cause_from(exits: list[ExitEvidence]) -> tuple[Cause, int | None, tuple[str, ...]]:
    """The most telling cause among matched exit evidence: OOM beats killed beats exited."""
    rank = {
        Cause.OOM_KILLED: 0,
        Cause.KILLED: 1,
        Cause.EXITED: 2,
        Cause.TIME_LIMIT: 3,
        Cause.UNKNOWN: 4,
    }
    abnormal = sorted((e for e in exits if not e.clean), key=lambda e: (rank[e.cause], e.at))
    lines = tuple(f"{e.source}: {e.text}" for e in exits)
    if not abnormal:
        return Cause.UNKNOWN, None, lines
    best = abnormal[0]
    exit_code = best.exit_code
    if exit_code is None:
        exit_code = next((e.exit_code for e in abnormal if e.exit_code is not None), None)
    return best.cause, exit_code, lines


def _unique_fates(fates: Iterable[TaskFate | None]) -> list[TaskFate]:
    seen: dict[str, TaskFate] = {}
    for fate in fates:
        if fate is not None and fate.id not in seen:
            seen[fate.id] = fate
    return list(seen.values())


def _signal_cause(signal: int | None) -> Cause:
    return Cause.KILLED if signal == 9 else Cause.UNKNOWN


def _cause_phrase(cause: Cause, exit_code: int | None) -> str:
    code = f" (exit {exit_code})" if exit_code is not None else ""
    return {
        Cause.OOM_KILLED: f", OOM-killed{code}",
        Cause.KILLED: f", killed{code}",
        Cause.EXITED: f", exited{code}",
        Cause.TIME_LIMIT: ", past its time limit",
        Cause.UNKNOWN: " without a trace" if exit_code is None else f"{code}",
    }[cause]


def _fates_text(fates: Iterable[TaskFate]) -> str:
    counts: dict[str, int] = {}
    for fate in fates:
        counts[fate.verdict.value.replace("_", " ")] = (
            counts.get(fate.verdict.value.replace("_", " "), 0) + 1
        )
    if not counts:
        return ""
    total = sum(counts.values())
    parts = ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))
    return f"{total} task(s): {parts}"


def _death_advice(cause: Cause, fates: Iterable[TaskFate], policy: Policy) -> tuple[str, ...]:
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
            f"({policy.visibility_timeout_s:.0f} s) passes; if one of them caused the death it may "
            "kill the next worker too."
        )
    if not advice:
        advice.append("Check the worker's host or container logs for why it stopped.")
    return tuple(advice)


def _gone_text(kind: Kind) -> str:
    return {
        Kind.TASK_STALLED: "the task is no longer running",
        Kind.TASK_ORPHANED: "no orphaned STARTED record remains",
        Kind.POISON_TASK: "the task has stopped dying and is not queued on any worker",
    }.get(kind, "the condition is gone")
