"""Every source read of a run ends inside the run's deadline, whatever the source does.

A broker or backend that accepts TCP and never answers holds a read for its socket timeout, and
redis-py's retry, kombu's reconnects and the inspector's broadcasts each add theirs: in a Lambda
the sum is a killed invocation with no report, no metrics and a held lease. So each read runs in
a daemon thread of its own and is waited for no longer than the deadline leaves once the run's
end (saving the state, releasing the lease) is set aside. A read that does not return by then
is left to finish on its own (its socket timeouts end it; its result is dropped) and the source
counts as failed for this run; a read that would start with no time left is not started.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from oomcheck.deadline import Deadline

T = TypeVar("T")

# Set aside for what follows the reads (evaluate, save the state, release the lease) besides the
# store's own worst case: evaluate takes milliseconds, this is headroom for a slow machine.
FINISH_S = 0.25


class _Outcome(Generic[T]):
    """What one read's thread hands back: its value or its exception."""

    def __init__(self) -> None:
        self.value: list[T] = []  # its one value, once the read returned
        self.error: BaseException | None = None
        self.done = threading.Event()


class Bounded:
    """Runs reads so that none outlasts ``deadline`` less ``reserve_s`` (seconds on the
    deadline's monotonic clock). Without a deadline, reads run inline, unbounded."""

    def __init__(self, deadline: Deadline | None, reserve_s: float) -> None:
        self.deadline = deadline
        self.reserve_s = max(0.0, reserve_s) + FINISH_S

    def left(self) -> float:
        """Seconds a read may still take; infinite without a deadline."""
        if self.deadline is None:
            return float("inf")
        return max(0.0, self.deadline.remaining() - self.reserve_s)

    def run(self, call: Callable[[], T], late: Callable[[str], T], cap_s: float | None = None) -> T:
        """``call()``'s value (its exceptions raised here), or ``late(why)`` when it did not
        return within the time left (or ``cap_s``, if less) or no time was left to start it."""
        if self.deadline is None:
            return call()
        budget = self.left() if cap_s is None else min(cap_s, self.left())
        if budget <= 0.0:
            return late("not read: the run's deadline left no time for it")
        outcome: _Outcome[T] = _Outcome()

        def work() -> None:
            try:
                outcome.value.append(call())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread as is
                outcome.error = exc
            finally:
                outcome.done.set()

        threading.Thread(target=work, name="oomcheck-read", daemon=True).start()
        if not outcome.done.wait(budget):
            return late(f"no answer within the {budget:.1f} s the run's deadline left for it")
        if outcome.error is not None:
            raise outcome.error
        return outcome.value[0]
