"""evaluate() replayed over scripted observation sequences, one behaviour per test."""

from __future__ import annotations

import pytest

from oomcheck.model import (
    Cause,
    ExitEvidence,
    Kind,
    LostFailure,
    Policy,
    Severity,
    UnackedMessage,
    Verdict,
    WorkerStatus,
)
from tests.unit.scenario import LIMITS, T0, Replay, kinds, obs, only, snap, started, task

W = "celery@ip-10-0-1-5"
W2 = "celery@ip-10-0-1-6"


def ecs_oom(at: float = T0 + 30) -> ExitEvidence:
    """An ECS task-stopped record for W's container: exit 137, OutOfMemoryError."""
    return ExitEvidence(
        source="ecs",
        event_id="e1",
        at=at,
        cause=Cause.OOM_KILLED,
        exit_code=137,
        text="exitCode 137 OutOfMemoryError",
        hosts=("10.0.1.5",),
    )


def test_healthy_fleet_gives_no_findings_and_writes_nothing_new():
    # Given two live workers seen twice
    replay = Replay()
    replay.step(obs(T0, [snap(W), snap(W2, pid=200)]))
    before = replay.state
    # When they answer again, unchanged
    findings = replay.step(obs(T0 + 60, [snap(W, at=T0 + 60), snap(W2, pid=200, at=T0 + 60)]))
    # Then nothing is found and the roster is the same objects
    assert findings == []
    assert replay.state.workers == before.workers
    assert replay.sent == []


@pytest.mark.parametrize(
    "second_run",
    [
        pytest.param(
            lambda: [snap(W, at=T0 + 60, reping=True)], id="missed-broadcast-answered-reping"
        ),
        pytest.param(lambda: [snap(W, at=T0 + 60, active=[task("t1")])], id="busy-prefork-answers"),
    ],
)
def test_false_positives_are_not_deaths(second_run):
    replay = Replay()
    replay.step(obs(T0, [snap(W, active=[task("t1")])], started_=[started("t1", W)]))
    findings = replay.step(obs(T0 + 60, second_run(), started_=[started("t1", W)]))
    assert kinds(findings) == []
    assert replay.state.workers[W].status == WorkerStatus.ALIVE


def test_clean_shutdown_of_idle_worker_is_departed_not_alerted():
    replay = Replay()
    replay.step(obs(T0, [snap(W), snap(W2, pid=200)]))
    findings = replay.step(obs(T0 + 60, [snap(W2, pid=200, at=T0 + 60)]))
    assert kinds(findings) == []
    departed = only(findings, Kind.WORKER_DEPARTED)
    assert departed.severity == Severity.INFO and departed.worker == W
    assert replay.state.workers[W].status == WorkerStatus.DEPARTED
    assert replay.sent == []


def test_sigkilled_worker_with_plain_and_acks_late_task():
    # Given W runs a plain task (acked at start) and an acks_late task
    replay = Replay()
    active = [
        task("plain", 101, acknowledged=True),
        task("late", 102, name="app.late", acknowledged=False),
    ]
    replay.step(
        obs(
            T0,
            [snap(W, active=active, limits=LIMITS)],
            started_=[started("plain", W, 101), started("late", W, 102, name="app.late")],
        )
    )
    # When W stops answering; both STARTED records remain; the acks_late one is unacked
    findings = replay.step(
        obs(
            T0 + 60,
            [],
            started_=[started("plain", W, 101), started("late", W, 102, name="app.late")],
            unacked=[UnackedMessage("late", "app.late", "tag-1", fetched_at=T0 - 40)],
        )
    )
    # Then one critical worker_lost names both tasks with their fates
    lost = only(findings, Kind.WORKER_LOST)
    assert lost.severity == Severity.CRITICAL and lost.worker == W
    fates = {t.id: t for t in lost.tasks}
    assert fates["plain"].verdict == Verdict.LOST
    assert fates["late"].verdict == Verdict.AWAITING_REDELIVERY
    assert fates["late"].redeliver_at == pytest.approx(T0 - 40 + 3600)
    assert replay.state.workers[W].status == WorkerStatus.LOST
    assert [(k, a) for _, k, a in replay.sent] == [("worker_lost", "open")]


def test_three_checks_after_one_death_alert_exactly_once():
    replay = Replay()
    replay.step(obs(T0, [snap(W, active=[task("t1")], limits=LIMITS)], started_=[started("t1", W)]))
    for i in range(1, 4):
        findings = replay.step(obs(T0 + 60 * i, [], started_=[started("t1", W)]))
        assert kinds(findings) == ["worker_lost"]
    assert [(k, a) for _, k, a in replay.sent] == [("worker_lost", "open")]
    incident_ids = {f.incident_id for run in replay.history[1:] for f in run}
    assert len(incident_ids) == 1


