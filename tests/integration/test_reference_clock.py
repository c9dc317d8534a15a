"""One clock for comparisons across machines, measured over a real worker and a real Redis.

The checker's clock steps +60 s between two runs (an NTP step on the checker's host, a Lambda
on a skewed host). The worker and Redis keep theirs. With the broker's Redis TIME as the
reference, the worker's boot time (reference now - its uptime) must not move, so nothing looks
restarted.
"""

from __future__ import annotations

import time

from tests.integration.conftest import Fleet

STEP_S = 60.0


def _boot_at(fleet: Fleet, name: str) -> float:
    return fleet.deps.store.load().workers[name].boot_at


def test_a_checker_clock_stepped_60s_between_runs_changes_no_boot_time(fleet: Fleet):
    # Given a real worker, checked once with the checker's clock in step
    name = "steady@oomcheck-test"
    fleet.start(name)
    deps = fleet.deps
    assert deps.reference_clock is not None and deps.reference_clock.name == "broker"
    first = fleet.check()
    assert name in {w["name"] for w in first.workers}
    assert abs(first.stats["clock_offset_ms"]) < 1000
    before = _boot_at(fleet, name)

    # When the checker's clock steps +60 s (the broker's and the worker's do not)
    def stepped() -> float:
        return time.time() + STEP_S

    deps.clock = stepped
    assert deps.inspector is not None
    deps.inspector.clock = stepped
    second = fleet.check()

    # Then the run measured the step, stamped its times with the broker's clock...
    assert abs(second.stats["clock_offset_ms"] + STEP_S * 1000) < 1000
    assert abs(second.checked_at - time.time()) < 5
    # ...and the worker's boot time and health are as before
    after = _boot_at(fleet, name)
    assert abs(after - before) < 2.0, (before, after)
    kinds = [f.kind.value for f in second.findings if f.alertable]
    assert kinds == [], kinds
    assert [w["status"] for w in second.workers if w["name"] == name] == ["alive"]
