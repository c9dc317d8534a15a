"""What every state store promises, and how it fails.

Two overlapping runs must never both alert. Each run that writes first takes a lease (a
conditional write on one item); every later write of that run is fenced by a condition on the
lease, so a run that lost its lease (it stalled past the lease time and another run took over)
cannot write or mark an alert as sent. A run that finds the lease held reports "busy" and alerts
nothing. The stores: oomcheck.store.dynamodb (Lambda), oomcheck.store.file (CLI, cron).
"""

from __future__ import annotations

from dataclasses import dataclass

LEASE_KEY = "lease"


class StateError(RuntimeError):
    """The state store could not be read or written (a degraded source, not a crash)."""


class LeaseBusy(StateError):
    """Another run holds the lease."""


class LeaseLost(StateError):
    """This run's lease expired and another run took it: its writes were refused."""


@dataclass(frozen=True, slots=True)
class SaveStats:
    puts: int = 0
    deletes: int = 0

    @property
    def writes(self) -> int:
        return self.puts + self.deletes
