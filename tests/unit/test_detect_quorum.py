"""A kill loop on a RabbitMQ quorum queue with a delivery limit: RabbitMQ delivers the message
limit + 1 times (each kill of its process returns it), then dead-letters it or, without a
dead-letter exchange, drops it. The poison_task finding says which once the kills pass the limit."""

from __future__ import annotations

import pytest

from oomcheck.model import Finding, Kind, Policy, QuorumLimit, Verdict
from tests.unit.scenario import LIMITS, T0, Replay, actions, obs, only, snap, started, task

W = "celery@ip-10-0-1-5"
DLX = QuorumLimit(2, "dlx", "dead")
NO_DLX = QuorumLimit(2)


def _loop(replay: Replay, kills: int, transport: str = "amqp") -> list[Finding]:
    """A task (app.loop, id P) whose pool process dies on each delivery, ``kills`` times."""
    pid, at = 101, T0
    findings: list[Finding] = []
    for i in range(kills + 1):
        at = T0 + 10 * i
        findings = replay.step(
            obs(
                at,
                [
                    snap(
                        W,
                        pool_pids=[pid, 200],
                        at=at,
                        limits=LIMITS,
                        active=[task("P", pid, name="app.loop", start=at - 2)],
                    )
                ],
                transport=transport,
            )
        )
        pid += 1000
    assert len(replay.state.kills["P"].kills) == kills
    return findings


def _replay(queues: dict[str, QuorumLimit], routes: dict[str, str]) -> Replay:
    return Replay(policy=Policy(quorum_queues=queues, task_queues=routes))


@pytest.mark.parametrize(
    ("queues", "routes", "kills", "transport", "verdict", "said"),
    [
        pytest.param({}, {}, 3, "amqp", Verdict.KILL_LOOP, None, id="no-known-limit"),
        pytest.param(
            {"work": DLX},
            {"*": "work"},
            3,
            "redis",
            Verdict.KILL_LOOP,
            None,
            id="not-rabbitmq",
        ),
        pytest.param(
            {"work": DLX},
            {"*": "celery", "app.other": "work"},
            3,
            "amqp",
            Verdict.KILL_LOOP,
            None,
            id="task-routed-to-a-queue-without-limit",
        ),
        pytest.param(
            {"work": QuorumLimit(5, "dlx")},
            {"*": "work"},
            4,
            "amqp",
            Verdict.KILL_LOOP,
            "5: 4 of 6 deliveries killed; at the limit the broker dead-letters it to "
            "dead-letter exchange 'dlx' (its own routing key)",
            id="under-the-limit",
        ),
        pytest.param(
            {"work": DLX},
            {"*": "celery", "app.loop": "work"},
            3,
            "amqp",
            Verdict.DEAD_LETTERED,
            "2: 3 deliveries killed, over the limit, so the broker dead-letters it to "
            "dead-letter exchange 'dlx' (routing key 'dead')",
            id="over-the-limit-dead-lettered",
        ),
        pytest.param(
            {"work": NO_DLX},
            {"*": "work"},
            3,
            "amqp",
            Verdict.LOST,
            "2: 3 deliveries killed, over the limit, so the broker drops it",
            id="over-the-limit-dropped",
        ),
    ],
)
def test_the_kill_loop_verdict_follows_the_queue_delivery_limit(
    queues: dict[str, QuorumLimit],
    routes: dict[str, str],
    kills: int,
    transport: str,
    verdict: Verdict,
    said: str | None,
):
    poison = only(_loop(_replay(queues, routes), kills, transport), Kind.POISON_TASK)
    assert poison.tasks[0].verdict is verdict
    lines = [e for e in poison.evidence if e.startswith("rabbitmq: ")]
    assert lines == ([f"rabbitmq: quorum queue work has x-delivery-limit {said}"] if said else [])
    if verdict is Verdict.KILL_LOOP:
        assert any("control revoke P" in a for a in poison.advice)


def test_dead_lettered_says_where_and_how_to_move_it_back():
    poison = only(_loop(_replay({"work": DLX}, {"*": "work"}), 3), Kind.POISON_TASK)
    fate = poison.tasks[0]
    assert fate.waits_in == "dead-letter exchange 'dlx' (routing key 'dead')"
    assert poison.summary.endswith(
        "; dead-lettered to dead-letter exchange 'dlx' (routing key 'dead')"
    )
    assert any("bound to 'dlx'" in a and "purge" in a for a in poison.advice)
    assert not any("control revoke" in a for a in poison.advice)


def test_dropped_is_lost_and_says_the_message_is_gone():
    poison = only(_loop(_replay({"work": NO_DLX}, {"*": "work"}), 3), Kind.POISON_TASK)
    assert poison.tasks[0].verdict is Verdict.LOST and poison.tasks[0].waits_in is None
    assert poison.summary.endswith("; dropped by the delivery limit")
    assert any("message is gone" in a and "x-dead-letter-exchange" in a for a in poison.advice)


def test_the_loop_opens_once_and_its_end_is_an_update():
    # Given a limit of 3 (4 deliveries) and poison_kills 3: the loop opens at the third kill
    replay = _replay({"work": QuorumLimit(3, "dlx")}, {"*": "work"})
    opened = only(_loop(replay, 3), Kind.POISON_TASK)
    assert opened.tasks[0].verdict is Verdict.KILL_LOOP
    # When the fourth delivery's process dies too: no delivery follows, so the kill shows as
    # the STARTED record of a pid that left the pool
    at = T0 + 40
    ended = only(
        replay.step(
            obs(
                at,
                [snap(W, pool_pids=[4101, 200], at=at, limits=LIMITS)],
                started_=[started("P", W, 3101, name="app.loop", written=at - 12)],
                transport="amqp",
            )
        ),
        Kind.POISON_TASK,
    )
    # Then the same incident says the message was dead-lettered, in an update
    assert ended.tasks[0].verdict is Verdict.DEAD_LETTERED
    assert actions(replay, "poison_task") == ["open", "update"]
