"""What a rule family hands back: signals of conditions seen, explicit resolutions, the incidents
it could not judge, and the state it carries on. One shape for every family.

A rule never touches an incident. It says what it saw (a Signal), what it has judged to be over
for a reason of its own (a Resolution), and which of its open incidents it could not judge this
run (held). The ledger resolves, in the family's own words (``gone``), every open incident of the
family's kinds that the family judged and did not mention; when the family's inputs failed
(``judged`` False) its incidents are held as they were. So "resolve" is always a decision, and a
rule cannot forget one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from oomcheck.detect import text
from oomcheck.model import Finding, IncidentKey, Kill, Kind, MemoryPoint, WorkerRecord


@dataclass(frozen=True, slots=True)
class Signal:
    """A condition seen this run. Alertable findings open or refresh an incident; the others are
    only reported."""

    finding: Finding
    # worker_lost: live workers before the death; the incident closes when the fleet is back.
    fleet_size: int | None = None
    # News the family judges on-call must hear as an update, besides what the ledger's
    # material_change finds (Celery on SQS: a task awaiting redelivery ran again).
    news: str | None = None

    @property
    def key(self) -> IncidentKey:
        assert self.finding.key is not None, "every signal names its incident"
        return self.finding.key


@dataclass(frozen=True, slots=True)
class Resolution:
    """A rule's judgement that the condition behind an incident is over, for a reason it names.
    An incident it simply no longer sees needs none: the ledger closes it with ``Outcome.gone``."""

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
class Carry:
    """The state a family hands on: to the families after it in this run, and to the next run.

    Each field is this family's own part; an empty or None field leaves what came before as it was.
    """

    # Roster records this family rewrote (the workers family).
    workers: Mapping[str, WorkerRecord] = field(default_factory=dict)
    # Deaths of processes that were running a task (workers and children): counted per task id.
    kills: tuple[KillSeen, ...] = ()
    # Exit evidence ids used or judged irrelevant; ids nobody claims stay unprocessed.
    events: frozenset[str] = frozenset()
    # WorkerLostError records counted this run: task id -> written_at.
    failures: Mapping[str, float] = field(default_factory=dict)
    # Consecutive failed runs per source, after this run (the sources family).
    source_failures: Mapping[str, int] | None = None
    # Per worker, its latest memory points above the threshold (the memory family).
    pressure: Mapping[str, tuple[MemoryPoint, ...]] | None = None
    # Per queue, since when it has held messages with no consumer (the queues family).
    orphaned_since: Mapping[str, float] | None = None


def _gone_by_kind(key: IncidentKey) -> str:
    return text.gone_text(key.kind)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one rule family returns for one run.

    ``kinds`` are the incident kinds the family owns. ``judged`` is False when its inputs were
    unavailable this run (a source failed): its open incidents are then held, neither refreshed
    nor resolved. When it judged, every open incident of its kinds that no signal or resolution
    mentions and that is not in ``held`` is resolved with ``gone(key)``, the family's words.
    """

    kinds: frozenset[Kind]
    judged: bool = True
    signals: tuple[Signal, ...] = ()
    resolutions: tuple[Resolution, ...] = ()
    # Open incidents of its kinds this family judged it cannot tell about this run.
    held: frozenset[IncidentKey] = frozenset()
    gone: Callable[[IncidentKey], str] = _gone_by_kind
    carry: Carry = field(default_factory=Carry)
