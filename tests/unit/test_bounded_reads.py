"""A source read never outlasts the run's deadline (oomcheck.observe.bounded)."""

from __future__ import annotations

import threading
import time

import pytest

from oomcheck.deadline import Deadline
from oomcheck.observe.bounded import FINISH_S, Bounded


def _late(why: str) -> str:
    return f"late: {why}"


def test_a_read_that_returns_in_time_gives_its_value():
    bound = Bounded(Deadline.after(FINISH_S + 5.0), reserve_s=0.0)
    assert bound.run(lambda: "value", _late) == "value"


def test_a_read_that_raises_raises_in_the_callers_thread():
    bound = Bounded(Deadline.after(FINISH_S + 5.0), reserve_s=0.0)

    def fail() -> str:
        raise ConnectionError("refused")

    with pytest.raises(ConnectionError, match="refused"):
        bound.run(fail, _late)


def test_a_read_that_hangs_is_given_up_when_its_time_is_up():
    release = threading.Event()
    bound = Bounded(Deadline.after(FINISH_S + 0.3), reserve_s=0.0)
    started = time.monotonic()
    try:
        got = bound.run(lambda: str(release.wait(10)), _late)
    finally:
        release.set()  # the abandoned thread ends at once
    assert got.startswith("late: no answer within the 0.")
    assert time.monotonic() - started < 2.0


def test_the_cap_bounds_a_read_below_the_time_left():
    release = threading.Event()
    bound = Bounded(Deadline.after(60.0), reserve_s=0.0)
    started = time.monotonic()
    try:
        got = bound.run(lambda: str(release.wait(10)), _late, cap_s=0.2)
    finally:
        release.set()
    assert got.startswith("late: no answer within the 0.2 s")
    assert time.monotonic() - started < 2.0


def test_no_time_left_means_the_read_is_not_started():
    calls: list[int] = []
    now = [100.0]
    # the store's worst case and the finish take what is left
    bound = Bounded(Deadline(100.0 + FINISH_S + 2.0, lambda: now[0]), reserve_s=2.0)
    got = bound.run(lambda: calls.append(1) or "read", _late)
    assert got == "late: not read: the run's deadline left no time for it"
    assert calls == []


def test_without_a_deadline_reads_run_inline():
    bound = Bounded(None, reserve_s=3.0)
    assert bound.run(lambda: threading.current_thread().name, _late) == "MainThread"
