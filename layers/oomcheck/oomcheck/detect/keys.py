"""Incident keys, built in one place. A key names one occurrence of a condition: a worker
incarnation (name and boot time), a task, a source, a queue, an event. The subjects built here are
the formats ``IncidentKey``'s docstring lists."""

from __future__ import annotations

from oomcheck.model import IncidentKey, Kind


def worker_key(kind: Kind, name: str, boot_at: float) -> IncidentKey:
    return IncidentKey(kind, f"{name}:{boot_at:.0f}")


def lost(name: str, boot_at: float) -> IncidentKey:
    return worker_key(Kind.WORKER_LOST, name, boot_at)


def task_key(kind: Kind, task_id: str) -> IncidentKey:
    return IncidentKey(kind, task_id)


def old_failure(task_id: str) -> IncidentKey:
    """A WorkerLostError written before oomcheck watched (reported, never alerted)."""
    return IncidentKey(Kind.CHILD_KILLED, f"old:{task_id}")


def child(worker: str, task_ids: list[str], event_ids: list[str]) -> IncidentKey:
    what = sorted(task_ids) or sorted(event_ids)
    return IncidentKey(Kind.CHILD_KILLED, f"{worker}:{','.join(what)}")


def orphaned(worker: str) -> IncidentKey:
    return IncidentKey(Kind.TASK_ORPHANED, worker)


def oom(event_id: str) -> IncidentKey:
    return IncidentKey(Kind.OOM_KILL, event_id)


def source(name: str) -> IncidentKey:
    return IncidentKey(Kind.SOURCE_UNAVAILABLE, name)


def memory(worker: str) -> IncidentKey:
    return IncidentKey(Kind.MEMORY_PRESSURE, worker)


def queue(name: str) -> IncidentKey:
    return IncidentKey(Kind.QUEUE_ORPHANED, name)


def beat(store: str) -> IncidentKey:
    """One beat schedule (its store: the RedBeat key prefix)."""
    return IncidentKey(Kind.BEAT_STOPPED, store)
