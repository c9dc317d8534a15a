"""Celery on Amazon SQS replayed through evaluate(): no remote control (workers None, inspect
off), workers known from STARTED records, deaths from exit evidence, dead letters from the
queues' dead-letter queues."""

from __future__ import annotations

from dataclasses import replace

from oomcheck.detect.text import fate_line
from oomcheck.model import (
    Cause,
    DeadLetter,
    Kind,
    Observation,
    Policy,
    Severity,
    SqsQueue,
    SqsView,
    StartedTask,
    Verdict,
)
from tests.unit.scenario import T0, Replay, actions, ecs_oom, kinds, obs, only, started

W = "celery@ip-10-0-1-5"
OTHER = "celery@ip-10-0-1-9"
QUEUE = SqsQueue("celery", 0, 0, 900.0, "celery-dlq", 3)


def sqs_obs(
    at: float,
    *,
    started_: tuple[StartedTask, ...] = (),
    exits: tuple = (),
    queues: tuple[SqsQueue, ...] = (QUEUE,),
    dead: tuple[DeadLetter, ...] = (),
    complete: bool = True,
) -> Observation:
    base = obs(at, None, started_=started_, exits=exits, transport="sqs")
    return replace(base, sqs=SqsView(queues, dead, complete))


def policy(**modes: bool) -> Policy:
    return Policy(task_acks_late={k.replace("_", "."): v for k, v in modes.items()})


def test_healthy_sqs_fleet_has_no_finding_and_raises_no_inspect_outage():
    replay = Replay(policy=policy(app_work=False))
    for i in range(5):
        at = T0 + 60 * i
        found = replay.step(sqs_obs(at, started_=(started("t1", W, written=at - 5),)))
        assert kinds(found) == []
    assert replay.sent == []


def test_early_ack_task_on_an_oom_killed_worker_is_lost():
    replay = Replay(policy=policy(app_work=False))
    running = (started("t1", W, 4312, written=T0 - 30),)
    replay.step(sqs_obs(T0, started_=running))
    found = replay.step(sqs_obs(T0 + 60, started_=running, exits=(ecs_oom(at=T0 + 40),)))
    lost = only(found, Kind.WORKER_LOST)
    assert lost.severity is Severity.CRITICAL
    assert lost.worker == W
    assert (lost.cause, lost.exit_code) == (Cause.OOM_KILLED, 137)
    assert [(t.id, t.verdict) for t in lost.tasks] == [("t1", Verdict.LOST)]
    assert lost.summary == f"{W} died, OOM-killed (exit 137); 1 task(s): 1 lost"
    assert "ecs: exitCode 137 OutOfMemoryError" in lost.evidence
    # the evidence is this death's, not an oom_kill of an unknown worker
    assert "oom_kill" not in kinds(found)
    assert actions(replay) == ["open"]
    # Then: every fate is final, so the next run closes it (one open, one resolve)
    replay.step(sqs_obs(T0 + 120, started_=running))
    assert actions(replay, "worker_lost") == ["open", "resolve"]


def test_acks_late_task_awaits_redelivery_then_is_redelivered_elsewhere():
    replay = Replay(policy=policy(app_work=True))
    running = (started("t1", W, 4312, written=T0 - 30),)
    found = replay.step(sqs_obs(T0 + 60, started_=running, exits=(ecs_oom(at=T0 + 40),)))
    fate = only(found, Kind.WORKER_LOST).tasks[0]
    assert fate.verdict is Verdict.AWAITING_REDELIVERY
    # its start plus the queue's visibility timeout (900 s)
    assert fate.redeliver_at == T0 - 30 + 900
    assert "invisible in its SQS queue" in fate_line(fate)
    assert "unacked set" not in fate_line(fate)
    # While the message is invisible nothing changes and the incident stays open
    found = replay.step(sqs_obs(T0 + 120, started_=running))
    assert only(found, Kind.WORKER_LOST).tasks[0].verdict is Verdict.AWAITING_REDELIVERY
    # When the same task id is STARTED on another worker
    again = (started("t1", OTHER, 77, written=T0 + 880),)
    found = replay.step(sqs_obs(T0 + 900, started_=again))
    assert only(found, Kind.WORKER_LOST).tasks[0].verdict is Verdict.REDELIVERED
    assert actions(replay, "worker_lost") == ["open", "update"]
    # the redelivered run is not a stalled task nor a new death
    replay.step(sqs_obs(T0 + 960, started_=again))
    assert actions(replay, "worker_lost") == ["open", "update", "resolve"]


