"""The outbox: which pending alerts go out, together or alone, and the transitions of an alert
once SNS answered (sent, failed and kept, undeliverable and dropped). Pure functions of State.

Incidents opened in the same run with the same kind, severity and cause go out as one message
(a fleet dying at once is one page); each stays its own incident, reminded and resolved alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass, field, replace

from oomcheck.model import Action, Incident, PendingAlert, State


@dataclass(frozen=True, slots=True)
class Batch:
    """Pending alerts that go out as one message: one incident's head, or the opens of
    incidents opened together."""

    action: Action
    members: tuple[tuple[Incident, PendingAlert], ...]

    @property
    def incidents(self) -> tuple[Incident, ...]:
        return tuple(incident for incident, _ in self.members)


def dedup_key(incident: Incident, pending: PendingAlert) -> str:
    """Stable across retries of the same alert: subscribers drop a message whose key they saw."""
    return f"{incident.id}:{pending.action.value}:{pending.seq or incident.alerts_sent}"


def batch_key(batch: Batch) -> str:
    keys = sorted(dedup_key(incident, pending) for incident, pending in batch.members)
    if len(keys) == 1:
        return keys[0]
    return "group:" + hashlib.sha256("\n".join(keys).encode()).hexdigest()[:24]


def due(state: State, held: Collection[str] = ()) -> list[tuple[Incident, Action]]:
    """The first pending alert of each incident, oldest incident first (order matters: an open
    must go out before its resolve); ``held``: ids of incidents a silence holds (skipped)."""
    out = []
    for incident in sorted(state.incidents.values(), key=lambda i: (i.opened_at, i.id)):
        if incident.pending and incident.id not in held:
            out.append((incident, incident.pending[0].action))
    return out


def batches(
    state: State, held: Collection[str] = (), group_wait_s: float = 0.0, now: float = 0.0
) -> list[Batch]:
    """Every incident's first pending alert, as messages: opens of the same kind, severity and
    cause opened in the same run share one; everything else goes alone. Oldest first. Incidents
    in ``held`` (silenced) keep their alerts pending.

    ``group_wait_s`` > 0 (Alertmanager's group_wait): the opens of one kind, severity and cause
    wait until the oldest of them is that old, then go out together, whichever runs opened them."""
    groups: dict[tuple[object, ...], list[tuple[Incident, PendingAlert]]] = {}
    for incident, _ in due(state, held):
        head = incident.pending[0]
        finding = incident.finding
        opened = incident.opened_at if group_wait_s <= 0 else None
        key: tuple[object, ...] = (
            (head.action, opened, finding.kind, finding.severity, finding.cause)
            if head.action is Action.OPEN
            else (head.action, incident.id)
        )
        groups.setdefault(key, []).append((incident, head))
    return [
        Batch(members[0][1].action, tuple(members))
        for members in groups.values()
        if group_wait_s <= 0
        or members[0][1].action is not Action.OPEN
        or now - min(i.opened_at for i, _ in members) >= group_wait_s
    ]


def _head_is(incident: Incident, action: Action) -> bool:
    return bool(incident.pending) and incident.pending[0].action == action


def mark_sent(state: State, incident_id: str, action: Action, now: float) -> State:
    incident = state.incidents[incident_id]
    if not _head_is(incident, action):
        return state
    updated = replace(
        incident,
        pending=incident.pending[1:],
        last_alert_at=now,
        alerts_sent=incident.alerts_sent + 1,
    )
    return replace(state, incidents={**state.incidents, incident_id: updated})


def mark_failed(
    state: State,
    incident_id: str,
    action: Action,
    error: str,
    taken: frozenset[str] = frozenset(),
) -> State:
    """``taken``: the channels that took the alert all the same; the retry skips them."""
    incident = state.incidents[incident_id]
    if not _head_is(incident, action):
        return state
    head = incident.pending[0]
    head = replace(
        head,
        attempts=head.attempts + 1,
        last_error=error[:300],
        taken=tuple(sorted(set(head.taken) | taken)),
    )
    updated = replace(incident, pending=(head, *incident.pending[1:]))
    return replace(state, incidents={**state.incidents, incident_id: updated})


def mark_undeliverable(state: State, incident_id: str, action: Action) -> State:
    """Drop an alert SNS refused even in its reduced form: retrying it would fail every run and
    hold back the alerts behind it. The report and a metric say so instead."""
    incident = state.incidents[incident_id]
    if not _head_is(incident, action):
        return state
    updated = replace(incident, pending=incident.pending[1:])
    return replace(state, incidents={**state.incidents, incident_id: updated})


@dataclass(frozen=True, slots=True)
class SentMark:
    incident_id: str
    action: Action
    dedup_key: str
    at: float


@dataclass
class SentJournal:
    """Sent marks not yet saved, kept by the process for its next run."""

    marks: list[SentMark] = field(default_factory=list)

    def apply(self, state: State) -> State:
        """Mark sent what was sent but not saved, where the incident still waits for it."""
        for mark in self.marks:
            incident = state.incidents.get(mark.incident_id)
            if incident is None or not incident.pending:
                continue
            if dedup_key(incident, incident.pending[0]) == mark.dedup_key:
                state = mark_sent(state, mark.incident_id, mark.action, mark.at)
        return state
