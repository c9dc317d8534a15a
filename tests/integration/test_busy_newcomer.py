"""A worker that starts and takes a long task before any check sees it (a solo pool answers
nothing while it runs) is busy, not dead: its task is not reported orphaned."""

from __future__ import annotations

import uuid

import pytest

from oomcheck.model import Kind
from tests.integration.conftest import Fleet

pytestmark = pytest.mark.integration


def test_a_newcomer_busy_in_a_solo_task_is_not_an_orphan_on_redis(fleet: Fleet) -> None:
    # Given a fleet of one, checked (a discovery: the next is 300 s away), then a solo worker
    # on a queue of its own that takes a long task before the next check
    tag = uuid.uuid4().hex[:6]
    fleet.queue = f"first-{tag}"
    fleet.start("first@oomcheck-test", pool="prefork")
    fleet.check()
    fleet.queue = f"second-{tag}"
    fleet.start("second@oomcheck-test", pool="solo")
    task = fleet.send("demo.sleepy", 120)
    fleet.wait_started(task)
    # When checks run while it works
    for _ in range(4):
        report = fleet.check()
        # Then its task is never reported orphaned: the broker still holds subscriptions on its
        # host that may be its own, and the task may still run within its limit
        assert not [f for f in report.findings if f.kind == Kind.TASK_ORPHANED], report.findings
