"""Checks started by the events that announce a death: real workers on a real Redis die, the
events ECS (or the kernel, through a CloudWatch Logs subscription) would send arrive in the shapes
AWS delivers them, and the run that starts with them in hand alerts at once."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from dataclasses import replace
from typing import Any

import pytest

from oomcheck.demo.arrivals import sqs_batch, sqs_record, subscription_payload
from oomcheck.demo.ecs import ecs_task_stopped_event
from oomcheck.entry.invocation import parse_invocation
from oomcheck.model import Cause, Kind, Verdict
from oomcheck.report.document import Report
from oomcheck.runner import run_once
from tests.integration.conftest import Fleet

pytestmark = pytest.mark.integration

OOM_REASON = "OutOfMemoryError: Container killed due to memory usage"


def _ecs(
    ip: str,
    *,
    container: str = "worker",
    exit_code: int | None = 137,
    oom: bool = True,
    stop_code: str = "EssentialContainerExited",
) -> dict[str, Any]:
    return ecs_task_stopped_event(
        cluster="celery-prod",
        task_id=uuid.uuid5(uuid.NAMESPACE_DNS, f"{ip}/{container}").hex,
        private_ip=ip,
        container=container,
        exit_code=exit_code,
        reason=OOM_REASON if oom else None,
        stop_code=stop_code,
        stopped_reason="Essential container in task exited",
        at=time.time(),
    )


def _on_arrival(fleet: Fleet, event: dict[str, Any]) -> Report:
    """What the handler does with an arriving event: parse it, run one check with it."""
    invocation = parse_invocation(event, containers=fleet.deps.settings.containers)
    assert invocation.arrival is not None
    return run_once(fleet.deps, invocation.mode, arrival=invocation.arrival)


def _opened(report: Report) -> list[tuple[str, str]]:
    return [(a.kind, a.incident_id) for a in report.alerts if a.action == "open"]


def _kill(worker: Any) -> None:
    worker.kill(signal.SIGKILL)
    assert worker.wait(10) is not None


def test_idle_worker_announced_by_an_ecs_oom_event_is_alerted_in_that_run(fleet: Fleet):
    # Given an idle worker on the roster, on a task whose ENI is 10.9.0.1
    worker = fleet.start("idle@ip-10-9-0-1")
    assert fleet.check().exit_code == 0
    # When it is OOM-killed and ECS's event arrives through SQS, next to a malformed record
    _kill(worker)
    batch = sqs_batch([_ecs("10.9.0.1")], sent_at=time.time())
    batch["Records"].insert(0, sqs_record("{garbage", sent_at=time.time()))
    report = _on_arrival(fleet, batch)
    # Then that very run alerts: worker_lost, OOM-killed, with the ECS evidence
    [lost] = [f for f in report.findings if f.kind == Kind.WORKER_LOST]
    assert (lost.worker, lost.cause, lost.exit_code) == ("idle@ip-10-9-0-1", Cause.OOM_KILLED, 137)
    assert any(e.startswith("ecs: exitCode 137 OutOfMemoryError") for e in lost.evidence)
    assert [a.kind for a in report.alerts if a.published] == ["worker_lost"]
    assert report.stats["arrived_skipped"] == 1


def test_worker_that_died_mid_task_gets_its_task_verdict(fleet: Fleet):
    worker = fleet.start("busy@ip-10-9-0-2")
    task = fleet.send("demo.sleepy", 120)
    fleet.wait_started(task)
    fleet.check()
    _kill(worker)
    report = _on_arrival(fleet, _ecs("10.9.0.2"))
    [lost] = [f for f in report.findings if f.kind == Kind.WORKER_LOST]
    assert lost.cause == Cause.OOM_KILLED
    assert [(t.id, t.verdict) for t in lost.tasks] == [(task, Verdict.LOST)]
    assert task in fleet.publisher.messages[0].text


def test_sidecar_and_foreign_containers_stopping_alert_nothing(fleet: Fleet):
    # Given a live worker on 10.9.0.3
    fleet.start("steady@ip-10-9-0-3")
    fleet.check()
    # When its task's log router sidecar is killed, and a container of another service is
    # OOM-killed on an address no worker has
    batch = sqs_batch(
        [
            _ecs("10.9.0.3", container="log_router", exit_code=137, oom=False),
            _ecs("10.9.0.99", container="nginx", exit_code=137),
        ],
        sent_at=time.time(),
    )
    fleet.deps.settings = replace(fleet.deps.settings, containers=("worker",))
    report = _on_arrival(fleet, batch)
    # Then nothing is alerted: the worker still answers, the sidecars are not Celery's
    assert report.alerts == () and report.exit_code == 0, report.findings


def test_a_burst_of_stops_opens_one_incident_per_dead_worker(fleet: Fleet):
    # Given three workers (10.9.1.1-3) on the roster
    workers = [fleet.start(f"b{i}@ip-10-9-1-{i}") for i in (1, 2, 3)]
    fleet.check()
    # When all three are OOM-killed during a deploy that also stops 17 other tasks cleanly,
    # and the 20 events arrive as SQS delivers them: batches of 10, one of them twice
    for worker in workers:
        _kill(worker)
    events = [_ecs(f"10.9.1.{i}") for i in (1, 2, 3)]
    events += [
        _ecs(f"10.9.2.{i}", exit_code=0, oom=False, stop_code="ServiceSchedulerInitiated")
        for i in range(17)
    ]
    first, second = (
        sqs_batch(events[:10], sent_at=time.time()),
        sqs_batch(events[10:], sent_at=time.time()),
    )
    reports = [_on_arrival(fleet, first), _on_arrival(fleet, second), _on_arrival(fleet, first)]
    # Then exactly three incidents are opened, in the first run. Alerts opened together with
    # the same kind and cause are grouped into one SNS message, so one message says all three.
    opened = [o for r in reports for o in _opened(r)]
    assert len(opened) == 3 and {k for k, _ in opened} == {"worker_lost"}
    assert _opened(reports[1]) == [] and _opened(reports[2]) == []
    lost = {f.worker for f in reports[0].findings if f.kind == Kind.WORKER_LOST}
    assert lost == {"b1@ip-10-9-1-1", "b2@ip-10-9-1-2", "b3@ip-10-9-1-3"}
    assert len(fleet.publisher.messages) == 1


def test_the_same_event_delivered_twice_alerts_once(fleet: Fleet):
    worker = fleet.start("twice@ip-10-9-0-4")
    fleet.check()
    _kill(worker)
    event = _ecs("10.9.0.4")
    first = _on_arrival(fleet, sqs_batch([event], sent_at=time.time()))
    again = _on_arrival(fleet, sqs_batch([event], sent_at=time.time() + 1))
    assert len(_opened(first)) == 1 and _opened(again) == [] and again.alerts == ()
    assert len(fleet.publisher.messages) == 1


def test_a_kernel_line_naming_a_pool_pid_is_a_child_killed_naming_the_task(fleet: Fleet):
    # Given a prefork worker on host ip-10-9-0-5 running a task in its one pool child
    fleet.start("kids@ip-10-9-0-5")
    task = fleet.send("demo.sleepy", 120)
    fleet.wait_started(task)
    before = fleet.check()
    [row] = before.workers
    [child] = row["pool_pids"]
    # When the kernel OOM-kills the child and the line reaches us through a subscription
    os.kill(child, signal.SIGKILL)
    line = (
        f"{time.strftime('%b %d %H:%M:%S', time.gmtime())} ip-10-9-0-5 kernel: [4242.000001] "
        f"Memory cgroup out of memory: Killed process {child} (celery) total-vm:1398212kB, "
        "anon-rss:1012736kB, file-rss:14080kB, shmem-rss:0kB, UID:0 pgtables:2204kB"
    )
    payload = subscription_payload("/ec2/kernel", "ip-10-9-0-5", [(time.time(), line)])
    deadline = time.monotonic() + 15
    while True:  # the pool notices its dead child within a second or two
        report = _on_arrival(fleet, payload)
        found = [f for f in report.findings if f.kind == Kind.CHILD_KILLED]
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    # Then child_killed names the worker, the task, and the kernel's line
    assert found, [f.kind.value for f in report.findings]
    killed = found[0]
    assert killed.worker == "kids@ip-10-9-0-5" and killed.cause == Cause.OOM_KILLED
    assert task in [t.id for t in killed.tasks]
    assert any(
        e.startswith(f"kernel: Memory cgroup out of memory: Killed process {child}")
        for e in killed.evidence
    ), killed.evidence
    assert json.dumps(report.to_json())  # the report stays serialisable
