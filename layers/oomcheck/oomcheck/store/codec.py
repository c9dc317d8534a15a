"""State <-> plain JSON values, one item per roster worker, incident, kill record.

The split into items is what keeps DynamoDB writes proportional to changes: a run writes only the
items whose encoding differs from what it loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from oomcheck.model import (
    Action,
    ActiveTask,
    Cause,
    Finding,
    Incident,
    IncidentKey,
    Kill,
    KillRecord,
    Kind,
    MemoryPoint,
    PendingAlert,
    PressureOnset,
    Severity,
    State,
    TaskDeath,
    TaskFate,
    TaskHistory,
    TaskLimits,
    Verdict,
    WorkerRecord,
    WorkerStatus,
)

SCHEMA = 1
# An incident keeps at most this many tasks: DynamoDB items stop at 400 KB, SNS at 256 KiB.
MAX_TASKS = 200

Json = dict[str, Any]


def _flat(value: Any) -> Json:
    """A flat dataclass as a dict; unlike dataclasses.asdict, no recursive deep copy (the
    encoding runs for every item of every save)."""
    return {f.name: getattr(value, f.name) for f in fields(value)}


def _drop_none(value: Json) -> Json:
    return {k: v for k, v in value.items() if v is not None and v not in ((), [])}


# ------------------------------------------------------------------------------ encode


def limits_to_json(limits: Mapping[str, TaskLimits]) -> Json:
    return {name: _drop_none(_flat(lim)) for name, lim in sorted(limits.items())}


def active_to_json(task: ActiveTask) -> Json:
    return _drop_none(_flat(task) | {"redelivered": task.redelivered or None})


def worker_to_json(record: WorkerRecord) -> Json:
    return _drop_none(
        {
            "name": record.name,
            "pid": record.pid,
            "boot_at": round(record.boot_at, 3),
            "pool": record.pool,
            "pool_pids": list(record.pool_pids),
            "status": record.status.value,
            "first_seen": record.first_seen,
            "changed_at": record.changed_at,
            "active": [active_to_json(t) for t in record.active],
            "limits": limits_to_json(record.limits) or None,
            "incident_id": record.incident_id,
            "queues": list(record.queues),
            "subscriptions": record.subscriptions,
            "named_connections": record.named_connections or None,
        }
    )


def fate_to_json(fate: TaskFate) -> Json:
    return _drop_none(
        {
            "id": fate.id,
            "name": fate.name,
            "state": fate.state,
            "started_at": fate.started_at,
            "verdict": fate.verdict.value,
            "redeliver_at": fate.redeliver_at,
            "worker_pid": fate.worker_pid,
            "waits_in": fate.waits_in,
        }
    )


def finding_to_json(finding: Finding) -> Json:
    """The contract shape of a finding (README, "Report JSON"), plus summary/advice/key."""
    return {
        "kind": finding.kind.value,
        "severity": finding.severity.value,
        "worker": finding.worker,
        "cause": finding.cause.value,
        "exit_code": finding.exit_code,
        "evidence": list(finding.evidence),
        "tasks": [fate_to_json(t) for t in finding.tasks[:MAX_TASKS]],
        "first_seen": finding.first_seen,
        "incident_id": finding.incident_id,
        "summary": finding.summary,
        "advice": list(finding.advice),
        "key": str(finding.key) if finding.key else None,
    }


def incident_to_json(incident: Incident) -> Json:
    return _drop_none(
        {
            "id": incident.id,
            "key": str(incident.key),
            "kind": incident.kind.value,
            "opened_at": incident.opened_at,
            "finding": finding_to_json(incident.finding),
            "closed_at": incident.closed_at,
            "resolution": incident.resolution,
            "pending": [
                _drop_none(_flat(p) | {"action": p.action.value, "taken": list(p.taken) or None})
                for p in incident.pending
            ],
            "last_alert_at": incident.last_alert_at,
            "alerts_sent": incident.alerts_sent or None,
            "fleet_size": incident.fleet_size,
            "task_events": dict(incident.task_events) or None,
            "task_events_due": [fate_to_json(t) for t in incident.task_events_due] or None,
        }
    )


def kills_to_json(record: KillRecord) -> Json:
    return _drop_none(
        {
            "task_id": record.task_id,
            "name": record.name,
            "kills": [_drop_none(_flat(k)) for k in record.kills],
        }
    )


def history_to_json(history: TaskHistory) -> Json:
    """One task type's history (no TTL: evaluate() drops entries older than the history window,
    and the item with its last entry)."""
    return {
        "name": history.name,
        "deaths": [
            _drop_none(_flat(d) | {"kind": d.kind.value, "cause": d.cause.value})
            for d in history.deaths
        ],
        "pressure": [[p.incident_id, p.at, p.worker] for p in history.pressure],
    }


def meta_to_json(state: State) -> Json:
    return {
        "schema": SCHEMA,
        "last_run_at": state.last_run_at,
        "last_discovery_at": state.last_discovery_at,
        "scan_cursor": state.scan_cursor,
        "stale_bindings": list(state.stale_bindings),
        "source_failures": dict(state.source_failures),
    }


_SECTIONS: tuple[tuple[str, str, Any], ...] = (
    ("worker", "workers", worker_to_json),
    ("incident", "incidents", incident_to_json),
    ("kills", "kills", kills_to_json),
    ("failure", "processed_failures", lambda at: {"at": at}),
    ("event", "processed_events", lambda at: {"at": at}),
    (
        "pressure",
        "pressure",
        lambda points: {"points": [[p.at, p.used_mb, p.limit_mb, p.basis] for p in points]},
    ),
    ("orphaned", "orphaned_since", lambda at: {"at": at}),
    ("history", "task_history", history_to_json),
)


def changed_items(before: State, after: State) -> tuple[dict[str, Json], list[str]]:
    """Items to put (new or changed) and item keys to delete, ``meta`` aside.

    evaluate() hands unchanged records through as the same objects, so a record that ``is`` its
    predecessor is skipped without encoding: the cost of a save follows the changes, not the
    fleet.
    """
    puts: dict[str, Json] = {}
    deletes: list[str] = []
    for prefix, attribute, encode in _SECTIONS:
        old: Mapping[str, Any] = getattr(before, attribute)
        new: Mapping[str, Any] = getattr(after, attribute)
        for key, value in new.items():
            previous = old.get(key)
            if previous is value:
                continue
            encoded = encode(value)
            if previous is None or encode(previous) != encoded:
                puts[f"{prefix}#{key}"] = encoded
        deletes.extend(f"{prefix}#{key}" for key in old if key not in new)
    return puts, sorted(deletes)


def state_to_items(state: State) -> dict[str, Json]:
    """Item key -> JSON value. Keys: ``meta``, ``worker#<name>``, ``incident#<id>``,
    ``kills#<task id>``, ``failure#<task id>``, ``event#<event id>``."""
    items: dict[str, Json] = {"meta": meta_to_json(state)}
    for name, record in state.workers.items():
        items[f"worker#{name}"] = worker_to_json(record)
    for incident_id, incident in state.incidents.items():
        items[f"incident#{incident_id}"] = incident_to_json(incident)
    for task_id, kills in state.kills.items():
        items[f"kills#{task_id}"] = kills_to_json(kills)
    for task_id, at in state.processed_failures.items():
        items[f"failure#{task_id}"] = {"at": at}
    for event_id, at in state.processed_events.items():
        items[f"event#{event_id}"] = {"at": at}
    for section, attribute, encode in _SECTIONS[5:]:
        for key, value in getattr(state, attribute).items():
            items[f"{section}#{key}"] = encode(value)
    return items


