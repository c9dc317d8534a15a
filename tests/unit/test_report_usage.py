"""The report's memory and queue blocks: the top memory users with the tasks they run, every
queue with its backlog and consumers, in the JSON and in the CLI table."""

from __future__ import annotations

import json

from oomcheck.model import (
    Mode,
    QueueDepth,
    SourceState,
    SourceStatus,
    WorkerRecord,
    WorkerStatus,
)
from oomcheck.report.document import Report
from oomcheck.report.table import render_table
from oomcheck.report.usage import TOP_MEMORY, memory_rows, queue_rows
from tests.unit.scenario import T0, mem, snap, task


def _report(**blocks) -> Report:
    return Report(
        mode=Mode.AUDIT,
        checked_at=T0,
        duration_ms=12,
        workers=(),
        findings=(),
        sources={"inspect": SourceStatus(SourceState.OK)},
        stats={},
        **blocks,
    )


def test_top_memory_users_highest_share_first_with_their_running_tasks():
    live = {
        "celery@pod-a": snap("celery@pod-a", active=[task("t-1", name="app.grow", start=T0 - 42)]),
        "celery@pod-b": snap("celery@pod-b", 200),
        "celery@pod-c": snap("celery@pod-c", 300),
    }
    samples = [
        mem("pod-a", 1000, T0 - 70),
        mem("pod-a", 1900, T0 - 10),  # the latest sample counts
        mem("pod-b", 600, T0 - 10),
        mem("pod-c", 3000, T0 - 10, limit_mb=None, basis="no limit known"),
        mem("pod-zz", 4000, T0 - 10),  # no such worker
    ]
    rows = memory_rows(samples, live, {}, {}, T0)
    assert [r["worker"] for r in rows] == ["celery@pod-a", "celery@pod-b", "celery@pod-c"]
    top = rows[0]
    assert (top["used_mb"], top["limit_mb"], top["share"]) == (1900, 2048, 0.928)
    assert top["tasks"] == [{"id": "t-1", "name": "app.grow", "running_s": 42}]
    assert rows[2]["share"] is None and rows[2]["basis"] == "no limit known"
    table = render_table(_report(memory=rows))
    assert "MEMORY (top users)" in table
    line = next(x for x in table.splitlines() if x.startswith("celery@pod-a"))
    assert "1,900" in line and "93%" in line and "app.grow [t-1] 42s" in line
    assert "(of no limit known)" in table
    body = _report(memory=rows).to_json()
    assert body["memory"][0]["tasks"][0]["name"] == "app.grow"
    json.dumps(body)


def test_only_the_top_users_are_listed():
    live = {f"celery@pod-{i}": snap(f"celery@pod-{i}", 100 + i) for i in range(TOP_MEMORY + 5)}
    samples = [mem(f"pod-{i}", 100 + i, T0 - 5) for i in range(TOP_MEMORY + 5)]
    rows = memory_rows(samples, live, {}, {}, T0)
    assert len(rows) == TOP_MEMORY
    assert rows[0]["worker"] == f"celery@pod-{TOP_MEMORY + 4}"


def test_every_queue_with_its_depth_and_live_consumers():
    live = {
        "celery@a": snap("celery@a", queues=["celery", "reports"]),
        "celery@b": snap("celery@b", 200, queues=["celery"]),
    }
    roster = {
        "celery@dead": WorkerRecord(
            name="celery@dead",
            pid=9,
            boot_at=T0 - 500,
            pool="prefork",
            pool_pids=(),
            first_seen=T0 - 500,
            changed_at=T0 - 60,
            status=WorkerStatus.LOST,
            queues=("exports",),
        ),
        "celery@busy": WorkerRecord(
            name="celery@busy",
            pid=8,
            boot_at=T0 - 500,
            pool="prefork",
            pool_pids=(),
            first_seen=T0 - 500,
            changed_at=T0 - 60,
            status=WorkerStatus.BUSY,
            queues=("reports",),
        ),
    }
    depths = [
        QueueDepth("reports", 12),
        QueueDepth("exports", 40, consumers=0, oldest_at=T0 - 95),
        QueueDepth("celery", 0),
    ]
    rows = queue_rows(depths, live, roster, T0)
    assert rows == (
        {
            "name": "celery",
            "messages": 0,
            "consumers": ["celery@a", "celery@b"],
            "broker_consumers": None,
            "oldest_s": None,
        },
        {"name": "exports", "messages": 40, "consumers": [], "broker_consumers": 0, "oldest_s": 95},
        {
            "name": "reports",
            "messages": 12,
            "consumers": ["celery@a", "celery@busy"],
            "broker_consumers": None,
            "oldest_s": None,
        },
    )
    table = render_table(_report(queues=rows))
    exports = next(x for x in table.splitlines() if x.startswith("exports"))
    assert "40" in exports and "95s" in exports and "NONE (broker counts 0)" in exports


def test_blocks_absent_when_the_sources_are_off_and_empty_when_nothing_was_seen():
    assert "memory" not in _report().to_json() and "queues" not in _report().to_json()
    assert "MEMORY" not in render_table(_report())
    empty = _report(memory=(), queues=())
    assert empty.to_json()["memory"] == [] and empty.to_json()["queues"] == []
    table = render_table(empty)
    assert "(no memory sample matched a worker this run)" in table
    assert "(no queue measured)" in table
