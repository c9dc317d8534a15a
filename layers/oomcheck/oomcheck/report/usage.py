"""What a report shows of memory and queues, beside the findings: the workers that use the most
of their container's memory with the tasks they run now, and every queue measured with its
backlog and who consumes it. Built from one run's observation and roster; pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from oomcheck.detect.correlate import WorkerIdentity, workers_for_hosts
from oomcheck.model import (
    ActiveTask,
    MemorySample,
    QueueDepth,
    WorkerRecord,
    WorkerSnapshot,
    WorkerStatus,
)

# the report lists the top memory users only: a fleet of hundreds would drown the table
TOP_MEMORY = 10
_LIVE = frozenset({WorkerStatus.ALIVE, WorkerStatus.BUSY})


def memory_rows(
    samples: Iterable[MemorySample],
    live: Mapping[str, WorkerSnapshot],
    roster: Mapping[str, WorkerRecord],
    worker_map: Mapping[str, str],
    now: float,
) -> tuple[dict[str, Any], ...]:
    """Each worker's latest sample, highest share of its limit first (unknown shares last), with
    the tasks it runs now. Samples that match no worker, or two, are left out, as detection does.
    """
    identities = [
        WorkerIdentity(name=r.name, pid=r.pid, pool_pids=r.pool_pids) for r in roster.values()
    ]
    identities += [
        WorkerIdentity(name=s.name, pid=s.pid, pool_pids=s.pool_pids)
        for s in live.values()
        if s.name not in roster
    ]
    latest: dict[str, MemorySample] = {}
    for sample in sorted(samples, key=lambda m: m.at):
        names = workers_for_hosts(sample.hosts, identities, worker_map)
        if len(names) == 1:
            latest[names[0]] = sample
    rows = [_memory_row(name, s, _running(name, live, roster), now) for name, s in latest.items()]
    rows.sort(key=lambda r: (r["share"] is None, -(r["share"] or 0.0), -r["used_mb"], r["worker"]))
    return tuple(rows[:TOP_MEMORY])


def _running(
    name: str, live: Mapping[str, WorkerSnapshot], roster: Mapping[str, WorkerRecord]
) -> tuple[ActiveTask, ...]:
    snap = live.get(name)
    if snap is not None and snap.active is not None:
        return snap.active
    record = roster.get(name)
    return record.active if record is not None else ()


def _memory_row(
    name: str, sample: MemorySample, tasks: tuple[ActiveTask, ...], now: float
) -> dict[str, Any]:
    share = sample.share
    return {
        "worker": name,
        "used_mb": round(sample.used_mb, 1),
        "limit_mb": round(sample.limit_mb, 1) if sample.limit_mb is not None else None,
        "share": round(share, 3) if share is not None else None,
        "basis": sample.basis,
        "source": sample.source,
        "sampled_s_ago": max(0, round(now - sample.at)),
        "tasks": [
            {
                "id": t.id,
                "name": t.name,
                "running_s": round(now - t.time_start) if t.time_start is not None else None,
            }
            for t in tasks
        ],
    }


def queue_rows(
    depths: Iterable[QueueDepth],
    live: Mapping[str, WorkerSnapshot],
    roster: Mapping[str, WorkerRecord],
    now: float,
) -> tuple[dict[str, Any], ...]:
    """Every queue measured, by name: its backlog, the live workers that consume it (their
    active_queues(), else what the roster remembers of a busy one) and the broker's own consumer
    count where it keeps one (RabbitMQ; None on Redis)."""
    consumers: dict[str, list[str]] = {}
    for name in sorted({*roster, *live}):
        record = roster.get(name)
        snap = live.get(name)
        if snap is None and (record is None or record.status not in _LIVE):
            continue
        queues = snap.queues if snap is not None and snap.queues is not None else None
        if queues is None:
            queues = record.queues if record is not None else ()
        for queue in queues:
            consumers.setdefault(queue, []).append(name)
    return tuple(
        {
            "name": d.name,
            "messages": d.messages,
            "consumers": consumers.get(d.name, []),
            "broker_consumers": d.consumers,
            "oldest_s": round(now - d.oldest_at) if d.oldest_at is not None else None,
        }
        for d in sorted(depths, key=lambda q: q.name)
    )
