"""observe() fills Observation.memory and Observation.queues: from the same log read as the exit
evidence, from the queues the workers report, and with a status of their own when they fail."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from oomcheck.model import MemorySample, QueueDepth, SourceState, SourceStatus, State
from oomcheck.observe import observe
from oomcheck.sources.exits import ExitRead, ExitSourceError
from oomcheck.sources.inspector import CeleryInspector, parse_active_queues
from oomcheck.sources.queues import QueueRead, queue_names
from tests.unit.test_runner import SECRET, Clock, FakeControl, FakeResults, FlakyPublisher, W, _deps

PERF = "/aws/ecs/containerinsights/prod/performance"
SAMPLE = MemorySample("ecs", "ecs-memory:x", 1.0, 900.0, 1024.0, "reservation", ("t1",), "w")


@dataclass
class FakeLogs:
    groups: tuple[str, ...]
    fail_group: str | None = None
    calls: int = 0

    @property
    def memory_groups(self) -> tuple[str, ...]:
        return tuple(g for g in self.groups if "containerinsights" in g)

    def read(self, since: float | None, now: float) -> ExitRead:
        self.calls += 1
        read = ExitRead((), 1, 0, 1, False, memory=(SAMPLE,))
        if self.fail_group:
            raise ExitSourceError(
                f"{self.fail_group}: AccessDeniedException", groups=(self.fail_group,), partial=read
            )
        return read


@dataclass
class FakeQueues:
    asked: list[tuple[str, ...]] = field(default_factory=list)
    fail: bool = False

    def depths(self, names: Sequence[str]) -> QueueRead:
        self.asked.append(tuple(names))
        if self.fail:
            raise ConnectionError(f"redis://:{SECRET}@10.0.0.1:6379/0 refused")
        return QueueRead(tuple(QueueDepth(n, 3) for n in sorted(names)), dropped=0, round_trips=1)


class QueuesInspect:
    """FakeControl's inspect, answering active_queues() too (or failing it)."""

    def __init__(self, inner: Any, queues: dict[str, Any], fail: bool) -> None:
        self.inner, self.queues, self.fail = inner, queues, fail

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def active_queues(self) -> dict[str, Any] | None:
        if self.fail:
            raise OSError("connection reset")
        return self.inner._reply("active_queues", self.queues)


def fleet(tmp_path: Any, *, queues_fail: bool = False) -> tuple[Any, FakeControl, Clock]:
    control, clock = FakeControl(), Clock()
    control.add(W, 10)
    replies = {W: [{"name": "celery", "exchange": {"name": "celery"}}, {"name": "reports"}]}
    original = control.inspect

    def inspect(timeout: float, limit: int | None, destination: list[str] | None) -> Any:
        return QueuesInspect(original(timeout, limit, destination), replies, queues_fail)

    control.inspect = inspect  # type: ignore[method-assign]
    deps = _deps(tmp_path, control, FakeResults(), FlakyPublisher(0), clock)
    return deps, control, clock


def test_memory_comes_from_the_exit_read_with_its_own_status(tmp_path: Any) -> None:
    deps, _, clock = fleet(tmp_path)
    deps.exits = logs = FakeLogs((PERF, "/ecs/events"))
    observed = observe(deps, State(), clock.now, audit=False)
    assert observed.observation.memory == (SAMPLE,)
    assert observed.statuses["memory"] == SourceStatus(SourceState.OK)
    assert observed.stats["memory_samples"] == 1
    assert logs.calls == 1  # one read feeds both sources


def test_a_failed_event_group_leaves_memory_ok_a_failed_performance_group_does_not(
    tmp_path: Any,
) -> None:
    deps, _, clock = fleet(tmp_path)
    deps.exits = FakeLogs((PERF, "/ecs/events"), fail_group="/ecs/events")
    observed = observe(deps, State(), clock.now, audit=False)
    assert observed.statuses["exits"].state is SourceState.ERROR
    assert observed.statuses["memory"] == SourceStatus(SourceState.OK)
    deps.exits = FakeLogs((PERF, "/ecs/events"), fail_group=PERF)
    observed = observe(deps, State(), clock.now, audit=False)
    assert observed.statuses["memory"].state is SourceState.ERROR
    assert "memory" in observed.observation.errors
    # what the healthy pages held is still used
    assert observed.observation.memory == (SAMPLE,)


