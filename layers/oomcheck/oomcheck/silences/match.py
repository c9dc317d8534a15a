"""Which incidents a silence holds, from the fields their alerts carry. Pure, clock passed in."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from oomcheck.model import Incident, Kind, State, WorkerRecord
from oomcheck.silences.model import Silence


def alert_fields(
    incident: Incident, workers: Mapping[str, WorkerRecord]
) -> dict[str, tuple[str, ...]]:
    """What a matcher is compared with: the finding's kind, severity, cause and worker, the
    names of its tasks, and its queues (an orphaned queue's name, or the queues its worker
    consumed when last seen). A field the alert does not carry matches no glob."""
    finding = incident.finding
    queues: list[str] = []
    if incident.kind is Kind.QUEUE_ORPHANED:
        queues.append(incident.key.subject)
    record = workers.get(finding.worker) if finding.worker else None
    if record is not None:
        queues.extend(record.queues)
    return {
        "kind": (finding.kind.value,),
        "severity": (finding.severity.value,),
        "cause": (finding.cause.value,),
        "worker": (finding.worker,) if finding.worker else (),
        "queue": tuple(dict.fromkeys(queues)),
        "task": tuple(dict.fromkeys(t.name for t in finding.tasks if t.name)),
    }


def matches(silence: Silence, fields: Mapping[str, tuple[str, ...]]) -> bool:
    """Every matcher of the silence matches one of its field's values."""
    return all(m.matches(fields.get(m.key, ())) for m in silence.matchers)


def held_by(state: State, silences: Iterable[Silence], now: float) -> dict[str, str]:
    """Incident id -> the id of the active silence that holds its messages, for every open
    incident or one with alerts pending. Of several, the one that lasts longest is named (it is
    the one that decides when the alert goes out)."""
    active = sorted((s for s in silences if s.active(now)), key=lambda s: (-s.ends_at, s.id))
    if not active:
        return {}
    out: dict[str, str] = {}
    for incident in state.incidents.values():
        if not (incident.is_open or incident.pending):
            continue
        fields = alert_fields(incident, state.workers)
        for silence in active:
            if matches(silence, fields):
                out[incident.id] = silence.id
                break
    return out


def without_unsent_resolved(state: State, held: Mapping[str, str]) -> State:
    """A held incident that resolved before any of its messages went out sends nothing: its
    open and its resolve are dropped together (nobody was paged, nobody needs the all-clear)."""
    changed = {}
    for incident_id in held:
        incident = state.incidents.get(incident_id)
        if (
            incident is not None
            and not incident.is_open
            and incident.alerts_sent == 0
            and incident.pending
        ):
            changed[incident_id] = replace(incident, pending=())
    if not changed:
        return state
    return replace(state, incidents={**state.incidents, **changed})


def matching_now(silence: Silence, state: State) -> int:
    """How many open incidents and known workers the silence would match now: 0 tells the person
    adding it that it matches nothing oomcheck knows of (a typo, most often)."""
    count = sum(
        1
        for incident in state.incidents.values()
        if incident.is_open and matches(silence, alert_fields(incident, state.workers))
    )
    for record in state.workers.values():
        fields = {
            "worker": (record.name,),
            "queue": record.queues,
            "task": tuple(t.name for t in record.active if t.name),
        }
        # kind, severity and cause are checked against their closed sets when it was added
        relevant = [m for m in silence.matchers if m.key in fields]
        if relevant and all(m.matches(fields[m.key]) for m in relevant):
            count += 1
    return count
