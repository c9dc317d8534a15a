"""The ports of a run: ``Deps`` (everything a run talks to) and the shape of each adapter.

Both sides import this module and nothing here imports them back: the run (runner, observe) for
the calls it makes, the wiring for what it builds. Adapters (sources, store, alerting) satisfy
these Protocols structurally and need not import them. Times are POSIX seconds (UTC) unless a
name says otherwise.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from oomcheck.alerting.outbox import SentJournal

if TYPE_CHECKING:
    from oomcheck.alerting.render import AlertMessage
    from oomcheck.alerting.taskevents import Sent, TaskEvent
    from oomcheck.config.settings import Settings
    from oomcheck.model import (
        BeatSchedule,
        PidboxNames,
        Presence,
        SqsView,
        State,
        UnackedMessage,
        WorkerSnapshot,
    )
    from oomcheck.silences.model import Silence
    from oomcheck.sources.ecs import EcsTask
    from oomcheck.sources.exits import ExitRead
    from oomcheck.sources.inspector import InspectResult, PresenceProbe
    from oomcheck.sources.presence.owners import Member, Share
    from oomcheck.sources.queues import QueueRead
    from oomcheck.sources.results.scan import ResultScan
    from oomcheck.store.base import SaveStats


class Inspector(Protocol):
    """Celery remote control (oomcheck.sources.inspector.CeleryInspector)."""

    def observe(
        self,
        expected: Collection[str],
        *,
        discover: bool,
        need_registered: Callable[[WorkerSnapshot], bool] = ...,
        presence: PresenceProbe | None = None,
        suspects: Collection[str] = (),
        newcomers: Collection[str] = (),
    ) -> InspectResult: ...

    def ping_direct(self, names: Collection[str]) -> dict[str, WorkerSnapshot]: ...

    def close(self) -> None: ...


class ResultSource(Protocol):
    """The result backend's STARTED tasks and WorkerLostError failures (RedisResultScanner)."""

    def scan(
        self, now: float, *, budget: int | None = None, cursor: str | None = None
    ) -> ResultScan: ...

    def lookup(self, task_ids: Sequence[str]) -> dict[str, str]: ...


class BrokerSource(Protocol):
    """The broker's unacked messages (RedisBrokerScanner)."""

    def unacked(self, now: float) -> tuple[UnackedMessage, ...]: ...


class ExitSource(Protocol):
    """Exit evidence and memory samples from CloudWatch Logs (CloudWatchExitEvents); ``since``
    None: the first read, which looks back as far as the source is configured to."""

    def read(self, since: float | None, now: float) -> ExitRead: ...


class QueueSource(Protocol):
    """Backlogs of the named queues (oomcheck.sources.queues)."""

    def depths(self, names: Sequence[str]) -> QueueRead: ...


class BeatSource(Protocol):
    """The periodic schedule as the beat scheduler stores it (oomcheck.sources.beat)."""

    def read(self, now: float) -> BeatSchedule: ...

    def describe(self) -> str: ...


class SqsSource(Protocol):
    """Celery's Amazon SQS queues and their dead letters (oomcheck.sources.sqs.SqsQueues)."""

    def read(self) -> SqsView: ...


class EcsSource(Protocol):
    """The running tasks of the named ECS services and their addresses (sources.ecs.EcsTasks)."""

    def running(self) -> tuple[EcsTask, ...]: ...


class BrokerPresence(Protocol):
    """Which silent workers still hold broker connections (oomcheck.sources.presence.brokers)."""

    def judge(self, members: Sequence[Member]) -> dict[str, Presence]: ...

    def describe(self) -> str: ...

    def pidbox_names(self) -> PidboxNames:
        """Nodenames the broker holds a pidbox binding or queue for (started and not shut down
        cleanly; on RabbitMQ, alive). Raises PresenceOff where the broker cannot list them
        (RabbitMQ without its management API)."""

    def shares(self, members: Sequence[Member]) -> dict[str, Share]:
        """How many long-lived pub/sub connections each answering member holds, for those whose
        share is unknown and whose address's workers all answered; {} where it cannot say."""

    def subscriptions(self) -> frozenset[str] | None:
        """Ids of the workers' long-lived pub/sub connections (one cheap command), for watch
        mode to notice a death between checks; None where the broker cannot say."""


