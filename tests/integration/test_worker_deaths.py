"""Real workers die in real ways; the checker must say what a person on call needs to know."""

from __future__ import annotations

import json
import signal
import time

import pytest

from oomcheck.demo.workers import wait_for
from oomcheck.model import Cause, Kind, SourceState, SourceStatus, Verdict
from tests.integration.conftest import Fleet, poll_checks

pytestmark = pytest.mark.integration


def _finding(report, kind: Kind):
    found = [f for f in report.findings if f.kind == kind]
    assert found, f"no {kind.value} in {[f.kind.value for f in report.findings]}"
    return found[0]


def test_healthy_fleet_check_is_clean(fleet: Fleet):
    for i in range(3):
        fleet.start(f"healthy{i}@oomcheck-test")
    report = fleet.check()
    assert report.exit_code == 0
    assert sorted(w["name"] for w in report.workers if w["status"] == "alive") == [
        f"healthy{i}@oomcheck-test" for i in range(3)
    ]
    assert report.sources["inspect"] == report.sources["results"] == SourceStatus(SourceState.OK)
    # the second run knows the roster: no discovery wait, still clean
    again = fleet.check()
    assert again.exit_code == 0 and not again.alerts


def test_whole_worker_sigkilled_with_plain_and_acks_late_task(any_fleet: Fleet):
    fleet = any_fleet
    rabbit = fleet.broker.startswith("amqp")
    # Given a prefork worker running a plain task and an acks_late task
    worker = fleet.start("victim@oomcheck-test", concurrency=2)
    plain = fleet.send("demo.sleepy", 120)
    late = fleet.send("demo.sleepy_late", 120)
    fleet.wait_started(plain, late)
    assert fleet.check().exit_code == 0
    # When the whole worker is SIGKILLed (main process and pool, as when its container dies)
    worker.kill(signal.SIGKILL)
    worker.wait()
    report = fleet.check()
    # Then one critical worker_lost names both tasks and what became of each: the plain task was
    # acked when it started; the acks_late one waits in Redis's unacked set for the visibility
    # timeout, or was requeued by RabbitMQ when the channel closed
    lost = _finding(report, Kind.WORKER_LOST)
    assert lost.worker == "victim@oomcheck-test"
    verdicts = {t.id: t.verdict for t in lost.tasks}
    late_verdict = Verdict.REDELIVERED if rabbit else Verdict.AWAITING_REDELIVERY
    assert verdicts == {plain: Verdict.LOST, late: late_verdict}
    assert report.exit_code == 2
    # RabbitMQ put the acks_late message straight back in the queue its only worker consumed:
    # that backlog with no consumer is an incident of its own
    expected = [("worker_lost", "open", True)]
    if rabbit:
        expected.insert(0, ("queue_orphaned", "open", True))
        orphaned = _finding(report, Kind.QUEUE_ORPHANED)
        assert orphaned.summary.startswith(f"queue {fleet.queue} has 1 message(s)")
    assert sorted((a.kind, a.action, a.published) for a in report.alerts) == expected
    message = next(m for m in fleet.publisher.messages if m.kind == "worker_lost")
    assert plain in message.text and late in message.text and "LOST" in message.text
    assert ("redelivered" if rabbit else "awaiting redelivery") in message.text
    assert len(message.subject) < 100 and "\n" not in message.subject
    if rabbit:
        broker = report.sources["broker"]
        assert broker.state is SourceState.OFF and broker.detail.startswith("RabbitMQ requeues")


def test_three_checks_after_one_death_send_exactly_one_alert(fleet: Fleet):
    worker = fleet.start("once@oomcheck-test")
    task = fleet.send("demo.sleepy", 120)
    fleet.wait_started(task)
    fleet.check()
    worker.kill(signal.SIGKILL)
    worker.wait()
    reports = [fleet.check() for _ in range(3)]
    assert all(r.exit_code == 2 for r in reports)
    assert [m.action.value for m in fleet.publisher.messages] == ["open"]
    assert len({f.incident_id for r in reports for f in r.findings if f.alertable}) == 1


def test_sigterm_of_idle_worker_is_not_alerted(fleet: Fleet):
    worker = fleet.start("leaver@oomcheck-test")
    fleet.start("stayer@oomcheck-test")
    fleet.check()
    worker.kill(signal.SIGTERM, whole_group=False)
    assert worker.wait(20) is not None
    report = fleet.check()
    assert report.exit_code == 0
    departed = _finding(report, Kind.WORKER_DEPARTED)
    assert departed.worker == "leaver@oomcheck-test"
    assert fleet.publisher.messages == []