# ------------------------------------------------------------------------------ decode


def _limits(value: Mapping[str, Any] | None) -> dict[str, TaskLimits]:
    return {name: TaskLimits(**lim) for name, lim in (value or {}).items()}


def _active(value: Json) -> ActiveTask:
    return ActiveTask(
        id=value["id"],
        name=value.get("name"),
        worker_pid=value.get("worker_pid"),
        time_start=value.get("time_start"),
        acknowledged=value.get("acknowledged"),
        redelivered=bool(value.get("redelivered", False)),
    )


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def worker_from_json(value: Json) -> WorkerRecord:
    return WorkerRecord(
        name=value["name"],
        pid=int(value["pid"]),
        boot_at=float(value["boot_at"]),
        pool=value.get("pool", "prefork"),
        pool_pids=tuple(int(p) for p in value.get("pool_pids", ())),
        status=WorkerStatus(value["status"]),
        first_seen=float(value["first_seen"]),
        changed_at=float(value["changed_at"]),
        active=tuple(_active(t) for t in value.get("active", ())),
        limits=_limits(value.get("limits")),
        incident_id=value.get("incident_id"),
        queues=tuple(str(q) for q in value.get("queues", ())),
        subscriptions=_count(value.get("subscriptions")),
        named_connections=value.get("named_connections") is True,
    )


def fate_from_json(value: Json) -> TaskFate:
    return TaskFate(
        id=value["id"],
        name=value.get("name"),
        state=value.get("state", "UNKNOWN"),
        started_at=value.get("started_at"),
        verdict=Verdict(value.get("verdict", "unknown")),
        redeliver_at=value.get("redeliver_at"),
        worker_pid=value.get("worker_pid"),
        waits_in=value.get("waits_in"),
    )


def finding_from_json(value: Json) -> Finding:
    return Finding(
        kind=Kind(value["kind"]),
        severity=Severity(value["severity"]),
        worker=value.get("worker"),
        cause=Cause(value.get("cause", "unknown")),
        exit_code=value.get("exit_code"),
        evidence=tuple(value.get("evidence", ())),
        tasks=tuple(fate_from_json(t) for t in value.get("tasks", ())),
        first_seen=float(value.get("first_seen") or 0.0),
        incident_id=value.get("incident_id"),
        summary=value.get("summary", ""),
        advice=tuple(value.get("advice", ())),
        key=IncidentKey.parse(value["key"]) if value.get("key") else None,
    )