def test_memory_is_off_without_a_performance_group(tmp_path: Any) -> None:
    deps, _, clock = fleet(tmp_path)
    deps.exits = FakeLogs(("/ecs/events",))
    observed = observe(deps, State(), clock.now, audit=False)
    assert observed.observation.memory is None
    assert observed.statuses["memory"].state is SourceState.OFF
    assert "memory" not in observed.observation.errors


def test_queues_of_the_workers_and_the_settings_are_read_once(tmp_path: Any) -> None:
    deps, control, clock = fleet(tmp_path)
    deps.queues = source = FakeQueues()  # type: ignore[attr-defined]
    deps.settings = deps.settings.with_overrides(queues=("nightly", "celery"))
    observed = observe(deps, State(), clock.now, audit=False)
    assert observed.observation.workers[W].queues == ("celery", "reports")  # type: ignore[index]
    assert source.asked == [("nightly", "celery", "reports")]
    assert [d.name for d in observed.observation.queues or ()] == ["celery", "nightly", "reports"]
    assert observed.statuses["queues"] == SourceStatus(SourceState.OK)
    asked = [(m, d, lim) for m, d, lim in control.calls if m == "active_queues"]
    assert asked == [("active_queues", [W], 1)]


def test_failed_active_queues_keeps_the_run_and_marks_queues(tmp_path: Any) -> None:
    deps, _, clock = fleet(tmp_path, queues_fail=True)
    deps.queues = FakeQueues()  # type: ignore[attr-defined]
    deps.settings = deps.settings.with_overrides(queues=("nightly",))
    observed = observe(deps, State(), clock.now, audit=False)
    assert observed.statuses["inspect"] == SourceStatus(SourceState.OK)
    assert observed.observation.workers[W].queues is None  # type: ignore[index]
    assert observed.statuses["queues"].state is SourceState.ERROR
    assert "active_queues" in observed.statuses["queues"].detail
    assert [d.name for d in observed.observation.queues or ()] == ["nightly"]


def test_a_failed_queue_read_is_an_error_with_no_secret(tmp_path: Any) -> None:
    deps, _, clock = fleet(tmp_path)
    deps.queues = FakeQueues(fail=True)  # type: ignore[attr-defined]
    observed = observe(deps, State(), clock.now, audit=False)
    assert observed.observation.queues is None
    assert observed.statuses["queues"].state is SourceState.ERROR
    assert SECRET not in observed.statuses["queues"].detail


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ([{"name": "b"}, {"name": "a"}, {"name": "a"}], ("a", "b")),
        ([{"name": ""}, {"name": 3}, "x", {"name": "x" * 300}], ()),
        ({"name": "a"}, None),
        (None, None),
    ],
)
def test_parse_active_queues(reply: Any, expected: Any) -> None:
    assert parse_active_queues(reply) == expected


def test_queue_names_dedupes_and_drops_what_is_not_a_name() -> None:
    assert queue_names(["a", "b"], ("b", "", None, "c\n", "x" * 256), ["d"]) == ("a", "b", "d")


def test_the_inspector_asks_active_queues_of_the_answering_workers_only() -> None:
    control = FakeControl()
    control.add(W, 10)
    control.add("celery@w2", 20)
    seen: list[Any] = []
    original = control.inspect

    def inspect(timeout: float, limit: int | None, destination: list[str] | None) -> Any:
        seen.append((destination, limit))
        return QueuesInspect(original(timeout, limit, destination), {W: [{"name": "q"}]}, False)

    control.inspect = inspect  # type: ignore[method-assign]
    inspector = CeleryInspector("redis://x", app=type("App", (), {"control": control})())
    result = inspector.observe([W, "celery@w2"], discover=False)
    assert result.workers[W].queues == ("q",)
    assert result.workers["celery@w2"].queues is None
    assert ([W, "celery@w2"], 2) in seen
