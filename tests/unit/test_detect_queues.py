"""queue_orphaned replayed through evaluate(): a queue with messages and no live consumer, at
once when its consumers died or left, after a threshold when nobody ever consumed it."""

from __future__ import annotations

from oomcheck.model import Kind, Policy, QueueDepth, Severity
from tests.unit.scenario import T0, Replay, actions, kinds, obs, only, snap, task

W = "celery@reports-1"


def _reports(messages: int, consumers: int | None = None) -> list[QueueDepth]:
    return [QueueDepth("reports", messages, consumers)]


def test_a_queue_consumed_by_a_live_worker_is_fine():
    replay = Replay()
    for i in range(3):
        at = T0 + 60 * i
        assert (
            kinds(replay.step(obs(at, [snap(W, at=at, queues=["reports"])], queues=_reports(500))))
            == []
        )


def test_last_consumer_dies_while_messages_wait_then_a_consumer_returns():
    replay = Replay()
    replay.step(obs(T0, [snap(W, queues=["reports"])], queues=_reports(3)))
    # When its only worker dies (SIGKILL: it had a task) and 40 messages wait
    running = [task("t1", 101)]
    replay.step(
        obs(T0 + 30, [snap(W, at=T0 + 30, queues=["reports"], active=running)], queues=_reports(3))
    )
    replay.step(obs(T0 + 60, [], queues=_reports(40)))
    findings = replay.step(obs(T0 + 62, [], queues=_reports(40)))
    history = [f for h in replay.history for f in h]
    # Then: critical, at once, with the depth and who died
    orphaned = next(f for f in history if f.kind == Kind.QUEUE_ORPHANED)
    assert orphaned.severity == Severity.CRITICAL
    assert orphaned.worker == W
    assert orphaned.summary.startswith("queue reports has 40 message(s) and no live consumer")
    assert f"its consumer(s) {W} (died)" in orphaned.summary
    assert "broker: reports holds 40 message(s)" in orphaned.evidence
    assert any("-Q reports" in a for a in orphaned.advice)
    assert "queue_orphaned" in kinds(findings)
    assert actions(replay, "queue_orphaned") == ["open"]
    # When a new worker for the queue answers
    back = "celery@reports-2"
    findings = replay.step(
        obs(T0 + 120, [snap(back, 200, at=T0 + 120, queues=["reports"])], queues=_reports(38))
    )
    # Then it is resolved
    assert "queue_orphaned" not in kinds(findings)
    assert actions(replay, "queue_orphaned") == ["open", "resolve"]
    assert not replay.state.orphaned_since


def test_an_empty_queue_whose_consumer_died_is_not_orphaned():
    replay = Replay()
    replay.step(obs(T0, [snap(W, queues=["reports"], active=[task("t1")])], queues=_reports(0)))
    for at in (T0 + 60, T0 + 62, T0 + 120):
        replay.step(obs(at, [], queues=_reports(0)))
    assert actions(replay, "queue_orphaned") == []


def test_an_ignored_queue_is_never_orphaned():
    replay = Replay(policy=Policy(ignored_queues=frozenset({"reports"}), queue_orphan_after_s=0))
    replay.step(obs(T0, [snap(W, queues=["reports"], active=[task("t1")])], queues=_reports(5)))
    for at in (T0 + 60, T0 + 62, T0 + 600):
        replay.step(obs(at, [], queues=_reports(50)))
    assert actions(replay, "queue_orphaned") == []
    assert "reports" not in replay.state.orphaned_since


def test_a_queue_nobody_ever_consumed_waits_for_the_threshold():
    replay = Replay(policy=Policy(queue_orphan_after_s=300))
    other = snap(W, queues=["celery"])
    backlog = [QueueDepth("exports", 7)]
    # Given messages in a queue no known worker consumes
    assert kinds(replay.step(obs(T0, [other], queues=backlog))) == []
    assert (
        kinds(replay.step(obs(T0 + 240, [snap(W, at=T0 + 240, queues=["celery"])], queues=backlog)))
        == []
    )
    # When it has been so for 5 minutes
    findings = replay.step(obs(T0 + 300, [snap(W, at=T0 + 300, queues=["celery"])], queues=backlog))
    # Then it is raised, saying since when
    orphaned = only(findings, Kind.QUEUE_ORPHANED)
    assert "no live worker has consumed it since" in orphaned.summary
    assert orphaned.worker is None


def test_a_busy_silent_consumer_still_counts():
    replay = Replay()
    busy = [task("t-long", 100, name="app.report", start=T0 - 10)]
    replay.step(
        obs(
            T0,
            [snap(W, pool="solo", pool_pids=(), queues=["reports"], active=busy)],
            queues=_reports(3),
        )
    )
    # When the solo worker is too busy to answer, with messages waiting
    for at in (T0 + 60, T0 + 62, T0 + 400):
        findings = replay.step(obs(at, [], queues=_reports(30)))
        assert "queue_orphaned" not in kinds(findings)
    assert replay.state.workers[W].status.value == "busy"


def test_rabbitmq_counting_a_consumer_is_a_consumer():
    replay = Replay(policy=Policy(queue_orphan_after_s=0))
    for at in (T0, T0 + 60):
        findings = replay.step(
            obs(at, [snap(W, at=at)], queues=_reports(9, consumers=1), transport="amqp")
        )
        assert kinds(findings) == []


def test_no_verdict_while_the_workers_cannot_be_asked():
    replay = Replay(policy=Policy(queue_orphan_after_s=0))
    findings = replay.step(obs(T0, None, queues=_reports(9), errors={"inspect": "timeout"}))
    assert "queue_orphaned" not in kinds(findings)
