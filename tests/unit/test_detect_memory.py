"""memory_pressure replayed through evaluate(): a worker's container above a share of its limit
for N samples in a row, naming the tasks it runs now; and the death that follows."""

from __future__ import annotations

import pytest

from oomcheck.model import Kind, Policy, Severity, Verdict
from tests.unit.scenario import T0, Replay, actions, ecs_oom, kinds, mem, obs, only, snap, task

W = "celery@pod-a"
POD = "pod-a"


def _grow() -> list:
    return [task("t-grow", 101, name="app.grow", start=T0 - 90)]


def test_two_high_samples_in_a_row_name_the_worker_the_use_the_trend_and_the_task():
    replay = Replay()
    # Given a worker running app.grow, its container at 1,860 MiB of 2,048
    first = replay.step(obs(T0, [snap(W, active=_grow())], memory=[mem(POD, 1860, T0 - 30)]))
    # Then one sample is not yet pressure
    assert kinds(first) == []
    # When the next sample is still above 90 %, 60 MiB more a minute later
    findings = replay.step(
        obs(T0 + 60, [snap(W, active=_grow(), at=T0 + 60)], memory=[mem(POD, 1920, T0 + 30)])
    )
    # Then: a warning naming the worker, use and limit, trend, and the running task
    pressure = only(findings, Kind.MEMORY_PRESSURE)
    assert pressure.severity == Severity.WARNING and pressure.worker == W
    assert "1,920 of 2,048 MiB (94% of its hard limit), +60 MB/min" in pressure.summary
    assert "running: app.grow t-grow (for 150 s)" in pressure.summary
    assert [(t.id, t.name, t.verdict) for t in pressure.tasks] == [
        ("t-grow", "app.grow", Verdict.RUNNING)
    ]
    assert pressure.evidence[-1].startswith("eks: 1,920 of 2,048 MiB at ")
    assert actions(replay, "memory_pressure") == ["open"]


def test_a_low_sample_breaks_the_streak():
    replay = Replay()
    replay.step(obs(T0, [snap(W)], memory=[mem(POD, 1900, T0 - 30)]))
    # When the next read has a dip below 90 % and then one high sample
    findings = replay.step(
        obs(
            T0 + 60,
            [snap(W, at=T0 + 60)],
            memory=[mem(POD, 1200, T0 + 10), mem(POD, 1900, T0 + 40)],
        )
    )
    # Then the streak is one sample long: no pressure
    assert kinds(findings) == []
    # And the next high sample makes two in a row
    findings = replay.step(obs(T0 + 120, [snap(W, at=T0 + 120)], memory=[mem(POD, 1950, T0 + 100)]))
    assert kinds(findings) == ["memory_pressure"]


def test_samples_without_a_known_limit_neither_raise_nor_break_the_streak():
    replay = Replay()
    replay.step(obs(T0, [snap(W)], memory=[mem(POD, 1900, T0 - 30)]))
    unknown = mem(POD, 1900, T0 + 10, limit_mb=None, basis="no limit known")
    findings = replay.step(obs(T0 + 60, [snap(W, at=T0 + 60)], memory=[unknown]))
    assert kinds(findings) == []
    findings = replay.step(obs(T0 + 120, [snap(W, at=T0 + 120)], memory=[mem(POD, 1900, T0 + 90)]))
    assert kinds(findings) == ["memory_pressure"]


def test_only_unknown_limits_never_raise():
    replay = Replay()
    for i in range(4):
        at = T0 + 60 * i
        sample = mem(POD, 1_000_000, at - 5, limit_mb=None, basis="no limit known")
        assert kinds(replay.step(obs(at, [snap(W, at=at)], memory=[sample]))) == []


def test_a_share_of_the_reservation_says_so():
    replay = Replay()
    samples = [
        mem(POD, 470, T0 - 40, limit_mb=512, basis="reservation", source="ecs"),
        mem(POD, 490, T0 - 10, limit_mb=512, basis="reservation", source="ecs"),
    ]
    pressure = only(replay.step(obs(T0, [snap(W)], memory=samples)), Kind.MEMORY_PRESSURE)
    assert "(96% of its reservation)" in pressure.summary
    assert "no task running" in pressure.summary
    assert any("no hard limit is known" in a for a in pressure.advice)


def test_the_trend_spans_the_remembered_samples():
    replay = Replay(policy=Policy(memory_samples=3))
    for i, used in enumerate((1850, 1880, 1940)):
        at = T0 + 60 * i
        findings = replay.step(obs(at, [snap(W, at=at)], memory=[mem(POD, used, at - 30)]))
    # three samples over 120 s, +90 MiB: 45 MB/min
    assert "+45 MB/min" in only(findings, Kind.MEMORY_PRESSURE).summary


def test_resolved_when_memory_falls():
    replay = Replay()
    replay.step(obs(T0, [snap(W)], memory=[mem(POD, 1900, T0 - 40), mem(POD, 1950, T0 - 10)]))
    assert actions(replay, "memory_pressure") == ["open"]
    # When the task finished and the container is at half its limit
    findings = replay.step(obs(T0 + 60, [snap(W, at=T0 + 60)], memory=[mem(POD, 1024, T0 + 30)]))
    # Then the incident is resolved, saying why
    assert kinds(findings) == []
    assert actions(replay, "memory_pressure") == ["open", "resolve"]
    assert not replay.state.pressure


def test_a_sample_of_another_pod_is_not_this_workers():
    replay = Replay()
    samples = [mem("pod-b", 1900, T0 - 40), mem("pod-b", 1950, T0 - 10)]
    assert kinds(replay.step(obs(T0, [snap(W)], memory=samples))) == []


@pytest.mark.parametrize(
    ("basis", "source", "words"),
    [
        pytest.param("hard limit", "eks", "of its limit", id="hard-limit"),
        pytest.param("reservation", "ecs", "of its ECS reservation", id="ecs-reservation"),
    ],
)
def test_death_under_pressure_says_which_task_was_growing_and_resolves_the_pressure(
    basis: str, source: str, words: str
):
    replay = Replay()
    grow = _grow()
    # Given pressure while app.grow runs (a share of its hard limit, or of its ECS reservation)
    samples = [
        mem(POD, 1900, T0 - 40, basis=basis, source=source),
        mem(POD, 1990, T0 - 10, basis=basis, source=source),
    ]
    replay.step(obs(T0, [snap(W, active=grow)], memory=samples))
    assert actions(replay, "memory_pressure") == ["open"]
    # When the worker stops answering and the ECS event says OOM
    findings = replay.step(obs(T0 + 60, [], exits=[ecs_oom(POD, at=T0 + 50)], memory=[]))
    replay.step(obs(T0 + 65, [], memory=[]))  # the re-ping's confirmation, if one is needed
    lost = [f for h in replay.history for f in h if f.kind == Kind.WORKER_LOST]
    assert lost, f"no worker_lost: {[kinds(h) for h in replay.history]}"
    line = next(e for e in lost[0].evidence if e.startswith("memory: "))
    assert f"before it died, 1,990 of 2,048 MiB (97% {words})" in line
    assert line.endswith("growing in it: app.grow t-grow")
    # Then the pressure is closed by the death (its own incident says it)
    assert actions(replay, "memory_pressure") == ["open", "resolve"]
    assert "memory_pressure" not in kinds(findings)
