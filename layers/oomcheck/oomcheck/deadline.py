"""A run's time budget: when it must be done, on a monotonic clock that tests inject."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

# The CLI's budget for one check when --timeout is not given: the Lambda's default timeout.
DEFAULT_RUN_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class Deadline:
    """The instant ``at`` (seconds on ``clock``, a monotonic clock) by which a run must have
    saved its state, built its report and released its lease."""

    at: float
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)

    @classmethod
    def after(cls, seconds: float, clock: Callable[[], float] = time.monotonic) -> Deadline:
        return cls(clock() + max(0.0, seconds), clock)

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.at - self.clock())

    def allows(self, seconds: float) -> bool:
        """Whether work that may take ``seconds`` can still start."""
        return self.remaining() > seconds

    def earliest(self, seconds: float) -> Deadline:
        """This deadline, or one ``seconds`` from now if that comes first."""
        return Deadline(min(self.at, self.clock() + max(0.0, seconds)), self.clock)
