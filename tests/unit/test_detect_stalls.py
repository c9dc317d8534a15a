"""The stalls rule family: task_stalled, and when its incident may be resolved (issue 8, bug 4)."""

from __future__ import annotations

from oomcheck.model import Kind, Policy, TaskLimits
from tests.unit.scenario import T0, Replay, actions, kinds, obs, only, snap, started, task

W = "celery@ip-10-0-1-5"
LIMITS = {"app.late": TaskLimits(time_limit=600, acks_late=True)}


def _stalled_replay() -> Replay:
    replay = Replay()
    running = [task("L", 101, name="app.late", start=T0 - 700)]
    findings = replay.step(
        obs(
            T0,
            [snap(W, active=running, limits=LIMITS)],
            started_=[started("L", W, 101, name="app.late", written=T0 - 700)],
        )
    )
    assert kinds(findings) == ["task_stalled"]
    return replay


def test_stall_is_held_not_resolved_when_nothing_can_show_the_task():
    # Bug 4: the worker answers stats but not active(), and the result backend is down: the
    # stall rule cannot see the task, so its incident stays open (no resolve, no recovery notice).
    replay = _stalled_replay()
    findings = replay.step(
        obs(
            T0 + 60,
            [snap(W, active=None, limits=LIMITS, at=T0 + 60)],
            started_=None,
            errors={"results": "down"},
        )
    )
    assert only(findings, Kind.TASK_STALLED).tasks[0].id == "L"
    assert actions(replay, "task_stalled") == ["open"]


def test_stall_seen_only_in_active_is_held_when_active_is_missing():
    # Bug 4: with task_track_started off only active() shows the task; a run where the worker
    # answers stats but not active() must not resolve the stall by falling through.
    replay = Replay()
    running = [task("L", 101, name="app.late", start=T0 - 700)]
    assert kinds(replay.step(obs(T0, [snap(W, active=running, limits=LIMITS)]))) == ["task_stalled"]
    findings = replay.step(obs(T0 + 60, [snap(W, active=None, limits=LIMITS, at=T0 + 60)]))
    assert Kind.WORKER_RECOVERED not in {f.kind for f in findings}
    assert actions(replay, "task_stalled") == ["open"]


def test_stall_is_held_while_inspect_is_down():
    replay = _stalled_replay()
    findings = replay.step(obs(T0 + 60, None, errors={"inspect": "timeout"}))
    assert Kind.TASK_STALLED in {f.kind for f in findings}
    assert actions(replay, "task_stalled") == ["open"]


def test_stall_resolves_when_the_worker_shows_the_task_is_gone():
    replay = _stalled_replay()
    findings = replay.step(
        obs(T0 + 60, [snap(W, limits=LIMITS, at=T0 + 60)], task_status={"L": "SUCCESS"})
    )
    assert "no longer running" in only(findings, Kind.WORKER_RECOVERED).summary
    assert actions(replay, "task_stalled") == ["open", "resolve"]


def test_age_is_bounded_by_the_worker_uptime():
    # A checker clock far ahead of the worker cannot make a young worker's task look stalled.
    replay = Replay(policy=Policy(task_expectations={"app.work": 600}))
    young = snap(W, boot=T0 - 100, active=[task("x", start=T0 - 7200)])
    assert kinds(replay.step(obs(T0, [young]))) == []