def test_reminder_while_open_then_resolve_when_worker_returns():
    replay = Replay(policy=Policy(remind_after_s=600))
    replay.step(obs(T0, [snap(W, active=[task("t1")], limits=LIMITS)], started_=[started("t1", W)]))
    replay.step(obs(T0 + 60, [], started_=[started("t1", W)]))
    replay.step(obs(T0 + 700, [], started_=[started("t1", W)]))
    # the worker comes back as a new process (restarted by its supervisor)
    findings = replay.step(
        obs(T0 + 760, [snap(W, pid=300, boot=T0 + 750, at=T0 + 760)], started_=[started("t1", W)])
    )
    assert [a for _, _, a in replay.sent] == ["open", "remind", "resolve"]
    recovered = only(findings, Kind.WORKER_RECOVERED)
    assert "restarted" in recovered.summary
    assert replay.state.workers[W].status == WorkerStatus.ALIVE


def test_lost_worker_resolved_when_fleet_is_back_to_size():
    replay = Replay()
    replay.step(
        obs(
            T0,
            [snap(W, active=[task("t1")], limits=LIMITS), snap(W2, pid=200)],
            started_=[started("t1", W)],
        )
    )
    replay.step(obs(T0 + 60, [snap(W2, pid=200, at=T0 + 60)], started_=[started("t1", W)]))
    findings = replay.step(
        obs(
            T0 + 120,
            [
                snap(W2, pid=200, at=T0 + 120),
                snap("celery@ip-10-0-9-9", pid=5, boot=T0 + 100, at=T0 + 120),
            ],
            started_=[started("t1", W)],
        )
    )
    recovered = only(findings, Kind.WORKER_RECOVERED)
    assert "celery@ip-10-0-9-9" in recovered.summary
    assert [a for _, _, a in replay.sent] == ["open", "resolve"]


def test_busy_solo_worker_is_not_dead_until_its_limit_passes():
    limits = {"app.slow": LIMITS["app.late"]}  # time_limit 600
    replay = Replay()
    replay.step(obs(T0, [snap(W, pool="solo", pool_pids=[100], limits=limits)]))
    # the worker starts a task and goes quiet: STARTED by its own pid
    running = [started("s1", W, 100, name="app.slow", written=T0 + 10)]
    findings = replay.step(obs(T0 + 60, [], started_=running))
    assert kinds(findings) == []
    assert replay.state.workers[W].status == WorkerStatus.BUSY
    findings = replay.step(obs(T0 + 500, [], started_=running))
    assert kinds(findings) == []
    # past 600 s + grace: no longer "busy"
    findings = replay.step(obs(T0 + 700, [], started_=running))
    lost = only(findings, Kind.WORKER_LOST)
    assert any("silent past the limit" in e for e in lost.evidence)


def test_busy_solo_worker_with_oom_evidence_is_dead_at_once():
    limits = {"app.slow": LIMITS["app.late"]}
    replay = Replay()
    replay.step(obs(T0, [snap(W, pool="solo", pool_pids=[100], limits=limits)]))
    oom = ecs_oom()
    findings = replay.step(
        obs(
            T0 + 60,
            [],
            exits=[oom],
            started_=[started("s1", W, 100, name="app.slow", written=T0 + 10)],
        )
    )
    lost = only(findings, Kind.WORKER_LOST)
    assert (lost.cause, lost.exit_code) == (Cause.OOM_KILLED, 137)


def test_long_task_within_limit_is_fine_then_stalled_past_it():
    limits = {"app.late": LIMITS["app.late"]}
    replay = Replay()
    running = [task("L", 101, name="app.late", start=T0 - 100)]
    findings = replay.step(obs(T0, [snap(W, active=running, limits=limits)]))
    assert kinds(findings) == []
    findings = replay.step(obs(T0 + 600, [snap(W, active=running, limits=limits, at=T0 + 600)]))
    stalled = only(findings, Kind.TASK_STALLED)
    assert stalled.tasks[0].id == "L" and stalled.cause == Cause.TIME_LIMIT
    # the task ends: the incident resolves
    findings = replay.step(obs(T0 + 660, [snap(W, limits=limits, at=T0 + 660)]))
    assert str(only(findings, Kind.WORKER_RECOVERED).key) == "task_stalled:L"


def test_configured_expectation_applies_when_no_time_limit():
    replay = Replay(policy=Policy(task_expectations={"app.work": 60}))
    findings = replay.step(obs(T0, [snap(W, active=[task("x", start=T0 - 200)])]))
    assert kinds(findings) == ["task_stalled"]


