"""The observe step with fake sources: typed statuses, counters, secrets scrubbed once, and the
reference clock (the broker's Redis TIME) stamping the observation."""

from __future__ import annotations

from typing import Any

import pytest

from oomcheck.model import SourceState, SourceStatus, StartedTask, State
from oomcheck.observe import guard, observe, read_clock
from oomcheck.runner import run_once
from tests.unit.test_runner import SECRET, Clock, FakeControl, FakeResults, FlakyPublisher, W, _deps


class RefClock:
    """Stands in for RedisClock: the workers' side of the clock, ``skew`` from the checker's."""

    name = "broker"

    def __init__(self, local: Clock, skew: float) -> None:
        self.local, self.skew, self.calls, self.fail = local, skew, 0, False

    def __call__(self) -> float:
        self.calls += 1
        if self.fail:
            raise ConnectionError(f"Error 111 connecting to redis://:{SECRET}@10.0.0.1:6379/0")
        return self.local.now + self.skew


class FailingBroker:
    def unacked(self, now: float) -> Any:
        raise ConnectionError(f"AUTH failed for redis://:{SECRET}@10.0.0.1:6379/0 ({SECRET})")


def _fleet(tmp_path, skew: float | None = None):
    control, results, clock = FakeControl(), FakeResults(), Clock()
    control.add(W, 10)
    deps = _deps(tmp_path, control, results, FlakyPublisher(0), clock)
    reference = None
    if skew is not None:
        reference = RefClock(clock, skew)
        deps.reference_clock = reference
    return deps, control, results, clock, reference


def test_the_observation_is_stamped_with_the_reference_clock(tmp_path):
    # Given a checker whose clock is 2 h ahead of the broker's
    deps, _, results, clock, reference = _fleet(tmp_path, skew=-7200.0)
    results.started = [StartedTask("t1", W, 11, "app.work", clock.now - 7200 - 5)]
    # When it observes
    observed = observe(deps, State(), clock.now, audit=False)
    # Then every time is the broker's, and the offset is reported
    assert observed.observation.at == clock.now - 7200
    assert observed.observation.inspected_at == pytest.approx(clock.now - 7200)
    assert observed.stats["clock_offset_ms"] == -7_200_000
    assert reference is not None and reference.calls == 1
    assert observed.notes == ()


def test_a_reference_clock_that_does_not_answer_falls_back_and_says_so(tmp_path):
    deps, _, _, clock, reference = _fleet(tmp_path, skew=30.0)
    assert reference is not None
    reference.fail = True
    observed = observe(deps, State(), clock.now, audit=False)
    assert observed.observation.at == clock.now
    assert "clock_offset_ms" not in observed.stats
    [note] = observed.notes
    assert "broker TIME" in note and "checker's own clock" in note
    assert SECRET not in note


def test_without_a_reference_the_local_clock_is_used_silently(tmp_path):
    deps, _, _, clock, _ = _fleet(tmp_path)
    observed = observe(deps, State(), clock.now, audit=False)
    assert observed.observation.at == clock.now and observed.notes == ()


def test_statuses_are_typed_counters_counted_and_secrets_scrubbed_once(tmp_path):
    deps, _, results, clock, _ = _fleet(tmp_path)
    results.started = [StartedTask("t1", W, 11, "app.work", clock.now - 5)]
    deps.broker = FailingBroker()
    deps.off["exits"] = "no log groups configured (OOMCHECK_LOG_GROUPS)"
    observed = observe(deps, State(), clock.now, audit=False)
    statuses = observed.statuses
    assert statuses["inspect"].state is SourceState.OK
    assert statuses["results"].state is SourceState.OK
    assert statuses["broker"].failed and statuses["broker"].detail.startswith("ConnectionError")
    assert SECRET not in statuses["broker"].detail
    assert statuses["exits"] == SourceStatus(
        SourceState.OFF, "no log groups configured (OOMCHECK_LOG_GROUPS)"
    )
    # what the detection core reads: the failed source is None and named in errors
    assert observed.observation.unacked is None
    assert observed.observation.errors == {"broker": statuses["broker"].detail}
    assert observed.observation.exits == ()
    assert observed.stats["started_tasks"] == 1 and observed.stats["unacked_messages"] == 0


def test_the_report_renders_typed_statuses_as_the_json_contract(tmp_path):
    deps, _, results, _, _ = _fleet(tmp_path)
    results.fail = ConnectionError(f"redis://:{SECRET}@h:6379/1 refused")
    deps.off["broker"] = "unacked messages are read from Redis brokers only"
    body = run_once(deps).to_json()
    assert body["sources"]["inspect"] == "ok"
    assert body["sources"]["results"].startswith("error: ConnectionError: redis://:***@h")
    assert body["sources"]["broker"] == "off: unacked messages are read from Redis brokers only"
    assert body["sources"]["state"] == "ok"


def test_a_stepped_checker_clock_keeps_boot_times_with_a_reference(tmp_path):
    # Given a worker seen once, and a checker clock that then steps +60 s (the broker's does not)
    deps, _, _, clock, reference = _fleet(tmp_path, skew=0.0)
    assert reference is not None
    run_once(deps)
    first = deps.store.load().workers[W].boot_at
    clock.now += 60
    reference.skew = -60.0
    # When the next run sees the same worker (its uptime unchanged by the fake)
    report = run_once(deps)
    # Then its boot time has not moved and nothing restarted
    assert deps.store.load().workers[W].boot_at == first
    assert not [f for f in report.findings if f.kind.value == "worker_restarted"]


def test_guard_turns_any_exception_into_an_error_status():
    value, status = guard(lambda: 1 // 0, ())
    assert value is None and status.failed and status.detail.startswith("ZeroDivisionError")
    value, status = guard(lambda: 7, ())
    assert value == 7 and status == SourceStatus(SourceState.OK)


def test_read_clock_takes_the_round_trip_midpoint():
    ticks = iter([100.0, 100.2])
    reference = RefClock(Clock(1000.0), 0.0)
    read = read_clock(reference, lambda: next(ticks))
    assert read.at == 1000.0 and read.offset_s == pytest.approx(1000.0 - 100.1)
