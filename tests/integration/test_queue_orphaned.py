"""queue_orphaned on real brokers (Redis and RabbitMQ): a queue whose only worker is killed
while messages wait is raised with its depth and resolved when a worker for it returns; a queue
that a live worker consumes raises nothing, however deep."""

from __future__ import annotations

import signal
import uuid

from oomcheck.model import Kind, SourceState, SourceStatus
from oomcheck.report.document import Report
from tests.integration.conftest import Fleet, poll_checks


def _orphaned(report: Report) -> list:
    return [f for f in report.findings if f.kind == Kind.QUEUE_ORPHANED]


def _name(role: str) -> str:
    return f"{role}-{uuid.uuid4().hex[:6]}@oomcheck-test"


def test_queue_whose_only_worker_is_killed_is_orphaned_until_a_worker_returns(
    any_fleet: Fleet,
) -> None:
    fleet = any_fleet
    # Given the only worker of the queue, busy with a task
    only = _name("only")
    worker = fleet.start(only)
    busy = fleet.send("demo.sleepy", 60)
    fleet.wait_started(busy)
    assert not _orphaned(fleet.check())
    # When it is killed and messages wait in its queue
    worker.kill(signal.SIGKILL)
    worker.wait()
    waiting = [fleet.send("demo.sleepy", 0.1) for _ in range(5)]
    report = poll_checks(fleet, lambda r: bool(_orphaned(r)), timeout=30, interval=0.5)
    # Then queue_orphaned, critical, with the depth and the dead consumer
    orphaned = _orphaned(report)[0]
    assert orphaned.severity.value == "critical" and orphaned.worker == only
    row = next(q for q in report.to_json()["queues"] if q["name"] == fleet.queue)
    assert row["messages"] >= len(waiting) and row["consumers"] == []
    assert row["broker_consumers"] == (0 if fleet.broker.startswith("amqp") else None)
    assert f"queue {fleet.queue} has {row['messages']:,} message(s)" in orphaned.summary
    assert f"{only} (died)" in orphaned.summary
    assert "queue_orphaned" in [m.kind for m in fleet.publisher.messages]
    # When a worker for the queue comes back
    fleet.start(_name("back"))
    poll_checks(fleet, lambda r: not _orphaned(r), timeout=30, interval=0.5)
    # Then the incident is resolved
    resolved = [m.kind for m in fleet.publisher.messages if m.action.value == "resolve"]
    assert "queue_orphaned" in resolved


def test_queue_consumed_by_a_live_worker_raises_nothing(any_fleet: Fleet) -> None:
    fleet = any_fleet
    # Given a worker of concurrency 1 and more tasks than it can take at once
    name = _name("live")
    fleet.start(name)
    first = fleet.send("demo.sleepy", 20)
    fleet.wait_started(first)
    for _ in range(4):
        fleet.send("demo.sleepy", 0.1)
    # When it is checked twice (and audited) with messages waiting
    reports = [fleet.check(), fleet.check(), fleet.check("audit")]
    # Then nothing is raised, and the queue shows its backlog and its consumer
    for report in reports:
        assert not _orphaned(report)
        assert report.sources["queues"] == SourceStatus(SourceState.OK)
    row = next(q for q in reports[-1].to_json()["queues"] if q["name"] == fleet.queue)
    assert row["messages"] >= 1 and row["consumers"] == [name]
    # RabbitMQ counts the consumer itself; Redis keeps no such count
    assert row["broker_consumers"] == (1 if fleet.broker.startswith("amqp") else None)