def test_restart_under_same_nodename_with_orphan():
    replay = Replay()
    replay.step(
        obs(
            T0, [snap(W, active=[task("t1", 101)], limits=LIMITS)], started_=[started("t1", W, 101)]
        )
    )
    findings = replay.step(
        obs(
            T0 + 60,
            [snap(W, pid=100, boot=T0 + 50, at=T0 + 60, pool_pids=[111, 112], limits=LIMITS)],
            started_=[started("t1", W, 101)],
        )
    )
    restarted = only(findings, Kind.WORKER_RESTARTED)
    assert restarted.severity == Severity.WARNING
    assert [t.id for t in restarted.tasks] == ["t1"]
    assert restarted.tasks[0].verdict == Verdict.LOST


def test_clean_restart_without_tasks_is_info():
    replay = Replay()
    replay.step(obs(T0, [snap(W)]))
    findings = replay.step(obs(T0 + 60, [snap(W, pid=999, boot=T0 + 55, at=T0 + 60)]))
    assert kinds(findings) == []
    assert only(findings, Kind.WORKER_RESTARTED).severity == Severity.INFO


def test_child_killed_from_worker_lost_error():
    replay = Replay()
    replay.step(
        obs(
            T0, [snap(W, active=[task("c1", 101)], limits=LIMITS)], started_=[started("c1", W, 101)]
        )
    )
    failure = LostFailure(
        id="c1",
        message="Worker exited prematurely: signal 9 (SIGKILL) Job: 3.",
        signal=9,
        cause=Cause.KILLED,
        written_at=T0 + 20,
    )
    findings = replay.step(
        obs(
            T0 + 60,
            [snap(W, pool_pids=[102, 103], at=T0 + 60)],
            lost=[failure],
            task_status={"c1": "FAILURE"},
        )
    )
    child = only(findings, Kind.CHILD_KILLED)
    assert child.worker == W and child.cause == Cause.KILLED
    assert [(t.id, t.verdict) for t in child.tasks] == [("c1", Verdict.LOST)]
    # the same failure record seen again is not a new kill
    findings = replay.step(
        obs(T0 + 120, [snap(W, pool_pids=[102, 103], at=T0 + 120)], lost=[failure])
    )
    assert kinds(findings) == []
    assert len(replay.state.kills["c1"].kills) == 1


def test_old_worker_lost_error_on_first_run_is_reported_not_alerted():
    replay = Replay()
    failure = LostFailure(
        id="old", message="signal 9", signal=9, written_at=T0 - 7200, cause=Cause.KILLED
    )
    findings = replay.step(obs(T0, [snap(W)], lost=[failure]))
    assert kinds(findings) == []
    assert only(findings, Kind.CHILD_KILLED).severity == Severity.INFO


def test_started_on_dead_pool_pid_is_child_killed():
    replay = Replay()
    replay.step(obs(T0, [snap(W, limits=LIMITS)]))
    findings = replay.step(
        obs(
            T0 + 60,
            [snap(W, pool_pids=[101, 102], at=T0 + 60, limits=LIMITS)],
            started_=[started("d1", W, 150, written=T0 + 30)],
        )
    )
    child = only(findings, Kind.CHILD_KILLED)
    assert child.tasks[0].id == "d1" and child.tasks[0].verdict == Verdict.LOST


def test_reject_on_worker_lost_loop_becomes_poison_task():
    replay = Replay()
    pid = 101
    replay.step(
        obs(
            T0,
            [
                snap(
                    W, pool_pids=[pid, 200], limits=LIMITS, active=[task("P", pid, name="app.loop")]
                )
            ],
        )
    )
    sent_child = 0
    for i in range(1, 5):
        pid += 1000
        findings = replay.step(
            obs(
                T0 + 10 * i,
                [
                    snap(
                        W,
                        pool_pids=[pid, 200],
                        at=T0 + 10 * i,
                        limits=LIMITS,
                        active=[task("P", pid, name="app.loop", start=T0 + 10 * i - 2)],
                    )
                ],
            )
        )
        sent_child += sum(1 for f in findings if f.kind == Kind.CHILD_KILLED and f.alertable)
    poison = only(findings, Kind.POISON_TASK)
    assert poison.severity == Severity.CRITICAL
    assert poison.tasks[0].verdict == Verdict.KILL_LOOP
    assert any("control revoke P" in a for a in poison.advice)
    # child_killed alerts stop once the loop is recognised
    assert sent_child == 2
    assert [k for _, k, a in replay.sent if a == "open"].count("poison_task") == 1


