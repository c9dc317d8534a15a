"""Busy or dead? Silent workers judged by their broker connections (real workers, real brokers).

A solo (or blocked threads) worker does not answer remote control while it runs a task; only the
broker shows whether it still lives.
"""

from __future__ import annotations

import signal
import time

import pytest
import redis

from oomcheck.model import Kind, SourceState, SourceStatus, Verdict
from tests.integration.conftest import Fleet

pytestmark = pytest.mark.integration


def _only(report, kind):
    found = [f for f in report.findings if f.kind == kind]
    assert len(found) == 1, [(f.kind.value, f.worker) for f in report.findings]
    return found[0]


def _kill_mid_task(fleet: Fleet, pool: str, cgroup_reason: str | None) -> tuple[str, str, bool]:
    """A worker of ``pool`` killed while it runs a task: by the kernel's OOM killer in a memory
    cgroup where one can be made, else by SIGKILL. Returns (worker, task id, real OOM)."""
    real_oom = cgroup_reason is None and pool == "solo"
    worker = fleet.start(
        f"{pool}-victim@oomcheck-test", pool=pool, memory_mb=150 if real_oom else None
    )
    fleet.check()  # the roster knows it
    task = fleet.send("demo.hog", 400, 60) if real_oom else fleet.send("demo.sleepy", 120)
    fleet.wait_started(task)
    if not real_oom:
        worker.kill(signal.SIGKILL)
    assert worker.wait(30) is not None, "the worker should be dead"
    return worker.name, task, real_oom


@pytest.mark.parametrize("pool", ["solo", "threads"])
def test_silent_worker_killed_mid_task_is_lost_at_the_first_check(
    fleet: Fleet, pool: str, cgroup_or_skip_reason: str | None
):
    name, task, real_oom = _kill_mid_task(fleet, pool, cgroup_or_skip_reason)
    if pool == "solo" and not real_oom:
        print(f"no real OOM ({cgroup_or_skip_reason}): the worker got SIGKILL")
    time.sleep(1.0)  # the kernel closes the dead process's sockets within a second
    report = fleet.check()
    lost = _only(report, Kind.WORKER_LOST)
    assert lost.worker == name
    assert any(e.startswith("broker: ") for e in lost.evidence), lost.evidence
    fate = {t.id: t for t in lost.tasks}[task]
    # the solo pool acks after the task: its message waits in the unacked set
    expected = Verdict.AWAITING_REDELIVERY if pool == "solo" else Verdict.LOST
    assert fate.verdict == expected
    assert report.sources["presence"] == SourceStatus(SourceState.OK)
    assert [m.kind for m in fleet.publisher.messages] == ["worker_lost"]


def _status(report, name: str) -> str:
    return {w["name"]: w["status"] for w in report.workers}[name]


def test_solo_worker_busy_within_its_limit_is_busy_not_departed(fleet: Fleet):
    # Given a solo worker running a long task (it cannot answer remote control meanwhile)
    fleet.start("busy@oomcheck-test", pool="solo")
    fleet.check()
    task = fleet.send("demo.sleepy", 30)
    fleet.wait_started(task)
    for _ in range(3):
        report = fleet.check()
        # Then it is a busy worker: a status, no finding of any kind about it
        assert [f.kind.value for f in report.findings if f.worker == "busy@oomcheck-test"] == []
        assert _status(report, "busy@oomcheck-test") == "busy"
    assert fleet.publisher.messages == []


def test_frozen_worker_is_not_alerted(fleet: Fleet):
    worker = fleet.start("frozen@oomcheck-test", pool="prefork")
    fleet.check()
    worker.kill(signal.SIGSTOP)
    try:
        for _ in range(2):
            report = fleet.check()
            assert [f.kind.value for f in report.findings] == []
            assert _status(report, "frozen@oomcheck-test") == "busy"
        assert fleet.publisher.messages == []
    finally:
        worker.kill(signal.SIGCONT)


def test_one_of_several_workers_on_one_host_killed_is_exactly_that_one(fleet: Fleet):
    # Three solo workers on 127.0.0.1 started far enough apart to be told apart by their start;
    # all busy (silent), then one is killed
    names = [f"{n}@oomcheck-test" for n in ("a", "b", "c")]
    workers = []
    for i, name in enumerate(names):
        if i:
            # oomcheck.sources.presence.owners tells workers apart when 8 s or more apart
            time.sleep(8.5)
        workers.append(fleet.start(name, pool="solo"))
    fleet.check()
    tasks = [fleet.send("demo.sleepy", 60) for _ in names]
    fleet.wait_started(*tasks)
    workers[1].kill(signal.SIGKILL)
    workers[1].wait()
    time.sleep(1.0)
    report = fleet.check()
    lost = _only(report, Kind.WORKER_LOST)
    assert lost.worker == "b@oomcheck-test"
    assert [m.kind for m in fleet.publisher.messages] == ["worker_lost"]


def test_client_list_denied_by_an_acl_is_off_and_todays_behaviour(fleet: Fleet):
    base = redis.Redis.from_url(fleet.broker)
    user = "oomcheck-noclient"
    base.acl_setuser(
        user,
        enabled=True,
        passwords=["+pw"],
        keys=["*"],
        channels=["*"],
        commands=["+@all", "-client|list"],
    )
    try:
        host = fleet.broker.split("://", 1)[1]
        fleet.broker = f"redis://{user}:pw@{host}"
        fleet.start("acl@oomcheck-test", pool="solo")
        fleet.check()
        task = fleet.send("demo.sleepy", 30)
        fleet.wait_started(task)
        report = fleet.check()
        assert report.sources["presence"].state is SourceState.OFF, report.sources
        assert not [f for f in report.findings if f.alertable]
    finally:
        base.acl_deluser(user)
        base.close()


def test_solo_worker_on_either_broker_busy_then_killed(any_fleet: Fleet):
    # Given a solo worker busy in a task: still connected, no alert
    worker = any_fleet.start("solo@oomcheck-test", pool="solo")
    any_fleet.check()
    task = any_fleet.send("demo.sleepy", 60)
    any_fleet.wait_started(task)
    report = any_fleet.check()
    assert not [f for f in report.findings if f.alertable], report.findings
    # When it is killed mid-task
    worker.kill(signal.SIGKILL)
    worker.wait()
    time.sleep(1.0)
    # Then the first check after says it is lost, with the broker's word for it
    report = any_fleet.check()
    lost = _only(report, Kind.WORKER_LOST)
    assert any(e.startswith("broker: ") for e in lost.evidence), lost.evidence
    assert [t.id for t in lost.tasks] == [task]
