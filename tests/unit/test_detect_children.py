"""The children rule family: pool processes killed under a live worker (issue 8, bugs 2 and 5)."""

from __future__ import annotations

from oomcheck.model import Cause, IncidentKey, Kind, LostFailure, Severity, Verdict
from tests.unit.scenario import (
    LIMITS,
    T0,
    Replay,
    actions,
    kernel_kill,
    kinds,
    obs,
    only,
    snap,
    started,
    task,
)

W = "celery@ip-10-0-1-5"


def test_kernel_line_naming_an_idle_pool_child_is_reported_not_dropped():
    # Bug 2: a kernel OOM line names pool child 102 of a live worker; it ran no task.
    replay = Replay()
    replay.step(obs(T0, [snap(W, pool_pids=[101, 102])]))
    line = kernel_kill(102, at=T0 + 30)
    findings = replay.step(obs(T0 + 60, [snap(W, pool_pids=[101, 103], at=T0 + 60)], exits=[line]))
    child = only(findings, Kind.CHILD_KILLED)
    assert child.severity == Severity.WARNING and child.worker == W
    assert child.cause == Cause.OOM_KILLED and child.tasks == ()
    assert "while idle" in child.summary
    assert any("Killed process 102" in e for e in child.evidence)
    assert line.event_id in replay.state.processed_events
    # the same line read again (overlapping windows) is not a second kill
    replay.step(obs(T0 + 120, [snap(W, pool_pids=[101, 103], at=T0 + 120)], exits=[line]))
    assert actions(replay, "child_killed") == ["open"]


def test_kernel_line_naming_a_busy_pool_child_names_its_task():
    # Bug 5: the kernel-line child path with a task.
    replay = Replay()
    replay.step(
        obs(
            T0,
            [snap(W, pool_pids=[101, 102], active=[task("big", 102)], limits=LIMITS)],
            started_=[started("big", W, 102)],
        )
    )
    findings = replay.step(
        obs(
            T0 + 60,
            [snap(W, pool_pids=[101, 103], at=T0 + 60)],
            exits=[kernel_kill(102)],
            task_status={"big": "FAILURE"},
        )
    )
    child = only(findings, Kind.CHILD_KILLED)
    assert [t.id for t in child.tasks] == ["big"]
    assert child.cause == Cause.OOM_KILLED and child.exit_code == 137
    assert replay.state.kills["big"].kills[0].pid == 102


def test_kernel_line_naming_a_live_pid_is_about_another_process():
    replay = Replay()
    replay.step(obs(T0, [snap(W, pool_pids=[101, 102])]))
    findings = replay.step(
        obs(T0 + 60, [snap(W, pool_pids=[101, 102], at=T0 + 60)], exits=[kernel_kill(102)])
    )
    assert kinds(findings, alertable_only=False) == []


def test_worker_lost_error_and_kernel_line_for_one_child_make_one_finding():
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
            exits=[kernel_kill(101)],
        )
    )
    child = only(findings, Kind.CHILD_KILLED)
    assert [t.id for t in child.tasks] == ["c1"]
    assert child.tasks[0].verdict == Verdict.LOST
    assert child.cause == Cause.OOM_KILLED
    assert len(replay.state.kills["c1"].kills) == 1  # one death, however many sources show it


def test_requeued_task_on_a_new_child_is_a_child_death():
    replay = Replay()
    replay.step(
        obs(
            T0,
            [
                snap(
                    W, pool_pids=[101, 102], active=[task("r", 101, name="app.loop")], limits=LIMITS
                )
            ],
        )
    )
    findings = replay.step(
        obs(
            T0 + 10,
            [
                snap(
                    W,
                    pool_pids=[102, 105],
                    at=T0 + 10,
                    active=[task("r", 105, name="app.loop")],
                    limits=LIMITS,
                )
            ],
        )
    )
    child = only(findings, Kind.CHILD_KILLED)
    assert child.tasks[0].verdict == Verdict.REDELIVERED


def test_idle_child_killed_beside_a_kill_loop_task_still_gets_its_finding():
    # Issue 16 §5: a kill-loop task's process and an idle pool child die on one worker in one run.
    # Given task P looping on W: each run its child dies and P is redelivered to a new child
    replay = Replay()
    pid = 101
    replay.step(obs(T0, [snap(W, pool_pids=[pid, 200], limits=LIMITS, active=[task("P", pid)])]))
    for i in range(1, 4):
        pid += 1000
        at = T0 + 10 * i
        replay.step(
            obs(
                at,
                [
                    snap(
                        W,
                        pool_pids=[pid, 200],
                        at=at,
                        limits=LIMITS,
                        active=[task("P", pid, start=at - 2)],
                    )
                ],
            )
        )
    assert actions(replay, "poison_task") == ["open"]
    # When P's child dies again and, in the same run, idle child 200 is OOM-killed
    at = T0 + 40
    idle_kill = kernel_kill(200, at=at - 5)
    findings = replay.step(
        obs(
            at,
            [
                snap(
                    W,
                    pool_pids=[pid + 1000, 201],
                    at=at,
                    limits=LIMITS,
                    active=[task("P", pid + 1000, start=at - 2)],
                )
            ],
            exits=[idle_kill],
        )
    )
    # Then the idle child's kill is its own child_killed, naming no task and none of P's deaths
    child = only(findings, Kind.CHILD_KILLED)
    assert child.severity == Severity.WARNING and child.worker == W
    assert child.tasks == () and "while idle" in child.summary
    assert child.cause == Cause.OOM_KILLED
    assert child.evidence == (f"kernel: {idle_kill.text}",)  # P's death is not in it
    assert child.key == IncidentKey(Kind.CHILD_KILLED, f"{W}:{idle_kill.event_id}")
    assert idle_kill.event_id in replay.state.processed_events
    # And the loop is still reported as poison_task, not as a child death
    poison = only(findings, Kind.POISON_TASK)
    assert [t.id for t in poison.tasks] == ["P"] and poison.tasks[0].verdict == Verdict.KILL_LOOP
    assert actions(replay, "child_killed") == ["open", "open", "open"]  # two of P, one idle