def test_inspect_failure_declares_nobody_dead_and_alerts_after_three_runs():
    replay = Replay()
    replay.step(obs(T0, [snap(W, active=[task("t1")])], started_=[started("t1", W)]))
    for i in range(1, 4):
        findings = replay.step(
            obs(
                T0 + 60 * i,
                None,
                started_=[started("t1", W)],
                errors={"inspect": "OperationalError: connection refused"},
            )
        )
        assert Kind.WORKER_LOST not in {f.kind for f in findings}
    assert kinds(findings) == ["source_unavailable"]
    assert replay.state.workers[W].status == WorkerStatus.ALIVE
    findings = replay.step(obs(T0 + 240, [snap(W, at=T0 + 240)]))
    assert str(only(findings, Kind.WORKER_RECOVERED).key) == "source_unavailable:inspect"
    assert [a for _, k, a in replay.sent if k == "source_unavailable"] == ["open", "resolve"]


def test_orphans_of_a_worker_nobody_knew():
    replay = Replay()
    # (started over an hour ago: past any limit it could still be running within)
    record = started("o1", "celery@gone", 7, written=T0 - 4000)
    findings = replay.step(obs(T0, [snap(W)], started_=[record]))
    orphaned = only(findings, Kind.TASK_ORPHANED)
    assert orphaned.worker == "celery@gone" and orphaned.tasks[0].id == "o1"


def test_oom_evidence_alerts_an_idle_death():
    replay = Replay()
    replay.step(obs(T0, [snap(W)]))
    oom = ecs_oom()
    findings = replay.step(obs(T0 + 60, [], exits=[oom]))
    lost = only(findings, Kind.WORKER_LOST)
    assert lost.cause == Cause.OOM_KILLED and lost.exit_code == 137 and lost.tasks == ()


def test_late_evidence_turns_departed_into_lost():
    replay = Replay()
    replay.step(obs(T0, [snap(W)]))
    findings = replay.step(obs(T0 + 60, []))
    assert kinds(findings) == []
    oom = ecs_oom()
    findings = replay.step(obs(T0 + 120, [], exits=[oom]))
    assert kinds(findings) == ["worker_lost"]
    # evidence is used once
    findings = replay.step(obs(T0 + 180, [], exits=[oom]))
    assert [a for _, _, a in replay.sent] == ["open"]


def test_clean_stop_evidence_keeps_departure_quiet():
    replay = Replay()
    replay.step(obs(T0, [snap(W)]))
    stop = ExitEvidence(
        source="ecs",
        event_id="e2",
        at=T0 + 30,
        cause=Cause.EXITED,
        exit_code=0,
        text="exitCode 0 ServiceSchedulerInitiated",
        hosts=("10.0.1.5",),
        clean=True,
    )
    findings = replay.step(obs(T0 + 60, [], exits=[stop]))
    assert kinds(findings) == []


def test_unmatched_oom_evidence_is_its_own_finding():
    replay = Replay()
    oom = ExitEvidence(
        source="kernel",
        event_id="k1",
        at=T0,
        cause=Cause.OOM_KILLED,
        exit_code=137,
        text="Killed process 4321 (python3)",
        hosts=("db-host",),
        pid=4321,
        process="python3",
    )
    findings = replay.step(obs(T0 + 10, [snap(W)], exits=[oom]))
    assert kinds(findings) == ["oom_kill"]


def test_failed_publish_stays_pending_and_is_retried():
    from oomcheck.alerting.outbox import due, mark_failed, mark_sent

    replay = Replay(deliver=False)
    replay.step(obs(T0, [snap(W, active=[task("t1")], limits=LIMITS)], started_=[started("t1", W)]))
    replay.step(obs(T0 + 60, [], started_=[started("t1", W)]))
    [(incident, action)] = due(replay.state)
    replay.state = mark_failed(replay.state, incident.id, action, "Throttling")
    replay.step(obs(T0 + 120, [], started_=[started("t1", W)]))
    [(again, action2)] = due(replay.state)
    assert again.id == incident.id and action2 == action
    assert again.pending[0].attempts == 1
    replay.state = mark_sent(replay.state, incident.id, action, T0 + 121)
    assert due(replay.state) == []


def test_evaluate_is_pure_and_deterministic():
    from oomcheck.detect import evaluate

    replay = Replay()
    replay.step(obs(T0, [snap(W, active=[task("t1")], limits=LIMITS)], started_=[started("t1", W)]))
    observation = obs(T0 + 60, [], started_=[started("t1", W)])
    first = evaluate(replay.state, observation, Policy(), T0 + 60)
    second = evaluate(replay.state, observation, Policy(), T0 + 60)
    assert first == second