class ReferenceClock(Protocol):
    """A clock shared with the workers' side (Redis ``TIME``); ``name`` says whose it is."""

    name: str

    def __call__(self) -> float: ...


class Publisher(Protocol):
    """Where alerts go (SNS, chat, EventBridge, stdout); returns the message id. Raises
    oomcheck.alerting.render.PublishError."""

    def publish(self, message: AlertMessage) -> str: ...

    def describe(self) -> str: ...


class StateStore(Protocol):
    """Where State lives between runs (oomcheck.store): DynamoDB or a local file. Raises
    oomcheck.store.base.StateError (LeaseBusy, LeaseLost)."""

    def acquire(self, owner: str, now: float, lease_s: float) -> None: ...

    def load(self) -> State: ...

    def save(self, owner: str, before: State, after: State, retention_s: float) -> SaveStats: ...

    def release(self, owner: str, state: State) -> None: ...

    def abandon(self, owner: str) -> None:
        """Give the lease back without recording a state: after a run that failed between its
        lease and its release. Readers must read the store again."""
        ...

    def describe(self) -> str: ...


class SilenceStore(Protocol):
    """Silences (oomcheck.silences.store): read once per run, added and ended by the CLI or a
    Lambda payload. Raises oomcheck.store.base.StateError; ``add`` raises SilenceError for an
    id that exists."""

    def read(self) -> tuple[Silence, ...]: ...

    def add(self, silence: Silence) -> None: ...

    def put(self, silence: Silence, now: float) -> None: ...

    def describe(self) -> str: ...


class TaskEventSink(Protocol):
    """One event per victim task's verdict (oomcheck.alerting.taskevents): sends while
    ``allows_call()`` and says what went out; never raises."""

    def send(self, events: list[TaskEvent], allows_call: Callable[[], bool]) -> Sent: ...

    def describe(self) -> str: ...


def new_owner() -> str:
    """A lease owner id of its own: one per process (and per SnapStart restore)."""
    return f"run-{uuid.uuid4().hex[:12]}"


@dataclass
class Deps:
    """Everything a run talks to; built once per process (Lambda container, CLI invocation)."""

    settings: Settings
    store: StateStore
    publisher: Publisher
    inspector: Inspector | None = None
    results: ResultSource | None = None
    broker: BrokerSource | None = None
    exits: ExitSource | None = None
    presence: BrokerPresence | None = None
    queues: QueueSource | None = None
    beat: BeatSource | None = None
    sqs: SqsSource | None = None
    ecs: EcsSource | None = None
    clock: Callable[[], float] = time.time
    off: dict[str, str] = field(default_factory=dict)  # source -> why it is not configured
    # Deadlines and budgets are measured on this clock, never on the wall clock.
    monotonic: Callable[[], float] = time.monotonic
    # The lease owner: one per process, so a run may take back a lease its process's previous
    # run could not release.
    owner: str = field(default_factory=new_owner)
    # Worst cases of one publish and one state-store call (oomcheck.aws.CallLimits.worst_s).
    publish_s: float = 0.0
    store_s: float = 0.0
    journal: SentJournal = field(default_factory=SentJournal)
    # the workers' side of the clock (the broker's Redis TIME); None: the local clock is used
    reference_clock: ReferenceClock | None = None
    # where silences live (the state table, or a file beside the state file); None: no silences
    silences: SilenceStore | None = None
    # an event per victim task's verdict, on the alert bus; None: no bus configured
    task_events: TaskEventSink | None = None
