"""Busy or dead among workers sharing one address, started within a second of each other (as
`celery multi`, a systemd unit or docker-compose start them): their start times cannot tell them
apart, the counts of their broker subscriptions can."""

from __future__ import annotations

import signal
import time
import uuid

import pytest

from oomcheck.demo.workers import MemoryCgroup, WorkerProcess
from oomcheck.model import Kind
from tests.integration.conftest import Fleet

pytestmark = pytest.mark.integration


def _start_together(
    fleet: Fleet, pools: list[str], *, oom_victim: bool, env: dict[str, str] | None = None
) -> list[tuple[WorkerProcess, str]]:
    """Workers of ``pools`` started at once (each on a queue of its own, so that a task goes to
    the worker meant to run it); the first in a memory cgroup of 150 MB when ``oom_victim``.
    Returns (worker, its queue) pairs."""
    tag = uuid.uuid4().hex[:6]
    started: list[tuple[WorkerProcess, str]] = []
    for i, pool in enumerate(pools):
        cgroup = None
        if i == 0 and oom_victim:
            cgroup = MemoryCgroup.create(150 * 1024 * 1024)
            fleet.cgroups.append(cgroup)
        queue = f"q{i}-{tag}"
        worker = WorkerProcess(
            f"w{i}-{pool}@oomcheck-test",
            fleet.broker,
            fleet.backend,
            pool=pool,
            cgroup=cgroup,
            log_path=str(fleet.tmp / f"w{i}.log"),
            extra_env={"OOMCHECK_DEMO_QUEUE": queue, **(env or {})},
        )
        fleet.workers.append(worker.start())
        started.append((worker, queue))
    for worker, _ in started:
        worker.wait_ready(fleet.control)
    return started


def _send(fleet: Fleet, queue: str, task: str, *args: object) -> str:
    fleet.queue = queue
    return fleet.send(task, *args)


def _kill_mid_task(fleet: Fleet, victim: WorkerProcess, queue: str, real_oom: bool) -> str:
    task = (
        _send(fleet, queue, "demo.hog", 400, 60)
        if real_oom
        else _send(fleet, queue, "demo.sleepy", 120)
    )
    fleet.wait_started(task)
    if not real_oom:
        victim.kill(signal.SIGKILL)
    assert victim.wait(30) is not None, "the worker should be dead"
    time.sleep(1.0)  # the kernel closes the dead process's sockets within a second
    return task


@pytest.mark.parametrize(
    ("victim_pool", "peers"),
    [
        pytest.param("solo", ["prefork"], id="solo-of-2"),
        pytest.param("solo", ["prefork", "solo"], id="solo-of-3"),
        pytest.param("threads", ["solo"], id="threads-of-2"),
    ],
)
def test_a_worker_killed_mid_task_among_peers_started_with_it_is_lost_at_the_first_check(
    fleet: Fleet, victim_pool: str, peers: list[str], cgroup_or_skip_reason: str | None
):
    real_oom = cgroup_or_skip_reason is None
    if not real_oom:
        print(f"no real OOM ({cgroup_or_skip_reason}): the worker gets SIGKILL")
    # Given workers on one address started together; a check while all answer
    started = _start_together(fleet, [victim_pool, *peers], oom_victim=real_oom)
    (victim, queue), count = started[0], len(started)
    assert not fleet.check().findings
    # When the victim is killed in the middle of a task
    task = _kill_mid_task(fleet, victim, queue, real_oom)
    # Then the first check says it is lost, naming the task, on the broker's counts
    report = fleet.check()
    lost = [f for f in report.findings if f.kind == Kind.WORKER_LOST]
    assert [f.worker for f in lost] == [victim.name], report.findings
    assert task in [t.id for t in lost[0].tasks]
    assert any(f"1 of {count} workers' subscriptions" in e for e in lost[0].evidence), lost[
        0
    ].evidence
    assert [m.kind for m in fleet.publisher.messages] == ["worker_lost"]


def test_two_silent_at_once_the_busy_one_is_not_reported_dead(fleet: Fleet):
    # Given three workers started together: one busy in a long task, one killed mid-task
    started = _start_together(fleet, ["solo", "solo", "prefork"], oom_victim=False)
    (busy, busy_queue), (victim, victim_queue) = started[0], started[1]
    fleet.check()
    long_task = _send(fleet, busy_queue, "demo.sleepy", 60)
    fleet.wait_started(long_task)
    _kill_mid_task(fleet, victim, victim_queue, real_oom=False)
    # When the next checks run, one share of two silent workers' is gone: counts cannot say whose
    for _ in range(2):
        report = fleet.check()
        # Then the busy worker is never reported dead
        assert busy.name not in [f.worker for f in report.findings if f.alertable], [
            (f.kind.value, f.worker) for f in report.findings
        ]
        assert {w["name"]: w["status"] for w in report.workers}[busy.name] == "busy"


def test_a_worker_that_names_its_connections_is_told_apart_by_name(fleet: Fleet):
    # Given two workers on one host started together, naming their connections after themselves
    started = _start_together(
        fleet, ["solo", "solo"], oom_victim=False, env={"OOMCHECK_DEMO_NAME_CONNECTIONS": "1"}
    )
    (busy, busy_queue), (victim, victim_queue) = started
    fleet.check()
    # When one is busy and the other killed mid-task (both silent)
    long_task = _send(fleet, busy_queue, "demo.sleepy", 60)
    fleet.wait_started(long_task)
    task = _kill_mid_task(fleet, victim, victim_queue, real_oom=False)
    # Then the names tell which is which: the killed one lost, the busy one busy
    report = fleet.check()
    lost = [f for f in report.findings if f.kind == Kind.WORKER_LOST]
    assert [f.worker for f in lost] == [victim.name]
    assert task in [t.id for t in lost[0].tasks]
    assert "broker: no connection named after it is open any more" in "; ".join(lost[0].evidence)
    assert {w["name"]: w["status"] for w in report.workers}[busy.name] == "busy"
