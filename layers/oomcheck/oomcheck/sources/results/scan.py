"""Celery's Redis result backend, read for STARTED records and WorkerLostError failures.

Keys are ``{keyprefix}celery-task-meta-{task_id}``, values are JSON with ``status`` first, written
with SETEX ``result_expires`` on every state change (see FACTS.md, "Result backend (Redis)").

How a scan stays cheap (measured by ``bench/bench_scan.py``; the Redis server is the bottleneck,
since every key costs it one SCAN step and one lookup, so the client keeps it busy):

- A server-side Lua script runs one ``SCAN cursor MATCH ... COUNT batch`` and reads only the first
  ``PROBE_BYTES`` of each key with GETRANGE. It returns the next cursor, counts, and only the
  records worth parsing (STARTED, FAILURE naming WorkerLostError, and JSON objects whose status is
  not where Celery puts it). For each of those it adds the TTL, the length, a head of at most
  ``HEAD_BYTES`` and, when the value is longer, a tail of ``TAIL_BYTES`` (``worker`` sits after
  the possibly huge args/kwargs). So the client never receives the names of the 99% of keys that
  need nothing, and no value is ever read whole unless it is small. The next batch's request is
  sent as soon as a reply names its cursor, before this batch's records are parsed.
- Where scripting is unavailable (ACL without @scripting, a proxy that rejects EVALSHA or
  SCRIPT LOAD) the same probes run from the client: each batch's GETRANGEs go out in one write
  together with the next SCAN, then one pipeline reads the few candidates. About 1.4x slower than
  the script on one server, and it moves every key name over the wire.
- A Redis Cluster client is scanned primary by primary (sorted by address); the cursor names the
  node. The script only touches keys its own SCAN returned, so no cluster refusal arises.
- Nothing is ever unpickled or evaluated: a value whose first byte is not ``{`` is counted as
  skipped.

Commands used exist in Redis 2.8+ (SCAN, GETRANGE, STRLEN, PTTL, EVALSHA), so Redis 6.2 works.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from hashlib import sha1
from typing import Any

import redis
from redis.exceptions import NoPermissionError, NoScriptError, ResponseError

from oomcheck.model import LostFailure, StartedTask

__all__ = [
    "HEAD_BYTES",
    "KEY_STEM",
    "PROBE_BYTES",
    "TAIL_BYTES",
    "RedisResultScanner",
    "ResultScan",
    "interpret_record",
    "lost_reason",
    "partial_object",
    "probe_status",
    "written_at",
]

log = logging.getLogger(__name__)

KEY_STEM = "celery-task-meta-"
# Exactly `{"status": "STARTED"`: every key costs one read of this size, and a status longer
# than 7 characters (RECEIVED, custom states) is none of the scan's business.
PROBE_BYTES = 20
# lookup() reads few keys and wants any status, so it looks further.
LOOKUP_PROBE_BYTES = 64
# STARTED/FAILURE fields that matter (result, name) come before args/kwargs; a head this long
# holds them for any realistic record while bounding what one huge value can cost.
HEAD_BYTES = 8192
TAIL_BYTES = 1024

# KEYS: none (SCAN names them). ARGV: cursor, pattern, count, probe, head, tail byte counts.
# Reply: {next_cursor, keys_seen, skipped, key1, pttl1, len1, head1, tail1, key2, ...}.
# The per-key path is what the whole scan costs, so for Celery's own layout it is one GETRANGE
# and one comparison: a probe of exactly the length of '{"status": "STARTED"' is interned by Lua,
# so comparing it with the constants is a pointer comparison. Patterns run only for other
# layouts (compact JSON, another key first). GETRANGE goes through pcall so that a key of another
# type is counted as skipped instead of failing the batch. Numbers go in as strings: Lua would
# otherwise format them on every call.
SCAN_SCRIPT = """
local pcall, call, find, match, sub = redis.pcall, redis.call, string.find, string.match, string.sub
local scan = call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])
local keys = scan[2]
local probe_len, head_len = tonumber(ARGV[4]), tonumber(ARGV[5])
local zero, probe_last = '0', tostring(probe_len - 1)
local head_last, tail_from = tostring(head_len - 1), tostring(-tonumber(ARGV[6]))
local SUCCESS = '{"status": "SUCCESS"'
local STARTED = '{"status": "STARTED"'
local FAILURE = '{"status": "FAILURE"'
local out = {scan[1], #keys, 0}
local n = 3
local skipped = 0
for i = 1, #keys do
  local key = keys[i]
  local probe = pcall('GETRANGE', key, zero, probe_last)
  local kind = 0  -- 0 nothing to do, 1 STARTED, 2 FAILURE (look closer), 3 unknown layout
  if probe == SUCCESS then
    kind = 0
  elseif probe == STARTED then
    kind = 1
  elseif probe == FAILURE then
    kind = 2
  elseif type(probe) ~= 'string' then
    skipped = skipped + 1
  elseif probe ~= '' and sub(probe, 1, 12) ~= '{"status": "' then
    local status = match(probe, '^%s*{%s*"status"%s*:%s*"([^"]*)"')
    if status == 'STARTED' then
      kind = 1
    elseif status == 'FAILURE' then
      kind = 2
    elseif status == nil and not match(probe, '^%s*{%s*"status"%s*:%s*"[^"]*$') then
      if find(probe, '^%s*{') then kind = 3 else skipped = skipped + 1 end
    end
  end
  if kind ~= 0 then
    local size = call('STRLEN', key)
    local head = probe
    if size > probe_len then
      head = call('GETRANGE', key, zero, head_last)
    end
    if kind == 2 and not find(head, 'WorkerLostError', 1, true) then
      kind = 0
    end
    if kind ~= 0 then
      local tail = ''
      if size > head_len then
        tail = call('GETRANGE', key, tail_from, '-1')
      end
      out[n + 1] = key
      out[n + 2] = call('PTTL', key)
      out[n + 3] = size
      out[n + 4] = head
      out[n + 5] = tail
      n = n + 5
    end
  end
end
out[3] = skipped
return out
"""

_STATUS_RE = re.compile(rb'\A\s*\{\s*"status"\s*:\s*"([^"]*)"')
_OBJECT_RE = re.compile(rb"\A\s*\{")
# A status string that runs past the probe is longer than any state this module looks for.
_LONG_STATUS_RE = re.compile(rb'\A\s*\{\s*"status"\s*:\s*"[^"]*\Z')
_SIGNAL_RE = re.compile(r"\bsignal (\d+)")
_EXITCODE_RE = re.compile(r"\bexitcode (-?\d+)")
_WORKER_RE = re.compile(rb'"worker"\s*:\s*')
_WS = " \t\r\n"
_DECODER = json.JSONDecoder()
# Redis replies that mean "scripting is not for us here": fall back to client-side reads.
_SCRIPT_REFUSALS = (
    "NOPERM",
    "unknown command",
    "not allowed",
    "non local key",
    "cross",
    "disabled",
    "no scripts",
)


@dataclass(frozen=True, slots=True)
class ResultScan:
    started: tuple[StartedTask, ...]
    lost_failures: tuple[LostFailure, ...]
    keys_scanned: int
    skipped_values: int  # values that are not JSON (pickle, msgpack, yaml), malformed, or oversized
    cursor: str | None  # None when the pass completed; else an opaque resume point


# --------------------------------------------------------------------------------------------
# Parsing: pure functions, no I/O.


def probe_status(probe: bytes) -> str | None:
    """The status of a record from its first bytes when it is where Celery writes it."""
    match = _STATUS_RE.match(probe)
    return match.group(1).decode("utf-8", "replace") if match else None


def written_at(now: float, pttl_ms: int | None, expires: float | None) -> float | None:
    """When the record was last written, from its remaining TTL (milliseconds, as PTTL gives).

    Celery writes every state with SETEX ``expires``; so ``expires - ttl`` seconds have passed.
    A TTL longer than ``expires`` means oomcheck's setting is shorter than Celery's: the write
    cannot be in the future, so the answer is capped at ``now``.
    """
    if not expires or pttl_ms is None or pttl_ms < 0:
        return None
    return min(now, now - (float(expires) - pttl_ms / 1000.0))


def lost_reason(message: str) -> tuple[int | None, int | None]:
    """(signal, exitcode) from billiard's 'Worker exited prematurely: ...' text."""
    sig = _SIGNAL_RE.search(message)
    code = _EXITCODE_RE.search(message)
    return (int(sig.group(1)) if sig else None, int(code.group(1)) if code else None)


def partial_object(text: str) -> dict[str, Any]:
    """The members of a JSON object that survive truncation of its text, in order.

    Parsing stops at the first member whose value is cut off (or at anything malformed); what
    came before is returned. Nothing but JSON is ever decoded.
    """
    out: dict[str, Any] = {}
    length = len(text)
    i = _skip_ws(text, 0)
    if i >= length or text[i] != "{":
        return out
    i += 1
    while True:
        i = _skip_ws(text, i)
        if i >= length or text[i] != '"':
            return out
        try:
            key, i = _DECODER.raw_decode(text, i)
        except ValueError:
            return out
        i = _skip_ws(text, i)
        if i >= length or text[i] != ":":
            return out
        i = _skip_ws(text, i + 1)
        try:
            value, i = _DECODER.raw_decode(text, i)
        except ValueError:
            return out
        out[key] = value
        i = _skip_ws(text, i)
        if i >= length or text[i] != ",":
            return out
        i += 1


def _skip_ws(text: str, i: int) -> int:
    length = len(text)
    while i < length and text[i] in _WS:
        i += 1
    return i


def _tail_worker(tail: bytes) -> str | None:
    """``worker`` from the last bytes of a long extended record (it follows args/kwargs)."""
    last = None
    for last in _WORKER_RE.finditer(tail):  # noqa: B007 - the last match is the real key
        pass
    if last is None:
        return None
    text = tail[last.end() :].decode("utf-8", "replace")
    try:
        value, _ = _DECODER.raw_decode(text)
    except ValueError:
        return None
    return value if isinstance(value, str) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def interpret_record(  # noqa: PLR0917 - one record's raw parts, as the scan reads them
    task_id: str,
    head: bytes,
    tail: bytes,
    size: int,
    pttl_ms: int | None,
    now: float,
    *,
    result_expires: float | None = 86400.0,
    failure_expires: float | None = None,
) -> tuple[StartedTask | LostFailure | None, bool]:
    """(record, skipped) for one result value given its head (and tail when longer).

    ``record`` is a StartedTask, a LostFailure, or None for anything else. ``skipped`` is True
    when the value could not be read as a Celery JSON record (not JSON, malformed, or so long
    that its status/result did not fit in the head).
    """
    if size <= len(head):
        try:
            obj = json.loads(head)
        except ValueError:  # includes UnicodeDecodeError
            return None, True
        if not isinstance(obj, dict):
            return None, True
        complete = True
    else:
        obj = partial_object(head.decode("utf-8", "replace"))
        complete = False
    status = obj.get("status")
    if not isinstance(status, str):
        return None, True
    if status == "STARTED":
        meta = obj.get("result")
        meta = meta if isinstance(meta, dict) else {}
        worker = _str(meta.get("hostname")) or _str(obj.get("worker"))
        if worker is None and not complete:
            worker = _tail_worker(tail)
        return StartedTask(
            id=task_id,
            worker=worker,
            pid=_int(meta.get("pid")),
            name=_str(obj.get("name")),
            written_at=written_at(now, pttl_ms, result_expires),
        ), False
    if status != "FAILURE":
        return None, False
    meta = obj.get("result")
    if not isinstance(meta, dict):
        # A FAILURE whose result was cut off in the head: it may or may not be ours.
        return None, not complete
    exc_type = meta.get("exc_type")
    if not isinstance(exc_type, str) or exc_type.rpartition(".")[2] != "WorkerLostError":
        return None, False
    raw = meta.get("exc_message")
    if isinstance(raw, list | tuple):
        message = " ".join(str(part) for part in raw)
    elif raw is None:
        message = ""
    else:
        message = str(raw)
    signal, exitcode = lost_reason(message)
    worker = _str(obj.get("worker"))
    if worker is None and not complete:
        worker = _tail_worker(tail)
    expires = failure_expires if failure_expires is not None else result_expires
    return LostFailure(
        id=task_id,
        message=message,
        name=_str(obj.get("name")),
        worker=worker,
        signal=signal,
        exitcode=exitcode,
        written_at=written_at(now, pttl_ms, expires),
    ), False


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


_PROBE_TAIL = _bulk(b"0") + _bulk(str(PROBE_BYTES - 1).encode())


def _probe_command(key: bytes) -> bytes:
    """``GETRANGE key 0 PROBE_BYTES-1`` in RESP; bulk strings are length-prefixed, so any key
    bytes are safe."""
    return b"*4\r\n$8\r\nGETRANGE\r\n" + _bulk(key) + _PROBE_TAIL


def _scan_command(cursor: int, pattern: bytes, count: int) -> bytes:
    return b"*6\r\n$4\r\nSCAN\r\n%s$5\r\nMATCH\r\n%s$5\r\nCOUNT\r\n%s" % (
        _bulk(str(cursor).encode()),
        _bulk(pattern),
        _bulk(str(count).encode()),
    )


def _raw(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


# --------------------------------------------------------------------------------------------
# I/O


@dataclass(slots=True)
class _Candidate:
    key: bytes
    pttl: int | None
    size: int
    head: bytes
    tail: bytes


@dataclass(slots=True)
class _Batch:
    next_cursor: int
    scanned: int
    skipped: int
    candidates: list[_Candidate] = field(default_factory=list)


class _Refused(Exception):
    """The server will not run our script; carries where the scan stood."""

    def __init__(self, position: int, why: str) -> None:
        super().__init__(why)
        self.position = position
        self.why = why


@dataclass(slots=True)
class _Pass:
    """What one scan() call has gathered, and whether it may go on."""

    now: float
    budget: int | None
    batch: int
    deadline: float | None
    started: list[StartedTask] = field(default_factory=list)
    lost: list[LostFailure] = field(default_factory=list)
    prefix_len: int = 0
    result_expires: float | None = None
    failure_expires: float | None = None
    scanned: int = 0
    skipped: int = 0

    def exhausted(self) -> bool:
        if self.budget is not None and self.scanned >= self.budget:
            return True
        return self.deadline is not None and time.monotonic() >= self.deadline

    def count(self) -> int:
        if self.budget is None:
            return self.batch
        return max(1, min(self.batch, self.budget - self.scanned))

    def count_keys(self, batch: _Batch) -> None:
        self.scanned += batch.scanned
        self.skipped += batch.skipped

    def take_records(self, batch: _Batch) -> None:
        for cand in batch.candidates:
            record, bad = interpret_record(
                cand.key[self.prefix_len :].decode("utf-8", "replace"),
                cand.head,
                cand.tail,
                cand.size,
                cand.pttl,
                self.now,
                result_expires=self.result_expires,
                failure_expires=self.failure_expires,
            )
            if bad:
                self.skipped += 1
            elif isinstance(record, StartedTask):
                self.started.append(record)
            elif isinstance(record, LostFailure):
                self.lost.append(record)

    def result(self, cursor: str | None) -> ResultScan:
        return ResultScan(
            started=tuple(self.started),
            lost_failures=tuple(self.lost),
            keys_scanned=self.scanned,
            skipped_values=self.skipped,
            cursor=cursor,
        )


def _parse_script_reply(reply: Any) -> _Batch:
    items: list[Any] = list(reply)
    batch = _Batch(next_cursor=int(items[0]), scanned=int(items[1]), skipped=int(items[2]))
    for i in range(3, len(items), 5):
        batch.candidates.append(
            _Candidate(
                key=bytes(items[i]),
                pttl=int(items[i + 1]),
                size=int(items[i + 2]),
                head=bytes(items[i + 3]),
                tail=bytes(items[i + 4]),
            )
        )
    return batch


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
        self._sha: str | None = None
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
        run = _Pass(
            now=now,
            budget=budget,
            batch=self._batch,
            deadline=None if time_budget_s is None else time.monotonic() + time_budget_s,
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
                return run.result(self._encode(node.name, stopped_at))
        return run.result(None)

    def lookup(self, task_ids: Sequence[str]) -> dict[str, str]:
        """Status of each id that has a result record; ``UNKNOWN`` for records that exist but are
        not readable JSON (pickle, msgpack...). Ids without a record are left out."""
        found: dict[str, str] = {}
        ids = list(dict.fromkeys(task_ids))
        for offset in range(0, len(ids), self._batch):
            chunk = ids[offset : offset + self._batch]
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
                elif _OBJECT_RE.match(reply):
                    unsure.append((tid, key))
                else:
                    found[tid] = "UNKNOWN"
            if unsure:
                pipe = self._client.pipeline(transaction=False)
                for _, key in unsure:
                    pipe.getrange(key, 0, HEAD_BYTES - 1)
                for (tid, _), head in zip(unsure, pipe.execute(), strict=True):
                    if not head:
                        continue
                    status_value = partial_object(head.decode("utf-8", "replace")).get("status")
                    found[tid] = status_value if isinstance(status_value, str) else "UNKNOWN"
        return found

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

    def _scan_node(self, node: _Node, position: int, run: _Pass) -> int | None:
        """Scan one server from ``position``: None when it is done, else the position to resume
        from because the pass ran out of budget."""
        if node.scripted:
            try:
                return self._scan_node_scripted(node, position, run)
            except _Refused as refused:
                log.info(
                    "result scan on %s reads from the client: %s", node.name or "redis", refused.why
                )
                node.scripted = False
                self._scripted[node.name] = False
                position = refused.position
        return self._scan_node_plain(node, position, run)

    def _scan_node_scripted(self, node: _Node, position: int, run: _Pass) -> int | None:
        """The Lua path, with one request always in flight: the next batch is sent as soon as a
        reply gives its cursor, and this batch's records are parsed while the server works."""
        if run.exhausted():
            return position
        if self._sha is None:
            # EVALSHA names a script by the SHA-1 of its text; nothing secret is hashed.
            self._sha = sha1(SCAN_SCRIPT.encode(), usedforsecurity=False).hexdigest()
        pool = node.client.connection_pool
        # The connection API is untyped in redis-py; it is used for send/read only.
        conn: Any = pool.get_connection()
        settled = False
        try:
            args = self._script_args(position, run.count())
            conn.send_command("EVALSHA", self._sha, 0, *args)
            reloads = 0
            while True:
                try:
                    reply = conn.read_response()
                except NoScriptError:
                    # First use on this server, a SCRIPT FLUSH, or a failover: load and resend.
                    # A proxy that spreads requests over several servers would answer NOSCRIPT
                    # forever; two reloads in a row mean the script cannot be relied on here.
                    reloads += 1
                    if reloads > 2:
                        raise _Refused(position, "EVALSHA keeps answering NOSCRIPT") from None
                    try:
                        conn.send_command("SCRIPT", "LOAD", SCAN_SCRIPT)
                        conn.read_response()
                    except ResponseError as exc:
                        raise _Refused(position, str(exc)[:120]) from None
                    conn.send_command("EVALSHA", self._sha, 0, *args)
                    continue
                except NoPermissionError as exc:
                    raise _Refused(position, str(exc)[:120]) from None
                except ResponseError as exc:
                    text = str(exc)
                    if any(marker.lower() in text.lower() for marker in _SCRIPT_REFUSALS):
                        raise _Refused(position, text[:120]) from None
                    raise
                reloads = 0
                batch = _parse_script_reply(reply)
                run.count_keys(batch)
                position = batch.next_cursor
                more = position != 0 and not run.exhausted()
                if more:
                    args = self._script_args(position, run.count())
                    conn.send_command("EVALSHA", self._sha, 0, *args)
                run.take_records(batch)
                if not more:
                    settled = True
                    return None if position == 0 else position
        finally:
            if not settled:
                # A reply may still be on its way: this connection must not be reused.
                conn.disconnect()
            pool.release(conn)

    def _script_args(self, position: int, count: int) -> tuple[Any, ...]:
        return (position, self._pattern, count, PROBE_BYTES, HEAD_BYTES, TAIL_BYTES)

    def _scan_node_plain(self, node: _Node, position: int, run: _Pass) -> int | None:
        """Without scripting: each batch's GETRANGE probes go out in one write together with
        the next SCAN, packed by hand (redis-py's per-command packing and pipeline bookkeeping
        cost three times what the server spends), and replies are classified as they arrive.
        The few candidates are then read through an ordinary pipeline."""
        if run.exhausted():
            return position
        pool = node.client.connection_pool
        conn: Any = pool.get_connection()
        settled = False
        try:
            conn.send_packed_command([_scan_command(position, self._pattern, run.count())])
            while True:
                reply_cursor, reply_keys = conn.read_response()
                keys = [_raw(k) for k in reply_keys]
                following = int(reply_cursor)
                batch = _Batch(next_cursor=following, scanned=len(keys), skipped=0)
                run.count_keys(batch)
                more = following != 0 and not run.exhausted()
                parts = [_probe_command(key) for key in keys]
                if more:
                    parts.append(_scan_command(following, self._pattern, run.count()))
                if parts:
                    conn.send_packed_command([b"".join(parts)])
                wanted: list[bytes] = []
                for key in keys:
                    try:
                        probe = conn.read_response()
                    except ResponseError:  # a key of another type
                        run.skipped += 1
                        continue
                    if not probe:
                        continue
                    status = probe_status(probe)
                    if status in ("STARTED", "FAILURE"):
                        wanted.append(key)
                    elif status is None and not _LONG_STATUS_RE.match(probe):
                        if _OBJECT_RE.match(probe):
                            wanted.append(key)
                        else:
                            run.skipped += 1
                if wanted:
                    batch.candidates.extend(self._read_candidates(node.client, wanted))
                run.take_records(batch)
                position = following
                if not more:
                    settled = True
                    return None if position == 0 else position
        finally:
            if not settled:
                conn.disconnect()
            pool.release(conn)

    @staticmethod
    def _read_candidates(client: redis.Redis, keys: list[bytes]) -> Iterator[_Candidate]:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.pttl(key)
            pipe.strlen(key)
            pipe.getrange(key, 0, HEAD_BYTES - 1)
            pipe.getrange(key, -TAIL_BYTES, -1)
        replies = pipe.execute(raise_on_error=False)
        for i, key in enumerate(keys):
            pttl, size, head, tail = replies[4 * i : 4 * i + 4]
            if any(isinstance(r, Exception) for r in (pttl, size, head, tail)) or not head:
                continue  # gone or retyped since the probe
            yield _Candidate(
                key=key,
                pttl=int(pttl),
                size=int(size),
                head=bytes(head),
                tail=bytes(tail) if int(size) > len(head) else b"",
            )
