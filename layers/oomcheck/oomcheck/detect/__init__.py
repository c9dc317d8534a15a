"""evaluate(state, observation, policy, now) -> (state, findings): the detection core.

Pure: no I/O, no clock (``now`` is passed in), no randomness; the same inputs always give the
same outputs, so every rule is tested by replaying scripted observations.

One evaluation:
 1. context: this run's read-only indexes over the previous state and the observation;
 2. the rule families, in the order of ``FAMILIES``, each a pure function of the context and the
    state carried so far (``Carried``) returning one ``Outcome``: signals, resolutions, the
    incidents it could not judge, and its carry (roster records, kills, evidence ids, counts):
    sources (source_unavailable); workers (worker_lost, worker_restarted, worker_departed, from
    the roster transitions: new, alive, restarted, returned, missing, still lost, still departed);
    children (child_killed); stalls (task_stalled); orphans (task_orphaned); poison (poison_task,
    on the kill counts after this run); beat (beat_stopped: periodic entries overdue); evidence
    (oom_kill of no known worker); memory (memory_pressure); queues (queue_orphaned);
 3. the ledger turns the outcomes into incident transitions (open, update, remind, expire,
    resolve), closing what a family judged and no longer mentions;
 4. the history by task type follows the incidents that opened or changed (``history``);
 5. the next state is written once, at the end, from the last carry; unchanged records stay the
    same objects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TypeVar

from oomcheck.detect import context, history, keys
from oomcheck.detect.carried import Carried
from oomcheck.detect.context import Context
from oomcheck.detect.ledger import incident_id_for, settle
from oomcheck.detect.rules import (
    beat,
    children,
    evidence,
    memory,
    orphans,
    poison,
    queues,
    sources,
    sqs,
    stalls,
    workers,
)
from oomcheck.detect.signals import Outcome
from oomcheck.model import (
    Finding,
    Incident,
    KillRecord,
    Kind,
    Observation,
    Policy,
    State,
    WorkerRecord,
    WorkerStatus,
)

__all__ = ["FAMILIES", "evaluate", "incident_id_for"]

_PROCESSED_EVENTS_KEEP_S = 24 * 3600.0
T = TypeVar("T")

Family = Callable[[Context, Carried], Outcome]

# In this order: a family sees the carries of those before it (stalls, memory and queues the
# roster after workers; children the kills of workers; poison the kills of both).
FAMILIES: tuple[Family, ...] = (
    sources.judge,
    workers.judge,
    children.judge,
    stalls.judge,
    orphans.judge,
    # Celery on SQS (no remote control): deaths before poison (their kills count) and evidence
    # (the exits they claim are no unknown worker's); dead letters after poison (kills seen)
    sqs.judge_deaths,
    poison.judge,
    # before evidence: the exits of beat's container are beat's, not an unknown worker's
    beat.judge,
    evidence.judge,
    memory.judge,
    queues.judge,
    sqs.judge_queues,
)


def evaluate(
    state: State, obs: Observation, policy: Policy, now: float
) -> tuple[State, list[Finding]]:
    """Compare this run's observation with the remembered state.

    Returns the next state (roster, incidents with their pending alerts, kill counts) and the
    findings of this run: new conditions, conditions still open, and recoveries.
    """
    ctx = context.build(state, obs, policy, now)
    carried = Carried.start(state)
    outcomes: list[Outcome] = []
    for family in FAMILIES:
        outcome = family(ctx, carried)
        carried = carried.after(outcome.carry)
        outcomes.append(outcome)
    incidents, findings = settle(ctx, outcomes)
    fresh = {e.event_id: e.at for e in obs.exits or () if e.event_id in carried.events}
    new_state = State(
        workers=_linked(carried.workers, incidents, now),
        incidents=incidents,
        kills=carried.kills,
        source_failures=carried.source_failures,
        processed_events={**state.processed_events, **fresh},
        processed_failures=carried.failures,
        last_run_at=now,
        last_discovery_at=state.last_discovery_at,
        scan_cursor=state.scan_cursor,
        pressure=_same_if_equal(state.pressure, carried.pressure),
        orphaned_since=_same_if_equal(state.orphaned_since, carried.orphaned_since),
        task_history=history.recorded(state, incidents, policy, now),
    )
    return _pruned(new_state, policy, now), findings


def _same_if_equal(before: Mapping[str, T], after: Mapping[str, T]) -> Mapping[str, T]:
    """Keep the previous objects for unchanged entries (the codec writes only what changed)."""
    return {k: before[k] if before.get(k) == v else v for k, v in after.items()}


def _linked(
    roster_: Mapping[str, WorkerRecord], incidents: Mapping[str, Incident], now: float
) -> dict[str, WorkerRecord]:
    """Each lost worker names its open incident (the state's TTL keeps it while one is open)."""
    open_ids = {i.key: i.id for i in incidents.values() if i.is_open}
    out: dict[str, WorkerRecord] = {}
    for name, record in roster_.items():
        incident_id = (
            open_ids.get(keys.lost(name, record.boot_at))
            if record.status == WorkerStatus.LOST
            else None
        )
        out[name] = (
            record
            if incident_id == record.incident_id
            else replace(record, incident_id=incident_id, changed_at=now)
        )
    return out


def _pruned(state: State, policy: Policy, now: float) -> State:
    horizon = now - policy.retention_s
    workers_ = {
        name: r
        for name, r in state.workers.items()
        if r.status in (WorkerStatus.ALIVE, WorkerStatus.BUSY)
        or r.changed_at >= horizon
        or r.incident_id is not None
    }
    incidents = {
        i.id: i
        for i in state.incidents.values()
        if i.closed_at is None or i.closed_at >= horizon or i.pending
    }
    open_poison = {
        i.key.subject for i in incidents.values() if i.is_open and i.kind is Kind.POISON_TASK
    }
    return replace(
        state,
        workers=workers_,
        incidents=incidents,
        kills=_pruned_kills(state.kills, open_poison, now - policy.poison_window_s),
        processed_events={
            k: at
            for k, at in state.processed_events.items()
            if at >= now - _PROCESSED_EVENTS_KEEP_S
        },
        processed_failures={k: at for k, at in state.processed_failures.items() if at >= horizon},
    )


def _pruned_kills(
    kills: Mapping[str, KillRecord], open_poison: set[str], window_start: float
) -> dict[str, KillRecord]:
    out: dict[str, KillRecord] = {}
    for task_id, record in kills.items():
        kept = tuple(k for k in record.kills if k.at >= window_start)
        if kept == record.kills:
            out[task_id] = record
        elif kept:
            out[task_id] = replace(record, kills=kept)
        elif task_id in open_poison:
            out[task_id] = record
    return out
