"""The poison rule family: kill counts per task id and the kill loop."""

from __future__ import annotations

from oomcheck.detect.carried import merge_kills
from oomcheck.detect.signals import KillSeen
from oomcheck.model import Cause, Kill, KillRecord, Kind, Policy
from tests.unit.scenario import (
    LIMITS,
    T0,
    Replay,
    actions,
    kernel_kill,
    obs,
    only,
    snap,
    task,
)

W = "celery@ip-10-0-1-5"


def test_merge_counts_one_kill_per_process_and_keeps_unchanged_records():
    kept = KillRecord("other", "app.x", (Kill(W, 1, T0, "worker lost"),))
    before = {"other": kept, "t": KillRecord("t", None, (Kill(W, 101, T0, "a"),))}
    after = merge_kills(
        before,
        [
            KillSeen("t", "app.loop", Kill(W, 101, T0 + 1, "again")),  # same process
            KillSeen("t", "app.loop", Kill(W, 102, T0 + 2, "b")),
            KillSeen("new", None, Kill(None, None, T0, "c")),
        ],
    )
    assert after["other"] is kept
    assert [k.pid for k in after["t"].kills] == [101, 102] and after["t"].name == "app.loop"
    assert "new" in after


def _loop(replay: Replay, runs: int, start: float = T0, *, kernel: bool = False) -> list:
    pid = 101
    findings = []
    for i in range(runs):
        before, pid = pid, pid + 1000
        at = start + 10 * (i + 1)
        # with ``kernel``: the memory cgroup's OOM killer names the child that died
        exits = [kernel_kill(before, at=at - 1)] if kernel else []
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
                exits=exits,
            )
        )
    return findings


def test_kill_loop_opens_one_poison_incident_and_resolves_when_quiet():
    replay = Replay(policy=Policy(poison_quiet_s=300))
    replay.step(
        obs(
            T0,
            [
                snap(
                    W, pool_pids=[101, 200], limits=LIMITS, active=[task("P", 101, name="app.loop")]
                )
            ],
        )
    )
    _loop(replay, 4)
    assert actions(replay, "poison_task") == ["open"]
    # the task is revoked: not running, not queued, no kill for longer than poison_quiet_s
    findings = replay.step(
        obs(T0 + 500, [snap(W, pool_pids=[5000, 200], at=T0 + 500, limits=LIMITS)])
    )
    # the wording of detect.text, the one place a kind's words live
    assert (
        "stopped dying and is not queued on any worker"
        in only(findings, Kind.WORKER_RECOVERED).summary
    )
    assert actions(replay, "poison_task") == ["open", "resolve"]


def _loop_start(replay: Replay) -> None:
    replay.step(
        obs(
            T0,
            [
                snap(
                    W, pool_pids=[101, 200], limits=LIMITS, active=[task("P", 101, name="app.loop")]
                )
            ],
        )
    )


def test_kill_loop_cause_is_what_the_evidence_said_of_each_kill():
    # Given a kill loop whose kills the kernel reports as OOM kills (its lines never say "oom")
    oom = Replay()
    _loop_start(oom)
    poison = only(_loop(oom, 4, kernel=True), Kind.POISON_TASK)
    # Then the kill loop is OOM-killed; the same loop seen only as pids leaving the pool is killed
    assert poison.cause == Cause.OOM_KILLED
    assert all(k.cause == Cause.OOM_KILLED for k in oom.state.kills["P"].kills)
    plain = Replay()
    _loop_start(plain)
    assert only(_loop(plain, 4), Kind.POISON_TASK).cause == Cause.KILLED
