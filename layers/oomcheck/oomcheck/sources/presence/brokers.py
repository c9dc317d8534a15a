"""Broker presence: does a worker that did not answer remote control still hold its broker
connections? One command per run on Redis, one passive declare per silent worker on RabbitMQ.

Redis: ``TIME`` and ``CLIENT LIST`` in one round trip (ages are the server's, so the server's clock
dates them); oomcheck.sources.presence.owners decides whose each connection is. RabbitMQ: a worker's
pidbox queue ``<nodename>.celery.pidbox`` is exclusive to its connection, so a passive declare from
another connection answers 405 RESOURCE_LOCKED while the worker lives (busy or not) and 404
NOT_FOUND once its process is dead: exact, per nodename (FACTS.md, "Broker presence").
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from oomcheck.model import PidboxNames, Presence
from oomcheck.sources.presence.owners import (
    Member,
    Share,
    attribute,
    learn_shares,
    parse_client_list,
)

if TYPE_CHECKING:
    from oomcheck.sources.presence.management import RabbitManagementApi


class PresenceOff(RuntimeError):
    """The broker will not show its connections (an ACL denies CLIENT LIST) or cannot list its
    workers (RabbitMQ without the management API): the source is off."""


NO_LISTING = (
    "RabbitMQ lists no queues over AMQP: new workers are learnt from STARTED records and the "
    "next discovery; set OOMCHECK_RABBITMQ_API_URL (the management API) to list them"
)


# kombu's Redis transport keeps each fanout binding as a member of a set; a worker's pidbox queue
# is declared auto-delete, so a clean shutdown removes its member and a killed process leaves it
# (FACTS.md, "Broker presence"). "celery" is Celery's default control_exchange.
_PIDBOX_BINDINGS = "_kombu.binding.celery.pidbox"
_BINDING_SEP = "\x06\x16"


class RedisBrokerPresence:
    def __init__(self, client: Any, db: int | None, keyprefix: str = "") -> None:
        self.client = client
        self.db = db
        self.bindings_key = keyprefix + _PIDBOX_BINDINGS

    def describe(self) -> str:
        return "redis CLIENT LIST"

    def judge(self, members: Sequence[Member]) -> dict[str, Presence]:
        """Presence of the members that did not answer; their boot times on the broker's clock
        (the observation's reference clock)."""
        if not any(not m.answered for m in members):
            return {}
        from redis.exceptions import NoPermissionError, ResponseError

        pipe = self.client.pipeline(transaction=False)
        pipe.time()
        pipe.client_list()
        pipe.smembers(self.bindings_key)
        try:
            (seconds, micros), entries, bindings = pipe.execute()
        except NoPermissionError as exc:
            raise PresenceOff("CLIENT LIST denied by the broker's ACL") from exc
        except ResponseError as exc:
            if "unknown command" in str(exc).lower() or "no permission" in str(exc).lower():
                raise PresenceOff("the broker does not allow CLIENT LIST") from exc
            raise
        now = float(seconds) + float(micros) / 1e6
        judged = attribute(parse_client_list(entries, self.db), members, now)
        return {name: _how_it_closed(p, bindings) for name, p in judged.items()}

    def pidbox_names(self) -> PidboxNames:
        """Nodenames with a pidbox binding: every worker that started on this broker and has not
        shut down cleanly (a killed worker's binding is left behind). One SMEMBERS."""
        suffix = ".celery.pidbox"
        names: set[str] = set()
        for member in self.client.smembers(self.bindings_key):
            text = member.decode("utf-8", "replace") if isinstance(member, bytes) else str(member)
            queue = text.rsplit(_BINDING_SEP, 1)[-1]
            if queue.endswith(suffix) and len(queue) > len(suffix):
                names.add(queue[: -len(suffix)])
        return PidboxNames(frozenset(names))

    def shares(self, members: Sequence[Member]) -> dict[str, Share]:
        """Each answering member's pub/sub share, where every worker on its address answered
        and its share is not known yet (oomcheck.sources.presence.owners.learn_shares)."""
        entries = self.client.client_list()
        return learn_shares(parse_client_list(entries, self.db), members)

    def subscriptions(self) -> frozenset[str] | None:
        entries = self.client.client_list()
        return frozenset(
            c.ident for c in parse_client_list(entries, self.db) if c.pubsub and not c.own
        )


def _how_it_closed(presence: Presence, bindings: set[bytes]) -> Presence:
    """A worker whose connections are gone either shut down (its pidbox binding removed) or died
    holding its channels (the binding left behind)."""
    if presence.present is not False:
        return presence
    member = f"{_BINDING_SEP}{_BINDING_SEP}{presence.worker}.celery.pidbox".encode()
    if member in bindings:
        why = "its pidbox binding is left behind: it died without closing its channels"
        return replace(presence, closed_cleanly=False, evidence=f"{presence.evidence}; {why}")
    why = "its pidbox binding was removed, as a clean shutdown does"
    return replace(presence, closed_cleanly=True, evidence=f"{presence.evidence}; {why}")


class AmqpBrokerPresence:
    """RabbitMQ: the exclusive pidbox queue of each silent worker, declared passively; with the
    management API (``listing``), every worker's pidbox queue, listed in one GET."""

    # Watch mode's poll between checks: the management API filters every queue of the vhost on
    # each request, far dearer on a big broker than Redis's CLIENT LIST, so once a second.
    poll_s = 1.0

    def __init__(
        self, connection: Any, now: Any, listing: RabbitManagementApi | None = None
    ) -> None:
        self.connection = connection  # a kombu Connection (not yet connected)
        self.now = now
        self.listing = listing

    def describe(self) -> str:
        return "rabbitmq pidbox queues"

    def shares(self, members: Sequence[Member]) -> dict[str, Share]:
        return {}  # exact per nodename: no counting needed

    def pidbox_names(self) -> PidboxNames:
        """Every worker's pidbox queue, from the management API; PresenceOff without it."""
        if self.listing is None:
            raise PresenceOff(NO_LISTING)
        return self.listing.pidbox_queues()

    def subscriptions(self) -> frozenset[str] | None:
        # a dead worker's exclusive queue is gone within a fraction of a second: one GET tells
        # watch mode what one CLIENT LIST does on Redis; without the API, one declare per
        # worker is not the one cheap request watch mode needs
        return self.pidbox_names().names if self.listing is not None else None

    def judge(self, members: Sequence[Member]) -> dict[str, Presence]:
        silent = [m.name for m in members if not m.answered]
        if not silent:
            return {}
        out: dict[str, Presence] = {}
        connection = self.connection.clone()
        try:
            connection.ensure_connection(max_retries=1)
            for name in silent:
                out[name] = self._one(connection, name)
        finally:
            connection.release()
        return out

    def _one(self, connection: Any, name: str) -> Presence:
        from amqp.exceptions import NotFound, ResourceLocked

        queue = f"{name}.celery.pidbox"
        channel = connection.channel()
        try:
            channel.queue_declare(queue=queue, passive=True)
        except ResourceLocked:
            return Presence(
                name, True, f"broker: its pidbox queue {queue} is held (405)", self.now()
            )
        except NotFound:
            return Presence(name, False, f"broker: its pidbox queue {queue} is gone (404)", None)
        finally:
            _close_quietly(channel)
        # Declared without a lock: a non-exclusive queue of that name exists; it proves nothing.
        return Presence(name, None, f"broker: {queue} is not exclusive; cannot tell")


def _close_quietly(channel: Any) -> None:
    # the broker closes the channel itself after a 404/405; closing it again may raise
    with contextlib.suppress(Exception):
        channel.close()
