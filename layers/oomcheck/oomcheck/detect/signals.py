"""What the rules hand to the ledger: signals of conditions seen, explicit resolutions, kills.

A rule never touches an incident. It says what it saw (a Signal), what it has judged to be over (a
Resolution), and what it could not judge this run (nothing at all: the ledger then keeps the
incident open as it was). So "resolve" is always somebody's decision, never a fall-through.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from oomcheck.model import Finding, IncidentKey, Kill, Kind, WorkerRecord


@dataclass(frozen=True, slots=True)
class Signal:
    """A condition seen this run. Alertable findings open or refresh an incident; the others are
    only reported."""

    finding: Finding
    # worker_lost: live workers before the death; the incident closes when the fleet is back.
    fleet_size: int | None = None

    @property
    def key(self) -> IncidentKey:
        assert self.finding.key is not None, "every signal names its incident"
        return self.finding.key


@dataclass(frozen=True, slots=True)
class Resolution:
    """A rule's judgement that the condition behind an incident is over."""

    key: IncidentKey
    why: str
    # Re-judged task fates to keep in the closed incident (None: keep what it had).
    finding: Finding | None = None


@dataclass(frozen=True, slots=True)
class KillSeen:
    """A process that was running ``task_id`` died: the raw material of poison_task."""

    task_id: str
    name: str | None
    kill: Kill


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one rule family returns. ``judged`` is False when its inputs were unavailable this
    run (a source failed): its open incidents are then held, neither refreshed nor resolved."""

    kinds: frozenset[Kind]
    judged: bool = True
    signals: tuple[Signal, ...] = ()
    resolutions: tuple[Resolution, ...] = ()
    kills: tuple[KillSeen, ...] = ()
    # Evidence ids this rule used or judged irrelevant; ids nobody claims stay unprocessed.
    used_events: frozenset[str] = frozenset()
    # Roster records this rule rewrote (the workers rule only).
    records: dict[str, WorkerRecord] = field(default_factory=dict)
    # WorkerLostError records counted this run: task id -> written_at (the children rule only).
    failures: dict[str, float] = field(default_factory=dict)
