"""Celery remote control: which workers are alive, what they run, what limits their tasks have.

One broadcast each for stats(), active() and active_queues() with ``limit`` = the number of
workers expected, so a healthy fleet answers in milliseconds instead of the full timeout; a worker
that misses the broadcast is pinged directly once before it counts as missing. registered() is
asked only of workers the roster does not know in this incarnation (its answer does not change
while a worker lives). active_queues() is asked every run, since a worker's queues change at run
time (``control.add_consumer`` / ``cancel_consumer``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from oomcheck.config.urls import for_kombu
from oomcheck.model import ActiveTask, Presence, TaskLimits, WorkerSnapshot
from oomcheck.sources.presence.owners import OWN_NAME

# (snapshots that answered, names that did not) -> what the broker shows of the latter
PresenceProbe = Callable[[Mapping[str, WorkerSnapshot], Sequence[str]], Mapping[str, Presence]]

REGISTERED_FIELDS = ("time_limit", "soft_time_limit", "acks_late", "reject_on_worker_lost")
# How long a broadcast listens when every worker it expected is known to be dead.
NONE_EXPECTED_WAIT_S = 0.1
_REGISTERED = re.compile(r"^(?P<name>\S+)(?:\s+\[(?P<attrs>[^\]]*)\])?$")


class InspectError(RuntimeError):
    """The broker could not be reached or the control reply was unusable."""


@dataclass(frozen=True, slots=True)
class InspectResult:
    workers: dict[str, WorkerSnapshot]
    inspected_at: float
    # expected workers that missed the broadcast and the direct ping
    missing: tuple[str, ...]
    discovered: bool
    # What the broker shows of the workers that missed the broadcast (when asked).
    presence: Mapping[str, Presence] = field(default_factory=dict)
    # why active_queues() could not be read (the workers' queues are then None), else None
    queues_error: str | None = None
    # pidbox bindings of workers asked once that did not answer (State.stale_bindings); None:
    # the broker's bindings were not read
    stale_bindings: tuple[str, ...] | None = None


def pool_kind(implementation: str | None) -> str:
    """'celery.concurrency.prefork:TaskPool' -> 'prefork'; threads pool is 'thread' in Celery."""
    if not implementation:
        return "prefork"
    module = implementation.split(":", 1)[0].rsplit(".", 1)[-1]
    return {"thread": "threads"}.get(
        module, module if module in ("prefork", "solo", "gevent", "eventlet") else "custom"
    )


def parse_registered(entries: Collection[str]) -> dict[str, TaskLimits]:
    """``["app.t [time_limit=30 acks_late=True]", ...]`` -> {name: TaskLimits}."""
    out: dict[str, TaskLimits] = {}
    for entry in entries:
        match = _REGISTERED.match(str(entry).strip())
        if not match:
            continue
        attrs: dict[str, str] = {}
        for pair in (match.group("attrs") or "").split():
            key, _, value = pair.partition("=")
            attrs[key] = value
        out[match.group("name")] = TaskLimits(
            time_limit=_num(attrs.get("time_limit")),
            soft_time_limit=_num(attrs.get("soft_time_limit")),
            acks_late=_flag(attrs.get("acks_late")),
            reject_on_worker_lost=_flag(attrs.get("reject_on_worker_lost")),
        )
    return out


def _num(value: str | None) -> float | None:
    if value in (None, "", "None"):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _flag(value: str | None) -> bool | None:
    if value in ("True", "true", "1"):
        return True
    if value in ("False", "false", "0"):
        return False
    return None


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def parse_active(entries: Any) -> tuple[ActiveTask, ...]:
    tasks = []
    for entry in entries or ():
        if not isinstance(entry, Mapping) or not entry.get("id"):
            continue
        delivery = entry.get("delivery_info") or {}
        start = entry.get("time_start")
        tasks.append(
            ActiveTask(
                id=str(entry["id"]),
                name=entry.get("name"),
                worker_pid=_int_or_none(entry.get("worker_pid")),
                time_start=float(start) if isinstance(start, int | float) else None,
                acknowledged=entry.get("acknowledged"),
                redelivered=bool(delivery.get("redelivered", False)),
            )
        )
    return tuple(sorted(tasks, key=lambda t: t.id))


# A worker consumes a handful of queues; a reply listing more is not one we act on whole.
MAX_WORKER_QUEUES = 1000


def parse_active_queues(entries: Any) -> tuple[str, ...] | None:
    """``[{"name": "celery", "exchange": {...}, ...}, ...]`` -> the sorted queue names; None when
    the reply is not a list (then nothing is known of the worker's queues)."""
    if not isinstance(entries, list):
        return None
    names = {
        entry["name"]
        for entry in entries[:MAX_WORKER_QUEUES]
        if isinstance(entry, Mapping)
        and isinstance(entry.get("name"), str)
        and 0 < len(entry["name"]) <= 255
    }
    return tuple(sorted(names))


def snapshot_from(name: str, stats: Mapping[str, Any], *, reping: bool = False) -> WorkerSnapshot:
    pool = stats.get("pool") or {}
    processes = pool.get("processes") or ()
    rusage = stats.get("rusage") or {}
    return WorkerSnapshot(
        name=name,
        pid=int(stats["pid"]),
        uptime_s=float(stats.get("uptime", 0)),
        pool=pool_kind(pool.get("implementation")),
        pool_pids=tuple(sorted(int(p) for p in processes if _int_or_none(p) is not None)),
        max_concurrency=_int_or_none(pool.get("max-concurrency")),
        rss_kib=_int_or_none(rusage.get("maxrss")),
        reping=reping,
    )


def pinned_app(broker_url: str) -> Any:
    """A Celery app (no tasks, no configuration of its own) whose every broker connection goes to
    ``broker_url``, whatever ``CELERY_*`` variables the environment holds.

    Celery's settings prefer ``CELERY_BROKER_URL`` (and ``CELERY_BROKER_READ_URL`` /
    ``_WRITE_URL``) over the app's broker, and its loaders import ``CELERY_CONFIG_MODULE``: in a
    shell with the workers' env file loaded, the broadcasts would go to another broker, where a
    silent fleet looks healthy, while the report names the broker the settings resolved. The
    pool, the broadcasts and the reply consumer all open their connections through
    ``connection_for_read`` / ``connection_for_write`` / ``connection``, pinned here.
    """
    from celery import Celery
    from celery.loaders.app import AppLoader

    class OwnConfigLoader(AppLoader):  # type: ignore[misc]  # celery ships no type hints
        def read_configuration(self, env: str = "") -> None:
            return None

    class PinnedCelery(Celery):  # type: ignore[misc]
        def connection_for_read(self, url: str | None = None, **kwargs: Any) -> Any:
            return super().connection_for_read(broker_url, **kwargs)

        def connection_for_write(self, url: str | None = None, **kwargs: Any) -> Any:
            return super().connection_for_write(broker_url, **kwargs)

        def connection(self, hostname: str | None = None, *args: Any, **kwargs: Any) -> Any:
            return super().connection(broker_url, *args, **kwargs)

        broker_connection = connection

    return PinnedCelery("oomcheck", broker=broker_url, loader=OwnConfigLoader, set_as_current=False)


class CeleryInspector:
    """Talks to the workers through the broker. Builds its own minimal Celery app (no tasks)."""

    def __init__(
        self,
        broker_url: str,
        *,
        keyprefix: str = "",
        transport_options: Mapping[str, Any] | None = None,
        timeout: float = 1.0,
        reping_timeout: float = 2.0,
        clock: Callable[[], float] = time.time,
        app: Any | None = None,
    ) -> None:
        self.timeout = timeout
        self.reping_timeout = reping_timeout
        self.clock = clock
        self.app = (
            app
            if app is not None
            else self._make_app(broker_url, keyprefix, transport_options or {})
        )

    @staticmethod
    def _make_app(broker_url: str, keyprefix: str, user_options: Mapping[str, Any]) -> Any:
        app = pinned_app(for_kombu(broker_url))
        transport_options: dict[str, Any] = {
            **user_options,
            # Fail fast when the broker is down: one attempt, no long back-off.
            "max_retries": 1,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
            "socket_connect_timeout": 3,
            "socket_timeout": 5,
            # broker presence must never count the checker's own connections as a worker's
            "client_name": OWN_NAME,
        }
        if keyprefix:
            transport_options["global_keyprefix"] = keyprefix
        app.conf.update(
            broker_transport_options=transport_options,
            broker_connection_timeout=3,
            broker_connection_retry=False,
            broker_connection_retry_on_startup=False,
            broker_connection_max_retries=1,
            worker_hijack_root_logger=False,
        )
        return app

    def _inspect(
        self,
        method: str,
        *args: Any,
        destination: Collection[str] | None = None,
        limit: int | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        inspect = self.app.control.inspect(
            timeout=self.timeout if timeout is None else timeout,
            limit=limit,
            destination=list(destination) if destination is not None else None,
        )
        try:
            reply = getattr(inspect, method)(*args)
        except Exception as exc:  # kombu raises many types; all mean "broker unusable"
            raise InspectError(f"{method}: {type(exc).__name__}: {exc}") from exc
        # A silent cluster answers None, not {}.
        return dict(reply or {})

    def observe(
        self,
        expected: Collection[str],
        *,
        discover: bool,
        need_registered: Callable[[WorkerSnapshot], bool] = lambda _: True,
        presence: PresenceProbe | None = None,
        suspects: Collection[str] = (),
        newcomers: Collection[str] = (),
    ) -> InspectResult:
        """Every worker that answers, with its tasks; ``expected`` are the roster's live names.

        With ``discover`` (or nothing expected) the broadcast waits the full timeout to hear
        workers the roster does not know yet; otherwise it stops at len(expected) replies. A
        worker that missed the broadcast is pinged directly once, unless ``presence`` (asked
        right after the broadcast) shows its broker connections are gone: it is dead, and the
        re-ping would only wait out its timeout. ``newcomers`` (nodenames the broker shows and
        the roster does not know) are waited for as well, but not re-pinged: the broadcast gave
        them its whole timeout; those that did not answer are listed in ``missing``.

        ``suspects``: expected workers a death is suspected of (a check started by an event or by
        a closed subscription). The broker is asked about them first, and those whose
        connections are gone are left out of the broadcast's reply count, so the broadcast ends
        with the last live reply instead of waiting the timeout for the dead one.
        """
        wanted = set(expected) | set(newcomers)
        gone = self._gone_first(expected, suspects, presence) if not discover else frozenset()
        limit = None if discover or not expected else len(wanted) - len(gone)
        stats = self._broadcast_stats(limit)
        inspected_at = self.clock()
        snapshots = {
            name: snapshot_from(name, body)
            for name, body in stats.items()
            if isinstance(body, Mapping) and "pid" in body
        }
        missing = sorted(set(expected) - set(snapshots))
        seen = presence(snapshots, missing) if missing and presence is not None else {}
        # A suspect that answered although the broker showed it gone proves the listing wrong
        # this time: every silent suspect is then re-pinged, as without the first look.
        doubted = gone & set(snapshots)
        reping = [
            n
            for n in missing
            if n not in seen or seen[n].present is not False or (doubted and n in gone)
        ]
        if reping:
            snapshots.update(self.ping_direct(reping))
        still_missing = tuple(sorted(wanted - set(snapshots)))
        seen = {n: p for n, p in seen.items() if n in still_missing}
        if not snapshots:
            return InspectResult({}, inspected_at, still_missing, limit is None, seen)
        names = sorted(snapshots)
        active = self._inspect("active", destination=names, limit=len(names))
        # Queues feed one rule; a broker that fails here fails only that rule's input.
        queues: dict[str, Any] = {}
        queues_error = None
        try:
            queues = self._inspect("active_queues", destination=names, limit=len(names))
        except InspectError as exc:
            queues_error = str(exc)
        asked = [n for n in names if need_registered(snapshots[n])]
        registered = (
            self._inspect("registered", *REGISTERED_FIELDS, destination=asked, limit=len(asked))
            if asked
            else {}
        )
        workers: dict[str, WorkerSnapshot] = {}
        for name, snap in snapshots.items():
            workers[name] = replace(
                snap,
                active=parse_active(active[name]) if name in active else None,
                registered=parse_registered(registered.get(name) or ()),
                queues=parse_active_queues(queues.get(name)),
            )
        return InspectResult(
            workers, inspected_at, still_missing, limit is None, seen, queues_error
        )

    def _gone_first(
        self,
        expected: Collection[str],
        suspects: Collection[str],
        presence: PresenceProbe | None,
    ) -> frozenset[str]:
        """The suspects whose broker connections are already gone, asked before the broadcast
        (nobody has answered yet)."""
        asked = sorted(set(suspects) & set(expected))
        if not asked or presence is None:
            return frozenset()
        seen = presence({}, asked)
        return frozenset(n for n in asked if n in seen and seen[n].present is False)

    def _broadcast_stats(self, limit: int | None) -> dict[str, Any]:
        if limit == 0:
            # every expected worker is gone: listen only briefly for workers the roster does
            # not know (discovery proper waits the full timeout on its own schedule)
            return self._inspect("stats", timeout=min(self.timeout, NONE_EXPECTED_WAIT_S))
        return self._inspect("stats", limit=limit)

    def ping_direct(self, names: Collection[str]) -> dict[str, WorkerSnapshot]:
        """Ask named workers for stats directly (one round, ``reping_timeout``)."""
        if not names:
            return {}
        stats = self._inspect(
            "stats", destination=sorted(names), limit=len(names), timeout=self.reping_timeout
        )
        return {
            name: snapshot_from(name, body, reping=True)
            for name, body in stats.items()
            if isinstance(body, Mapping) and "pid" in body
        }

    def close(self) -> None:
        # Not pool.force_close_all(): kombu keeps connection pools in a process-wide registry
        # keyed by URL, shared with any other app on the same broker.
        self.app.close()
