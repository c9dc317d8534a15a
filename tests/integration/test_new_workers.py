"""A worker started between two checks is known by the second (its pidbox binding on the broker
names it), not at the next discovery minutes later; a dead worker's leftover binding is asked
once, not every check."""

from __future__ import annotations

import json
import signal
import time
import uuid

import pytest

from oomcheck.demo.workers import WorkerProcess
from oomcheck.model import Kind
from tests.integration.conftest import Fleet

pytestmark = pytest.mark.integration


def _names(report) -> list[str]:
    return sorted(w["name"] for w in report.workers)


def test_a_worker_started_between_two_checks_is_listed_by_the_second_and_its_death_lost(
    fleet: Fleet,
):
    # Given a fleet of one, checked (a discovery: the next is 300 s away); a queue per worker
    tag = uuid.uuid4().hex[:6]
    fleet.queue = f"first-{tag}"
    fleet.start("first@oomcheck-test", pool="prefork")
    assert _names(fleet.check()) == ["first@oomcheck-test"]
    # When a second worker starts
    fleet.queue = f"second-{tag}"
    second = fleet.start("second@oomcheck-test", pool="solo")
    # Then the next check lists it
    report = fleet.check()
    assert _names(report) == ["first@oomcheck-test", "second@oomcheck-test"]
    assert report.stats["new_workers_asked"] == 1
    # And its death in the middle of a task is a worker_lost naming the task
    task = fleet.send("demo.sleepy", 120)
    fleet.wait_started(task)
    assert {w["name"]: w["status"] for w in fleet.check().workers}["second@oomcheck-test"] == (
        "busy"
    )
    second.kill(signal.SIGKILL)
    second.wait()
    time.sleep(1.0)  # the kernel closes the dead process's sockets within a second
    report = fleet.check()
    lost = [f for f in report.findings if f.kind == Kind.WORKER_LOST]
    assert [f.worker for f in lost] == ["second@oomcheck-test"]
    assert [t.id for t in lost[0].tasks] == [task]


def test_a_dead_workers_leftover_binding_is_asked_once(fleet: Fleet, tmp_path):
    # Given a worker killed before any check knew it: its pidbox binding stays on the broker
    ghost = WorkerProcess(
        "ghost@oomcheck-test",
        fleet.broker,
        fleet.backend,
        pool="solo",
        log_path=str(tmp_path / "ghost.log"),
    ).start()
    fleet.workers.append(ghost)
    ghost.wait_ready(fleet.control)
    ghost.kill(signal.SIGKILL)
    ghost.wait()
    fleet.start("live@oomcheck-test", pool="prefork")
    # When checks run: the first asks the ghost by name (it may be a newcomer), in vain
    report = fleet.check()
    assert report.stats["new_workers_asked"] == 2  # the ghost and the live worker, both unknown
    assert _names(report) == ["live@oomcheck-test"]
    meta = json.loads((fleet.tmp / "state.json").read_text())["items"]["meta"]
    assert meta["stale_bindings"] == ["ghost@oomcheck-test"]
    # Then later checks do not ask it again
    for _ in range(2):
        report = fleet.check()
        assert report.stats["new_workers_asked"] == 0
        assert _names(report) == ["live@oomcheck-test"]
