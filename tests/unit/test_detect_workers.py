"""The workers rule family: lost, departed, busy, restarted, returned, late evidence; and the
regressions the old single-class evaluation hid (issue 8, bugs 1, 3 and 5)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from oomcheck.detect import text
from oomcheck.model import (
    Cause,
    Kind,
    Policy,
    Presence,
    Severity,
    UnackedMessage,
    Verdict,
    WorkerStatus,
)
from tests.unit.scenario import (
    LIMITS,
    T0,
    Replay,
    actions,
    ecs_oom,
    kinds,
    obs,
    only,
    snap,
    started,
    task,
)


def _ip_name(letter: str) -> str:
    return f"celery@{letter}"


@pytest.mark.parametrize("first", ["a", "z"], ids=["dies-first-in-order", "dies-last-in-order"])
def test_lost_incident_stays_open_while_the_fleet_is_short(first):
    # Bug 1: workers X, b, c; X dies; next run b dies and d joins: 2 of 3 alive, whatever X's name.
    x, b, c, d = (_ip_name(n) for n in (first, "b", "c", "d"))
    replay = Replay()
    work = [started("t1", x)]
    replay.step(
        obs(
            T0,
            [snap(x, active=[task("t1")], limits=LIMITS), snap(b, pid=2), snap(c, pid=3)],
            started_=work,
        )
    )
    replay.step(
        obs(T0 + 60, [snap(b, pid=2, at=T0 + 60), snap(c, pid=3, at=T0 + 60)], started_=work)
    )
    findings = replay.step(
        obs(
            T0 + 120,
            [snap(c, pid=3, at=T0 + 120), snap(d, pid=4, boot=T0 + 100, at=T0 + 120)],
            started_=work,
        )
    )
    assert Kind.WORKER_RECOVERED not in {f.kind for f in findings}
    lost = [f for f in findings if f.kind == Kind.WORKER_LOST and f.worker == x]
    assert len(lost) == 1, "X's incident is still open"
    assert actions(replay, "worker_lost") == ["open"]


def test_cause_arriving_after_the_alert_is_sent_as_one_update():
    # Bug 3: killed mid-task, alerted with the cause unknown; the ECS record lands later.
    w = "celery@ip-10-0-1-5"
    replay = Replay()
    work = [started("t1", w)]
    replay.step(obs(T0, [snap(w, active=[task("t1")], limits=LIMITS)], started_=work))
    first = only(replay.step(obs(T0 + 5, [], started_=work)), Kind.WORKER_LOST)
    assert (first.cause, first.exit_code) == (Cause.UNKNOWN, None)
    # When the evidence arrives
    updated = only(
        replay.step(obs(T0 + 10, [], started_=work, exits=[ecs_oom(at=T0 + 4)])), Kind.WORKER_LOST
    )
    # Then one update, threaded to the same incident, says what is now known
    assert (updated.cause, updated.exit_code) == (Cause.OOM_KILLED, 137)
    assert updated.incident_id == first.incident_id
    assert actions(replay) == ["open", "update"]
    incident = replay.state.incidents[first.incident_id]
    assert incident.alerts_sent == 2
    # and nothing more while nothing changes
    replay.step(obs(T0 + 15, [], started_=work, exits=[ecs_oom(at=T0 + 4)]))
    replay.step(obs(T0 + 20, [], started_=work))
    assert actions(replay) == ["open", "update"]


def test_update_note_names_the_change():
    w = "celery@ip-10-0-1-5"
    replay = Replay(deliver=False)
    work = [started("t1", w)]
    replay.step(obs(T0, [snap(w, active=[task("t1")], limits=LIMITS)], started_=work))
    replay.step(obs(T0 + 5, [], started_=work))
    incident = next(iter(replay.state.incidents.values()))
    # the open is still unsent: the update folds into it instead of queueing a second message
    replay.step(obs(T0 + 10, [], started_=work, exits=[ecs_oom(at=T0 + 4)]))
    incident = replay.state.incidents[incident.id]
    assert [p.action.value for p in incident.pending] == ["open"]
    assert incident.finding.cause == Cause.OOM_KILLED


def test_lost_worker_that_returns_as_the_same_process_is_resolved_as_unresponsive():
    # Bug 5: a lost worker comes back with the same pid and boot time.
    w = "celery@ip-10-0-1-5"
    replay = Replay()
    work = [started("t1", w)]
    replay.step(obs(T0, [snap(w, active=[task("t1")], limits=LIMITS)], started_=work))
    replay.step(obs(T0 + 60, [], started_=work))
    findings = replay.step(
        obs(T0 + 120, [snap(w, at=T0 + 120, active=[task("t1")])], started_=work)
    )
    recovered = only(findings, Kind.WORKER_RECOVERED)
    assert "unresponsive, not dead" in recovered.summary
    assert replay.state.workers[w].status == WorkerStatus.ALIVE
    assert replay.state.workers[w].incident_id is None
    assert actions(replay) == ["open", "resolve"]


def test_departed_worker_that_returns_as_the_same_process_is_alive_without_alert():
    w = "celery@ip-10-0-1-5"
    replay = Replay()
    replay.step(obs(T0, [snap(w)]))
    replay.step(obs(T0 + 60, []))
    assert replay.state.workers[w].status == WorkerStatus.DEPARTED
    findings = replay.step(obs(T0 + 120, [snap(w, at=T0 + 120)]))
    assert kinds(findings, alertable_only=False) == []
    assert replay.state.workers[w].status == WorkerStatus.ALIVE
    assert replay.sent == []


def test_awaiting_redelivery_becomes_redelivered_in_the_open_incident():
    # Bug 5: the rejudging of an open incident's tasks.
    w, w2 = "celery@ip-10-0-1-5", "celery@ip-10-0-1-6"
    replay = Replay()
    late = [task("late", 102, name="app.late", acknowledged=False)]
    work = [started("late", w, 102, name="app.late")]
    replay.step(obs(T0, [snap(w, active=late, limits=LIMITS), snap(w2, pid=200)], started_=work))
    unacked = [UnackedMessage("late", "app.late", "tag-1", fetched_at=T0 - 40)]
    lost = only(
        replay.step(obs(T0 + 60, [snap(w2, pid=200, at=T0 + 60)], started_=work, unacked=unacked)),
        Kind.WORKER_LOST,
    )
    assert lost.tasks[0].verdict == Verdict.AWAITING_REDELIVERY
    # the visibility timeout passes: another worker restores the message and runs it
    rerun = [task("late", 201, name="app.late", start=T0 + 3700)]
    findings = replay.step(
        obs(
            T0 + 3720,
            [snap(w2, pid=200, at=T0 + 3720, pool_pids=[201], active=rerun)],
            started_=[started("late", w2, 201, name="app.late", written=T0 + 3700)],
        )
    )
    still = only(findings, Kind.WORKER_LOST)
    assert still.tasks[0].verdict == Verdict.REDELIVERED
    # a verdict moving on is not a new cause or a new victim: no update message
    assert "update" not in actions(replay)


def test_busy_solo_worker_stays_busy_then_is_lost_past_its_limit():
    w = "celery@ip-10-0-1-5"
    limits = {"app.slow": LIMITS["app.late"]}
    replay = Replay()
    replay.step(obs(T0, [snap(w, pool="solo", pool_pids=[100], limits=limits)]))
    running = [started("s1", w, 100, name="app.slow", written=T0 + 10)]
    findings = replay.step(obs(T0 + 60, [], started_=running))
    # busy is the worker's status, not a finding: nothing says it left
    assert kinds(findings, alertable_only=False) == []
    assert replay.state.workers[w].status == WorkerStatus.BUSY
    assert kinds(replay.step(obs(T0 + 700, [], started_=running))) == ["worker_lost"]


def test_clean_restart_of_a_departed_worker_says_nothing():
    w = "celery@ip-10-0-1-5"
    replay = Replay()
    replay.step(obs(T0, [snap(w)]))
    replay.step(obs(T0 + 60, []))
    findings = replay.step(obs(T0 + 120, [snap(w, pid=999, boot=T0 + 100, at=T0 + 120)]))
    assert findings == []
    assert replay.state.workers[w].pid == 999


def test_restart_detection_uses_pid_and_boot_time_not_the_run_interval():
    # A worker seen again much later, same process: not a restart.
    w = "celery@ip-10-0-1-5"
    replay = Replay()
    replay.step(obs(T0, [snap(w)]))
    findings = replay.step(obs(T0 + 86_400, [snap(w, at=T0 + 86_400)]))
    assert findings == []


def test_incident_expires_and_stops_reminding():
    # Bug 5: incident expiry.
    w = "celery@ip-10-0-1-5"
    replay = Replay(policy=Policy(incident_expiry_s=7200, remind_after_s=3600))
    work = [started("t1", w)]
    replay.step(obs(T0, [snap(w, active=[task("t1")], limits=LIMITS)], started_=work))
    replay.step(obs(T0 + 60, [], started_=work))
    replay.step(obs(T0 + 3700, [], started_=work))
    findings = replay.step(obs(T0 + 7300, [], started_=work))
    recovered = only(findings, Kind.WORKER_RECOVERED)
    assert "still open after 2 h" in recovered.summary
    assert actions(replay) == ["open", "remind", "resolve"]
    # the worker's record no longer points at an open incident; nothing more is sent
    replay.step(obs(T0 + 11_000, [], started_=work))
    assert actions(replay) == ["open", "remind", "resolve"]
    assert replay.state.workers[w].incident_id is None


def test_restarted_worker_alerts_once_and_its_old_records_are_not_child_deaths():
    w = "celery@ip-10-0-1-5"
    replay = Replay()
    work = [started("t1", w, 101)]
    replay.step(obs(T0, [snap(w, active=[task("t1", 101)], limits=LIMITS)], started_=work))
    for at in (T0 + 60, T0 + 120):
        replay.step(
            obs(
                at,
                [snap(w, pid=300, boot=T0 + 50, at=at, pool_pids=[301], limits=LIMITS)],
                started_=work,
            )
        )
    assert actions(replay) == ["open"]
    assert [k for _, k, _ in replay.sent] == ["worker_restarted"]


def _solo_busy(replay: Replay, w: str) -> list:
    limits = {"app.slow": LIMITS["app.late"]}  # time_limit 600
    replay.step(obs(T0, [snap(w, pool="solo", pool_pids=[100], limits=limits)]))
    return [started("s1", w, 100, name="app.slow", written=T0 + 10)]


def test_silent_solo_worker_whose_broker_connections_are_gone_is_lost_at_once():
    w = "celery@ip-10-0-1-5"
    replay = Replay()
    running = _solo_busy(replay, w)
    gone = Presence(w, False, "broker: no connection from 10.0.1.5 is open")
    findings = replay.step(replace(obs(T0 + 60, [], started_=running), presence={w: gone}))
    lost = only(findings, Kind.WORKER_LOST)
    assert [t.id for t in lost.tasks] == ["s1"]
    assert "broker: no connection from 10.0.1.5 is open" in lost.evidence
    assert not any("silent past the limit" in e for e in lost.evidence)
    assert actions(replay) == ["open"]


def test_silent_worker_still_connected_is_busy_then_hung_not_dead():
    w = "celery@ip-10-0-1-5"
    replay = Replay()
    running = _solo_busy(replay, w)
    here = Presence(w, True, "broker: 6 connection(s) from 10.0.1.5 still open")
    findings = replay.step(replace(obs(T0 + 60, [], started_=running), presence={w: here}))
    assert kinds(findings, alertable_only=False) == []
    assert replay.state.workers[w].status == WorkerStatus.BUSY
    # past its 600 s limit and still connected: a hung worker, named with its task
    findings = replay.step(replace(obs(T0 + 700, [], started_=running), presence={w: here}))
    stalled = only(findings, Kind.TASK_STALLED)
    assert stalled.tasks[0].id == "s1" and "hung" in stalled.summary
    assert kinds(findings, alertable_only=False) == ["task_stalled"]
    # a frozen prefork worker with nothing running is no alert either
    w2 = "celery@ip-10-0-1-6"
    replay2 = Replay()
    replay2.step(obs(T0, [snap(w2)]))
    frozen = Presence(w2, True, "broker: its pidbox queue is held (405)")
    findings = replay2.step(replace(obs(T0 + 60, []), presence={w2: frozen}))
    assert kinds(findings, alertable_only=False) == []
    assert replay2.state.workers[w2].status == WorkerStatus.BUSY


@pytest.mark.parametrize(
    ("closed_cleanly", "expected"),
    [
        pytest.param(False, ["worker_lost"], id="binding-left-killed"),
        pytest.param(True, ["worker_departed"], id="binding-removed-clean-shutdown"),
        pytest.param(None, ["worker_departed"], id="broker-cannot-tell-how"),
    ],
)
def test_idle_worker_whose_connections_are_gone_is_lost_only_without_a_clean_close(
    closed_cleanly, expected
):
    # Given an idle prefork worker known to the roster
    w = "celery@ip-10-0-1-5"
    replay = Replay()
    replay.step(obs(T0, [snap(w)]))
    # When it stops answering and its broker connections are gone
    gone = Presence(
        w, False, "broker: no subscription from 10.0.1.5 is open any more", None, closed_cleanly
    )
    findings = replay.step(replace(obs(T0 + 60, []), presence={w: gone}))
    # Then a death without a clean close is worker_lost, alerted; a clean close a departure
    assert kinds(findings, alertable_only=False) == expected
    found = findings[0]
    assert gone.evidence in found.evidence
    if closed_cleanly is False:
        assert found.severity == Severity.CRITICAL and found.tasks == ()
        assert actions(replay) == ["open"]
        assert replay.state.workers[w].status == WorkerStatus.LOST
    else:
        assert found.severity == Severity.INFO and replay.sent == []
        assert replay.state.workers[w].status == WorkerStatus.DEPARTED


def test_broker_that_cannot_tell_leaves_todays_behaviour_and_says_so():
    w = "celery@ip-10-0-1-5"
    replay = Replay()
    running = _solo_busy(replay, w)
    unsure = Presence(w, None, "broker: cannot tell it apart from b@h")
    findings = replay.step(replace(obs(T0 + 60, [], started_=running), presence={w: unsure}))
    assert kinds(findings) == [] and replay.state.workers[w].status == WorkerStatus.BUSY


def test_killed_solo_workers_task_is_named_from_its_unacked_message():
    # Given a solo worker seen idle, then silent in a task whose STARTED record has no name
    # (result_extended off); the solo pool acks after the task, so its message is unacked
    w = "celery@ip-10-0-1-5"
    replay = Replay()
    replay.step(obs(T0, [snap(w, pool="solo", pool_pids=[100])]))
    running = [replace(started("s1", w, 100, written=T0 + 10), name=None)]
    unacked = [UnackedMessage("s1", "shop.sleepy", "tag-1", fetched_at=T0 + 10)]
    gone = Presence(w, False, "broker: no subscription from 10.0.1.5 is open any more")
    # When it is killed
    findings = replay.step(
        replace(obs(T0 + 60, [], started_=running, unacked=unacked), presence={w: gone})
    )
    # Then its task carries the name the broker's message holds, in the finding and the alert
    lost = only(findings, Kind.WORKER_LOST)
    assert [(t.id, t.name) for t in lost.tasks] == [("s1", "shop.sleepy")]
    assert text.fate_line(lost.tasks[0]).startswith("  - shop.sleepy [s1] on pid 100")