def incident_from_json(value: Json) -> Incident:
    return Incident(
        id=value["id"],
        key=IncidentKey.parse(value["key"]),
        kind=Kind(value["kind"]),
        opened_at=float(value["opened_at"]),
        finding=finding_from_json(value["finding"]),
        closed_at=value.get("closed_at"),
        resolution=value.get("resolution"),
        pending=tuple(
            PendingAlert(
                action=Action(p["action"]),
                queued_at=float(p["queued_at"]),
                attempts=int(p.get("attempts", 0)),
                last_error=p.get("last_error"),
                note=p.get("note"),
                seq=int(p.get("seq", 0)),
                taken=tuple(p.get("taken", ())),
            )
            for p in value.get("pending", ())
        ),
        last_alert_at=value.get("last_alert_at"),
        alerts_sent=int(value.get("alerts_sent", 0)),
        fleet_size=value.get("fleet_size"),
        task_events={str(k): str(v) for k, v in (value.get("task_events") or {}).items()},
        task_events_due=tuple(fate_from_json(t) for t in value.get("task_events_due") or ()),
    )


def _cause(raw: object) -> Cause:
    """A kill's cause; records written before kills carried one read as unknown."""
    try:
        return Cause(raw) if isinstance(raw, str) else Cause.UNKNOWN
    except ValueError:
        return Cause.UNKNOWN


def kills_from_json(value: Json) -> KillRecord:
    return KillRecord(
        task_id=value["task_id"],
        name=value.get("name"),
        kills=tuple(
            Kill(
                worker=k.get("worker"),
                pid=k.get("pid"),
                at=float(k["at"]),
                how=k.get("how", ""),
                cause=_cause(k.get("cause")),
            )
            for k in value.get("kills", ())
        ),
    )


def history_from_json(value: Json) -> TaskHistory:
    return TaskHistory(
        name=str(value["name"]),
        deaths=tuple(
            TaskDeath(
                incident_id=str(d["incident_id"]),
                at=float(d["at"]),
                kind=Kind(d["kind"]),
                cause=_cause(d.get("cause")),
                worker=d.get("worker"),
                victims=int(d.get("victims", 0)),
                lost=int(d.get("lost", 0)),
                redelivered=int(d.get("redelivered", 0)),
                peak_share=d.get("peak_share"),
            )
            for d in value.get("deaths", ())
        ),
        pressure=tuple(
            PressureOnset(str(incident_id), float(at), str(worker))
            for incident_id, at, worker in value.get("pressure", ())
        ),
    )


def state_from_items(items: Mapping[str, Json]) -> State:
    workers: dict[str, WorkerRecord] = {}
    incidents: dict[str, Incident] = {}
    kills: dict[str, KillRecord] = {}
    failures: dict[str, float] = {}
    events: dict[str, float] = {}
    pressure: dict[str, tuple[MemoryPoint, ...]] = {}
    orphaned: dict[str, float] = {}
    task_history: dict[str, TaskHistory] = {}
    meta: Json = items.get("meta", {})
    for key, value in items.items():
        kind, _, ident = key.partition("#")
        if kind == "worker":
            workers[ident] = worker_from_json(value)
        elif kind == "incident":
            incidents[ident] = incident_from_json(value)
        elif kind == "kills":
            kills[ident] = kills_from_json(value)
        elif kind == "failure":
            failures[ident] = float(value["at"])
        elif kind == "event":
            events[ident] = float(value["at"])
        elif kind == "pressure":
            # points saved before they carried their basis have three members: a hard limit
            pressure[ident] = tuple(
                MemoryPoint(float(at), float(used), float(limit), str(rest[0]) if rest else "limit")
                for at, used, limit, *rest in value.get("points", ())
            )
        elif kind == "orphaned":
            orphaned[ident] = float(value["at"])
        elif kind == "history":
            task_history[ident] = history_from_json(value)
    return State(
        workers=workers,
        incidents=incidents,
        kills=kills,
        source_failures={k: int(v) for k, v in (meta.get("source_failures") or {}).items()},
        processed_events=events,
        processed_failures=failures,
        last_run_at=meta.get("last_run_at"),
        last_discovery_at=meta.get("last_discovery_at"),
        scan_cursor=meta.get("scan_cursor"),
        stale_bindings=tuple(str(n) for n in meta.get("stale_bindings") or ()),
        pressure=pressure,
        orphaned_since=orphaned,
        task_history=task_history,
    )


def item_expiry(key: str, value: Json, retention_s: float) -> float | None:
    """When DynamoDB's TTL may delete an item: only things that are over and done."""
    kind = key.partition("#")[0]
    if kind == "incident" and value.get("closed_at") and not value.get("pending"):
        return float(value["closed_at"]) + retention_s
    if (
        kind == "worker"
        and value.get("status") in ("lost", "departed")
        and not value.get("incident_id")
    ):
        return float(value["changed_at"]) + retention_s
    if kind in ("failure", "event"):
        return float(value["at"]) + retention_s
    if kind == "kills" and value.get("kills"):
        return max(float(k["at"]) for k in value["kills"]) + retention_s
    return None
