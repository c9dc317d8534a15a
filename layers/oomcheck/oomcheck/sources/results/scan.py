"""Celery's Redis result backend, read for STARTED records and WorkerLostError failures.

Keys are ``{keyprefix}celery-task-meta-{task_id}``, values are JSON with ``status`` first, written
with SETEX ``result_expires`` on every state change (see FACTS.md, "Result backend (Redis)").

How a scan stays cheap (measured by ``bench/bench_scan.py``; the Redis server is the bottleneck,
since every key costs it one SCAN step and one lookup, so the client keeps it busy):

- A server-side Lua script (``probe.lua``) runs one ``SCAN cursor MATCH ... COUNT batch`` and
  reads only the first ``PROBE_BYTES`` of each key with GETRANGE. It returns the next cursor,
  counts, and only the records worth parsing (STARTED, FAILURE naming WorkerLostError, and JSON
  objects whose status is not where Celery puts it). For each of those it adds the TTL, the
  length, a head of at most ``HEAD_BYTES`` and, when the value is longer, a tail of
  ``TAIL_BYTES`` (``worker`` sits after the possibly huge args/kwargs). So the client never
  receives the names of the 99% of keys that need nothing, and no value is ever read whole unless
  it is small. The next batch's request is sent as soon as a reply names its cursor, before this
  batch's records are parsed.
- Where scripting is unavailable (ACL without @scripting, a proxy that rejects EVALSHA or
  SCRIPT LOAD) the same probes run from the client: each batch's GETRANGEs go out in one write
  together with the next SCAN, then one pipeline reads the few candidates. About 1.4x slower than
  the script on one server, and it moves every key name over the wire. Both are in ``readers.py``.
- A Redis Cluster client is scanned primary by primary (sorted by address); the cursor names the
  node. The script only touches keys its own SCAN returned, so no cluster refusal arises.
- Nothing is ever unpickled or evaluated: a value whose first byte is not ``{`` is counted as
  skipped, and so is one nested deeper than ``safejson.MAX_DEPTH`` (``parse.py``).

Commands used exist in Redis 2.8+ (SCAN, GETRANGE, STRLEN, PTTL, EVALSHA), so Redis 6.2 works.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis
from redis.exceptions import ResponseError

from oomcheck.model import LostFailure, StartedTask
from oomcheck.sources.results.parse import (
    HEAD_BYTES,
    KEY_STEM,
    LOOKUP_PROBE_BYTES,
    OBJECT_START,
    partial_object,
    probe_status,
)
from oomcheck.sources.results.readers import (
    SCAN_SCRIPT_SHA,
    Refused,
    ScanPass,
    read_plain,
    read_scripted,
)

__all__ = ["RedisResultScanner", "ResultScan"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ResultScan:
    started: tuple[StartedTask, ...]
    lost_failures: tuple[LostFailure, ...]
    keys_scanned: int
    # values that are not JSON (pickle, msgpack, yaml), malformed, nested too deep, or oversized
    skipped_values: int
    cursor: str | None  # None when the pass completed; else an opaque resume point


@dataclass(slots=True)
class _Node:
    name: str  # "" for a single server, "host:port" for a cluster primary
    client: redis.Redis
    scripted: bool = True


class RedisResultScanner:
    """Reads STARTED and WorkerLostError records from Celery's Redis result backend.

    ``client`` comes from :func:`oomcheck.sources.redis_client.make_redis` (a Redis Cluster client
    scans every primary). ``keyprefix`` is Celery's ``global_keyprefix``; ``result_expires`` and
    ``failure_expires`` are Celery's ``result_expires`` / ``result_failure_expires`` (seconds),
    used to turn TTLs into write times. ``batch`` is the SCAN COUNT per round trip.
    """

    def __init__(
        self,
        client: redis.Redis | redis.RedisCluster,
        *,
        keyprefix: str = "",
        result_expires: float | None = 86400.0,
        failure_expires: float | None = None,
        batch: int = 1000,
    ) -> None:
        if batch < 1:
            raise ValueError("batch must be >= 1")
        self._client = client
        self._prefix = (keyprefix + KEY_STEM).encode()
        self._pattern = (_glob_escape(keyprefix) + KEY_STEM + "*").encode()
        self._result_expires = result_expires
        self._failure_expires = failure_expires
        self._batch = batch
        self._sha = SCAN_SCRIPT_SHA
        self._scripted: dict[str, bool] = {}

    # -- public -------------------------------------------------------------------------------

    def scan(
        self,
        now: float,
        *,
        budget: int | None = None,
        cursor: str | None = None,
        time_budget_s: float | None = None,
    ) -> ResultScan:
        """One pass (or, with ``budget``, part of one) over the result keys.

        ``budget`` stops the scan after about that many keys; ``time_budget_s`` after about that
        many seconds (a Lambda's remaining time). Either way ``cursor`` in the answer resumes
        where this call stopped; None means the pass is complete. A cursor that does not fit
        the current topology (garbage, or saved against another server layout) starts a fresh
        pass instead of failing every run.
        """
        if budget is not None and budget < 1:
            raise ValueError("budget must be >= 1")
        run = ScanPass(
            now=now,
            budget=budget,
            batch=self._batch,
            deadline=None if time_budget_s is None else time.monotonic() + time_budget_s,
            pattern=self._pattern,
            prefix_len=len(self._prefix),
            result_expires=self._result_expires,
            failure_expires=self._failure_expires,
        )
        nodes = self._nodes()
        start, scan_cursor = self._resume_point(cursor, [n.name for n in nodes])
        for index in range(start, len(nodes)):
            node = nodes[index]
            stopped_at = self._scan_node(node, scan_cursor if index == start else 0, run)
            if stopped_at is not None:
                return _result(run, self._encode(node.name, stopped_at))
        return _result(run, None)

    def lookup(self, task_ids: Sequence[str]) -> dict[str, str]:
        """Status of each id that has a result record; ``UNKNOWN`` for records that exist but are
        not readable JSON (pickle, msgpack...). Ids without a record are left out."""
        found: dict[str, str] = {}
        ids = list(dict.fromkeys(task_ids))
        for offset in range(0, len(ids), self._batch):
            self._lookup_chunk(ids[offset : offset + self._batch], found)
        return found

    def _lookup_chunk(self, chunk: list[str], found: dict[str, str]) -> None:
        keys = [self._prefix + tid.encode() for tid in chunk]
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.getrange(key, 0, LOOKUP_PROBE_BYTES - 1)
        replies = pipe.execute(raise_on_error=False)
        unsure: list[tuple[str, bytes]] = []
        for tid, key, reply in zip(chunk, keys, replies, strict=True):
            if isinstance(reply, ResponseError):
                found[tid] = "UNKNOWN"  # a key of another type: it exists, unreadable
                continue
            if isinstance(reply, Exception):
                raise reply
            if not reply:
                continue
            status = probe_status(reply)
            if status is not None:
                found[tid] = status
            elif OBJECT_START.match(reply):
                unsure.append((tid, key))
            else:
                found[tid] = "UNKNOWN"
        if not unsure:
            return
        pipe = self._client.pipeline(transaction=False)
        for _, key in unsure:
            pipe.getrange(key, 0, HEAD_BYTES - 1)
        for (tid, _), head in zip(unsure, pipe.execute(), strict=True):
            if head:
                status_value = partial_object(head.decode("utf-8", "replace")).get("status")
                found[tid] = status_value if isinstance(status_value, str) else "UNKNOWN"

    # -- internals ------------------------------------------------------------------------------

    def _nodes(self) -> list[_Node]:
        client = self._client
        if isinstance(client, redis.RedisCluster):
            primaries = sorted(
                client.get_primaries(),  # type: ignore[no-untyped-call]
                key=lambda n: str(n.name),
            )
            return [
                _Node(
                    name=str(n.name),
                    client=client.get_redis_connection(n),
                    scripted=self._scripted.get(str(n.name), True),
                )
                for n in primaries
            ]
        return [_Node(name="", client=client, scripted=self._scripted.get("", True))]

    @staticmethod
    def _encode(node: str, position: int) -> str:
        return f"{node}/{position}" if node else str(position)

    @staticmethod
    def _resume_point(cursor: str | None, names: Sequence[str]) -> tuple[int, int]:
        """(node index, SCAN cursor) to start from."""
        if not cursor:
            return 0, 0
        node, slash, position_text = cursor.rpartition("/")
        valid = position_text.isdigit() and (bool(slash) == bool(names and names[0]))
        if not valid:
            log.warning(
                "result scan cursor %r does not fit this server; starting a new pass", cursor[:80]
            )
            return 0, 0
        position = int(position_text)
        if not slash:
            return 0, position
        if node in names:
            return names.index(node), position
        # The node left the cluster (failover, resharding): go on with the ones after it.
        later = [i for i, name in enumerate(names) if name > node]
        log.warning("result scan cursor names node %s that is gone; continuing after it", node)
        return (later[0], 0) if later else (len(names), 0)

    def _scan_node(self, node: _Node, position: int, run: ScanPass) -> int | None:
        """Scan one server from ``position``: None when it is done, else the position to resume
        from because the pass ran out of budget."""
        if node.scripted:
            try:
                return read_scripted(node.client, position, run)
            except Refused as refused:
                log.info(
                    "result scan on %s reads from the client: %s", node.name or "redis", refused.why
                )
                node.scripted = False
                self._scripted[node.name] = False
                position = refused.position
        return read_plain(node.client, position, run)


def _result(run: ScanPass, cursor: str | None) -> ResultScan:
    return ResultScan(
        started=tuple(run.started),
        lost_failures=tuple(run.lost),
        keys_scanned=run.scanned,
        skipped_values=run.skipped,
        cursor=cursor,
    )


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)