def test_worker_killed_and_restarted_under_same_nodename(fleet: Fleet):
    worker = fleet.start("phoenix@oomcheck-test")
    task = fleet.send("demo.sleepy", 120)
    fleet.wait_started(task)
    fleet.check()
    worker.kill(signal.SIGKILL)
    worker.wait()
    fleet.start("phoenix@oomcheck-test")  # a supervisor brings it back between two checks
    report = fleet.check()
    restarted = _finding(report, Kind.WORKER_RESTARTED)
    assert restarted.worker == "phoenix@oomcheck-test"
    assert [(t.id, t.verdict) for t in restarted.tasks] == [(task, Verdict.LOST)]
    assert report.exit_code == 2
    assert [m.kind for m in fleet.publisher.messages] == ["worker_restarted"]


def test_prefork_child_oom_killed_names_the_task(fleet: Fleet, cgroup_or_skip_reason):
    if cgroup_or_skip_reason:
        pytest.skip(f"real OOM needs a memory cgroup: {cgroup_or_skip_reason}")
    # Given a worker whose memory cgroup holds 200 MiB
    fleet.start("hungry@oomcheck-test", memory_mb=200)
    cgroup = fleet.cgroups[-1]
    fleet.check()
    # When a task asks for 400 MiB, the kernel kills the pool child running it
    task = fleet.send("demo.hog", 400, 60)
    wait_for(lambda: cgroup.oom_kills() > 0, 30, what="the kernel's OOM kill")
    wait_for(
        lambda: b"WorkerLostError" in (fleet.result(task) or b""),
        30,
        what="billiard to record WorkerLostError",
    )
    report = fleet.check()
    # Then child_killed names the task, and the worker itself is fine
    child = _finding(report, Kind.CHILD_KILLED)
    assert child.worker == "hungry@oomcheck-test"
    assert [(t.id, t.verdict) for t in child.tasks] == [(task, Verdict.LOST)]
    assert child.cause == Cause.KILLED
    assert not [f for f in report.findings if f.kind == Kind.WORKER_LOST]
    assert fleet.publisher.messages[0].kind == "child_killed"


def test_task_that_always_ooms_with_reject_on_worker_lost_is_poison(
    fleet: Fleet, cgroup_or_skip_reason
):
    if cgroup_or_skip_reason:
        pytest.skip(f"real OOM needs a memory cgroup: {cgroup_or_skip_reason}")
    fleet.start("looper@oomcheck-test", memory_mb=200)
    fleet.check()
    task = fleet.send("demo.loop_hog", 400)
    report = poll_checks(
        fleet,
        lambda r: any(f.kind == Kind.POISON_TASK for f in r.findings),
        timeout=90,
        interval=0.5,
    )
    poison = _finding(report, Kind.POISON_TASK)
    assert poison.tasks[0].id == task and poison.tasks[0].verdict == Verdict.KILL_LOOP
    assert any(f"control revoke {task}" in a for a in poison.advice)
    assert "poison_task" in [m.kind for m in fleet.publisher.messages]
    fleet.control.revoke(task, terminate=True, signal="SIGKILL")


def test_report_json_matches_the_contract(fleet: Fleet):
    fleet.start("shape@oomcheck-test")
    body = fleet.check().to_json()
    assert set(body) >= {
        "schema",
        "mode",
        "checked_at",
        "duration_ms",
        "workers",
        "findings",
        "sources",
        "stats",
        "alerts",
    }
    assert body["schema"] == 1 and body["mode"] == "check"
    assert set(body["workers"][0]) == {"name", "pid", "uptime_s", "pool_pids", "active", "status"}
    assert {"result_keys_scanned", "started_tasks", "alerts_published"} <= set(body["stats"])
    json.dumps(body)


@pytest.mark.parametrize(
    ("sig", "kind", "code", "alerts"),
    [
        pytest.param(signal.SIGKILL, Kind.WORKER_LOST, 2, ["worker_lost"], id="killed"),
        pytest.param(signal.SIGTERM, Kind.WORKER_DEPARTED, 0, [], id="shut-down"),
    ],
)
def test_idle_worker_killed_is_lost_and_shut_down_is_departed(
    fleet: Fleet, sig: signal.Signals, kind: Kind, code: int, alerts: list[str]
):
    # Given one idle worker, known to the roster (alone, so the broker can tell its connections)
    worker = fleet.start("idle@oomcheck-test")
    assert fleet.check().exit_code == 0
    # When it is SIGKILLed (or shut down with SIGTERM) with no task running
    worker.kill(sig, whole_group=sig == signal.SIGKILL)
    assert worker.wait(20) is not None
    time.sleep(1.0)  # the kernel closes the dead process's sockets within a second
    report = fleet.check()
    # Then its connections are gone either way; only the kill leaves its pidbox binding behind
    found = _finding(report, kind)
    assert found.worker == "idle@oomcheck-test"
    assert any(e.startswith("broker: ") for e in found.evidence), found.evidence
    assert report.exit_code == code
    assert [m.kind for m in fleet.publisher.messages] == alerts
