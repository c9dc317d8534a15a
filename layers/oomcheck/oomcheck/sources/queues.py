"""Queue backlogs on the broker: how many messages wait in each queue a worker consumes.

Redis (kombu's Redis transport, checked in kombu 5.7 ``kombu/transport/redis.py``): a queue is a
list named after it, under the ``global_keyprefix``; with priorities, messages of priority step
``p`` > 0 wait in a sibling list ``<queue><sep><p>``, where ``sep`` is ``"\\x06\\x16"`` and the
steps are ``priority_steps`` (default ``[0, 3, 6, 9]``; step 0 is the queue's own list), both
transport options. Every list of every queue is measured with one pipelined LLEN: one round
trip per run. Messages carry no publish time (kombu's Redis messages have no timestamp property
and Celery's task headers none either), so ``oldest_at`` stays None, and Redis cannot count
consumers (``consumers`` None).

RabbitMQ: a passive ``queue_declare`` per queue on one connection gives the message and consumer
counts; 404 NOT_FOUND means the queue does not exist (a transient queue deleted with its last
consumer, or a name nobody declared), and the channel it closes is replaced. RabbitMQ shows no
message age to a passive declare either.

The names come from the caller (workers' ``active_queues()``, the roster, ``OOMCHECK_QUEUES``);
at most ``max_queues`` are read per run, and the ones left over are counted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from oomcheck.model import QueueDepth

__all__ = [
    "DEFAULT_PRIORITY_STEPS",
    "DEFAULT_SEP",
    "MAX_QUEUES",
    "AmqpQueueDepths",
    "QueueRead",
    "RedisQueueDepths",
    "queue_names",
]

DEFAULT_PRIORITY_STEPS = (0, 3, 6, 9)
DEFAULT_SEP = "\x06\x16"
MAX_QUEUES = 200
# AMQP's shortstr: no queue name is longer, and nothing longer is a name we would send.
MAX_NAME_CHARS = 255
_NOT_FOUND = 404


@dataclass(frozen=True, slots=True)
class QueueRead:
    """One read. ``dropped``: names beyond ``max_queues``, not read; ``absent``: names the
    broker does not have (RabbitMQ 404); ``round_trips``: requests to the broker."""

    depths: tuple[QueueDepth, ...]
    dropped: int = 0
    absent: tuple[str, ...] = ()
    round_trips: int = 0


def queue_names(*sources: Iterable[object]) -> tuple[str, ...]:
    """Every distinct usable queue name of ``sources``, in order: strings of 1 to 255
    printable characters (anything else is not a name we can ask about)."""
    names: dict[str, None] = {}
    for source in sources:
        for name in source:
            if isinstance(name, str) and 0 < len(name) <= MAX_NAME_CHARS and name.isprintable():
                names.setdefault(name, None)
    return tuple(names)


def _capped(names: Sequence[str], max_queues: int) -> tuple[tuple[str, ...], int]:
    wanted = queue_names(names)
    return wanted[:max_queues], max(0, len(wanted) - max_queues)


class RedisQueueDepths:
    """LLEN of each queue's lists on a Redis broker (redis-py client, cluster or not)."""

    def __init__(
        self,
        client: Any,
        *,
        keyprefix: str = "",
        transport_options: Mapping[str, Any] | None = None,
        max_queues: int = MAX_QUEUES,
    ) -> None:
        options = transport_options or {}
        steps = options.get("priority_steps", DEFAULT_PRIORITY_STEPS)
        sep = options.get("sep", DEFAULT_SEP)
        if not isinstance(sep, str) or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in steps
        ):
            raise ValueError("priority_steps must be whole numbers and sep a string")
        if max_queues < 1:
            raise ValueError("max_queues must be at least 1")
        self._client = client
        self._prefix = keyprefix
        self._sep = sep
        # kombu maps step 0 to the queue's own list; the others to sub-lists.
        self._steps = tuple(dict.fromkeys(int(s) for s in steps if int(s) != 0))
        self.max_queues = max_queues

    def keys(self, name: str) -> tuple[str, ...]:
        """The lists that hold ``name``'s messages, prefixed as kombu writes them."""
        base = self._prefix + name
        return (base, *(f"{base}{self._sep}{step}" for step in self._steps))

    def depths(self, names: Sequence[str]) -> QueueRead:
        wanted, dropped = _capped(names, self.max_queues)
        if not wanted:
            return QueueRead((), dropped)
        pipe = self._client.pipeline(transaction=False)
        per_queue = len(self._steps) + 1
        for name in wanted:
            for key in self.keys(name):
                pipe.llen(key)
        lengths = pipe.execute()
        depths = tuple(
            QueueDepth(name, sum(int(n) for n in lengths[i * per_queue : (i + 1) * per_queue]))
            for i, name in enumerate(wanted)
        )
        return _result(depths, dropped, round_trips=1)


def _result(
    depths: Iterable[QueueDepth], dropped: int, *, round_trips: int, absent: Sequence[str] = ()
) -> QueueRead:
    return QueueRead(
        tuple(sorted(depths, key=lambda d: d.name)), dropped, tuple(absent), round_trips
    )


class AmqpQueueDepths:
    """Passive ``queue_declare`` per queue on a RabbitMQ broker, over one kombu connection
    opened for the read and closed after it."""

    def __init__(
        self,
        url: str,
        *,
        transport_options: Mapping[str, Any] | None = None,
        connect_timeout: float = 3.0,
        max_queues: int = MAX_QUEUES,
    ) -> None:
        if max_queues < 1:
            raise ValueError("max_queues must be at least 1")
        self._url = url
        self._options = dict(transport_options or {})
        self._connect_timeout = connect_timeout
        self.max_queues = max_queues

    def depths(self, names: Sequence[str]) -> QueueRead:
        from kombu.connection import Connection

        # kombu's Connection is unannotated: held as a plain callable returning Any
        connect: Callable[..., Any] = Connection
        wanted, dropped = _capped(names, self.max_queues)
        if not wanted:
            return QueueRead((), dropped)
        found: list[QueueDepth] = []
        absent: list[str] = []
        with connect(
            self._url, connect_timeout=self._connect_timeout, transport_options=self._options
        ) as connection:
            connection.ensure_connection(max_retries=1)
            channel = connection.channel()
            for name in wanted:
                try:
                    _, messages, consumers = channel.queue_declare(queue=name, passive=True)
                except connection.channel_errors as exc:
                    if getattr(exc, "code", None) != _NOT_FOUND:
                        raise
                    absent.append(name)
                    # a channel error closes the channel: the next declare needs a new one
                    channel = connection.channel()
                    continue
                found.append(QueueDepth(name, int(messages), int(consumers)))
        return _result(found, dropped, round_trips=len(wanted), absent=absent)