def test_unknown_ack_mode_gives_an_unknown_verdict_with_the_reason():
    replay = Replay()
    running = (started("t1", W, written=T0 - 30),)
    found = replay.step(sqs_obs(T0 + 60, started_=running, exits=(ecs_oom(at=T0 + 40),)))
    lost = only(found, Kind.WORKER_LOST)
    assert lost.tasks[0].verdict is Verdict.UNKNOWN
    assert any("OOMCHECK_TASK_ACKS_LATE" in a for a in lost.advice)


def test_a_task_started_after_the_death_is_no_victim():
    replay = Replay(policy=policy(app_work=False))
    later = (started("t2", W, written=T0 + 100),)
    found = replay.step(sqs_obs(T0 + 120, started_=later, exits=(ecs_oom(at=T0 + 40),)))
    assert "worker_lost" not in kinds(found)


def test_started_past_its_limit_without_evidence_is_stalled_with_the_sqs_caveat():
    replay = Replay(policy=Policy(task_expectations={"app.work": 600.0}))
    busy = (started("t1", W, written=T0 - 100),)
    assert kinds(replay.step(sqs_obs(T0, started_=busy))) == []  # within its limit: no alert
    found = replay.step(sqs_obs(T0 + 600, started_=busy))
    stalled = only(found, Kind.TASK_STALLED)
    assert "a hung task and a dead worker without exit evidence look alike" in stalled.summary
    assert stalled.tasks[0].verdict is Verdict.RUNNING
    replay.step(sqs_obs(T0 + 660, started_=()))
    assert actions(replay, "task_stalled") == ["open", "resolve"]


def letter(task_id: str = "t9", receives: int = 4) -> DeadLetter:
    return DeadLetter("celery", "celery-dlq", "m-1", task_id, "app.big", receives, T0 - 500)


def test_a_message_in_the_dead_letter_queue_is_critical_until_it_leaves():
    replay = Replay()
    found = replay.step(sqs_obs(T0, dead=(letter(),)))
    dead = only(found, Kind.TASK_DEAD_LETTERED)
    assert dead.severity is Severity.CRITICAL
    assert dead.tasks[0].id == "t9"
    assert dead.tasks[0].verdict is Verdict.DEAD_LETTERED
    assert "received 4 time(s)" in dead.summary
    assert "app.big [t9]" in dead.summary
    assert any("start-message-move-task" in a for a in dead.advice)
    replay.step(sqs_obs(T0 + 60, dead=(letter(),)))
    # a partial read of the dead-letter queue cannot say it left
    replay.step(sqs_obs(T0 + 120, dead=(), complete=False))
    assert actions(replay, "task_dead_lettered") == ["open"]
    replay.step(sqs_obs(T0 + 180, dead=()))
    assert actions(replay, "task_dead_lettered") == ["open", "resolve"]
    resolved = replay.state.incidents
    assert any("left the dead-letter queue" in (i.resolution or "") for i in resolved.values())


def test_a_dead_letter_whose_runs_killed_workers_is_a_poison_task():
    replay = Replay(policy=policy(app_big=True))
    for n, host in enumerate(("10.0.1.5", "10.0.1.6")):
        worker = f"celery@ip-{host.replace('.', '-')}"
        running = (started("t9", worker, name="app.big", written=T0 + 100 * n),)
        replay.step(
            sqs_obs(
                T0 + 100 * n + 30,
                started_=running,
                exits=(ecs_oom(host, at=T0 + 100 * n + 20, event_id=f"e{n}"),),
            )
        )
    found = replay.step(sqs_obs(T0 + 400, dead=(letter(),)))
    poison = only(found, Kind.POISON_TASK)
    assert "its runs killed 2 worker process(es)" in poison.summary
    assert poison.cause is Cause.OOM_KILLED


def test_a_queue_nobody_receives_from_is_orphaned_after_the_threshold():
    replay = Replay(policy=Policy(queue_orphan_after_s=300))
    waiting = (SqsQueue("celery", 12, 0, 900.0),)
    assert kinds(replay.step(sqs_obs(T0, queues=waiting))) == []
    found = replay.step(sqs_obs(T0 + 300, queues=waiting))
    orphaned = only(found, Kind.QUEUE_ORPHANED)
    assert orphaned.summary.startswith("queue celery has 12 message(s) and no live consumer")
    # a worker receives again: messages in flight
    replay.step(sqs_obs(T0 + 360, queues=(SqsQueue("celery", 11, 1, 900.0),)))
    assert actions(replay, "queue_orphaned") == ["open", "resolve"]


def test_on_redis_the_sqs_families_do_not_judge():
    replay = Replay()
    found = replay.step(
        replace(
            obs(T0, [], exits=(ecs_oom(),)),
            sqs=SqsView((SqsQueue("celery", 5, 0, 30.0),), (letter(),)),
        )
    )
    assert "task_dead_lettered" not in kinds(found)
    assert "queue_orphaned" not in kinds(found)
