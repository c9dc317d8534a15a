"""Lambda SnapStart: what the snapshot holds, and what every restored copy makes its own.

Lambda's Python runtimes ship ``snapshot_restore_py`` (the module is not on PyPI-in-our-lock and
exists only there): with SnapStart on, Lambda runs the init code once when a version is
published, calls the before-snapshot hooks, snapshots the memory, and resumes each new execution
environment from that snapshot after calling the after-restore hooks (they must end within 10 s).

Before the snapshot the checker's dependencies are built (settings read, ssm: references
resolved, every client created), so a restored copy starts with them; then every network
connection made so far is closed, since no socket survives a restore. After a restore,
everything a copy must not share with its siblings is made fresh: connection pools (redis-py,
kombu and the Celery app's pools, botocore's urllib3 pools), the lease owner id (two copies with
one owner would take each other's DynamoDB lease), kombu's node id (the Celery reply queue's name
is derived from it, the pid and object addresses, all equal in every copy), and ``random``'s
state. Nothing here does network I/O: closing a socket does not wait on its peer.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from oomcheck.deadline import DEFAULT_RUN_TIMEOUT_S
from oomcheck.ports import new_owner

if TYPE_CHECKING:
    from oomcheck.ports import Deps

# How deep the walk over Deps goes to find clients: Deps -> adapter -> client, or
# Deps -> fan-out publisher -> channel -> client.
_MAX_DEPTH = 4


class InitContext:
    """What the checker is built with before the snapshot, where there is no invocation yet:
    the clients' timeouts and retries are sized for the default run budget."""

    def get_remaining_time_in_millis(self) -> int:
        return int(DEFAULT_RUN_TIMEOUT_S * 1000)


INIT_CONTEXT: Any = InitContext()


def install_snapshot_hooks(prepare: Callable[[], Deps], current: Callable[[], Deps | None]) -> bool:
    """Registers the hooks when the runtime offers them (``snapshot_restore_py``); elsewhere
    (SnapStart off registers nothing either way, tests, the CLI) returns False.

    ``prepare`` builds the process's dependencies; ``current`` returns them if built."""
    try:
        from snapshot_restore_py import (  # type: ignore[import-not-found]
            register_after_restore,
            register_before_snapshot,
        )
    except ImportError:
        return False
    register_before_snapshot(before_snapshot, prepare)
    register_after_restore(after_restore, current)
    return True


def before_snapshot(prepare: Callable[[], Deps]) -> None:
    """The init work done ahead, then every connection it opened closed."""
    close_connections(prepare())


def after_restore(current: Callable[[], Deps | None]) -> None:
    """This copy's own connections, identity and randomness."""
    _forget_shared_identity()
    deps = current()
    if deps is None:
        return
    close_connections(deps)
    deps.owner = new_owner()


def close_connections(deps: Deps) -> int:
    """Closes (or, for kombu, drops without touching the socket) every connection the clients
    reachable from ``deps`` hold; each reconnects on its next call. Returns the clients seen."""
    import kombu.pools

    # kombu's pools are process-wide (shared by every Celery app on a URL): Celery resets them
    # in a forked child the same way, and a restored copy is a fork in all but name.
    kombu.pools.reset()  # type: ignore[no-untyped-call]
    seen = 0
    for client in _clients(deps):
        seen += 1
        _close(client)
    return seen


def _close(client: Any) -> None:
    import redis
    from botocore.client import BaseClient
    from celery import Celery
    from kombu.connection import Connection

    if isinstance(client, redis.RedisCluster):
        client.disconnect_connection_pools()  # type: ignore[no-untyped-call]
    elif isinstance(client, redis.Redis):
        client.connection_pool.disconnect()
        # a Sentinel master's pool asks the sentinels through clients of their own
        manager = getattr(client.connection_pool, "sentinel_manager", None)
        for sentinel in getattr(manager, "sentinels", ()):
            sentinel.connection_pool.disconnect()
    elif isinstance(client, BaseClient):
        client.close()  # urllib3's pools emptied; the client reconnects on its next call
    elif isinstance(client, Connection):
        # resources released without a goodbye on a socket that may be dead
        client.collect()  # type: ignore[no-untyped-call]
    elif isinstance(client, Celery):
        # what Celery does in a forked child: the app forgets its (reset) pools
        client._after_fork()


def _is_client(value: Any) -> bool:
    import redis
    from botocore.client import BaseClient
    from celery import Celery
    from kombu.connection import Connection

    return isinstance(value, redis.Redis | redis.RedisCluster | BaseClient | Connection | Celery)


def _clients(deps: Deps) -> Iterator[Any]:
    """The clients held by deps' adapters, each once: a bounded walk over oomcheck's own objects
    (a new adapter needs no code here)."""
    seen: set[int] = set()
    stack: list[tuple[Any, int]] = [(deps, 0)]
    while stack:
        value, depth = stack.pop()
        if id(value) in seen or value is None or isinstance(value, str | bytes | int | float):
            continue
        seen.add(id(value))
        if _is_client(value):
            yield value
            continue
        if depth >= _MAX_DEPTH:
            continue
        if isinstance(value, list | tuple | set | frozenset):
            stack.extend((item, depth + 1) for item in value)
        elif type(value).__module__.startswith("oomcheck"):
            stack.extend((child, depth + 1) for child in _attributes(value))


def _attributes(value: Any) -> list[Any]:
    names: list[str] = list(getattr(value, "__dict__", {}))
    for cls in type(value).__mro__:
        names.extend(getattr(cls, "__slots__", ()))
    return [getattr(value, name, None) for name in names]


def _forget_shared_identity() -> None:
    import kombu.common

    # kombu draws a node id once per process and derives the Celery reply queue's name from it,
    # the pid, the thread and an object address: in every restored copy all four are equal, so
    # the copies would consume each other's inspect replies. A new draw per copy.
    kombu.common._node_id = None
    random.seed()  # from os.urandom: the snapshot's generator state is every copy's
    _powertools_cold_start()


def _powertools_cold_start() -> None:
    """A restored copy's first invocation is a cold start of a new environment (a restore, not
    an init): Powertools' flags say so even if something ran the handler before the snapshot."""
    from aws_lambda_powertools.logging import logger as powertools_logger
    from aws_lambda_powertools.metrics.provider import cold_start

    powertools_logger.is_cold_start = True
    cold_start.reset_cold_start_flag()  # type: ignore[no-untyped-call]
