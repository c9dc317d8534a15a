"""The two ways one Redis server's result keys are read: the server-side script (``probe.lua``)
and, where scripting is refused, the same probes pipelined from the client.

Both keep one request in flight: the next batch goes out as soon as a reply names its cursor, and
this batch's records are parsed while the server works. Both stop when the pass's key or time
budget runs out and return the position to resume from.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from hashlib import sha1
from importlib.resources import files
from typing import Any

import redis
from redis.exceptions import NoPermissionError, NoScriptError, ResponseError

from oomcheck.model import LostFailure, StartedTask
from oomcheck.sources.results.parse import (
    HEAD_BYTES,
    LONG_STATUS,
    OBJECT_START,
    PROBE_BYTES,
    TAIL_BYTES,
    interpret_record,
    probe_status,
)

__all__ = ["SCAN_SCRIPT", "SCAN_SCRIPT_SHA", "Refused", "ScanPass", "read_plain", "read_scripted"]

SCAN_SCRIPT = files("oomcheck.sources.results").joinpath("probe.lua").read_text(encoding="utf-8")
# EVALSHA names a script by the SHA-1 of its text; nothing secret is hashed.
SCAN_SCRIPT_SHA = sha1(SCAN_SCRIPT.encode(), usedforsecurity=False).hexdigest()

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


class Refused(Exception):
    """The server will not run our script; carries where the scan stood."""

    def __init__(self, position: int, why: str) -> None:
        super().__init__(why)
        self.position = position
        self.why = why


@dataclass(slots=True)
class ScanPass:
    """What one scan() call has gathered, and whether it may go on."""

    now: float
    budget: int | None
    batch: int
    deadline: float | None
    pattern: bytes
    prefix_len: int
    result_expires: float | None = None
    failure_expires: float | None = None
    started: list[StartedTask] = field(default_factory=list)
    lost: list[LostFailure] = field(default_factory=list)
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


# -- the script -----------------------------------------------------------------------------


@dataclass
class _Borrowed:
    # The connection API is untyped in redis-py; it is used for send/read only.
    conn: Any
    settled: bool = False  # every reply sent for has been read


@contextlib.contextmanager
def _borrowed(client: redis.Redis) -> Iterator[_Borrowed]:
    """A pooled connection for hand-pipelined commands. Unless the caller marks it settled, it
    is disconnected before it goes back: a reply may still be on its way, and the next user
    would read it as its own."""
    pool = client.connection_pool
    borrowed = _Borrowed(pool.get_connection())
    try:
        yield borrowed
    finally:
        if not borrowed.settled:
            borrowed.conn.disconnect()
        pool.release(borrowed.conn)


def read_scripted(client: redis.Redis, position: int, run: ScanPass) -> int | None:
    """Scan one server from ``position`` with the script: None when it is done, else the
    position to resume from. Raises Refused when the server will not run it."""
    if run.exhausted():
        return position
    with _borrowed(client) as borrowed:
        conn = borrowed.conn
        conn.send_command("EVALSHA", SCAN_SCRIPT_SHA, 0, *_script_args(position, run))
        reloads = 0
        while True:
            reply, reloads = _script_reply(conn, position, run, reloads)
            if reply is None:
                continue
            batch = _parse_script_reply(reply)
            run.count_keys(batch)
            position = batch.next_cursor
            more = position != 0 and not run.exhausted()
            if more:
                conn.send_command("EVALSHA", SCAN_SCRIPT_SHA, 0, *_script_args(position, run))
            run.take_records(batch)
            if not more:
                borrowed.settled = True
                return None if position == 0 else position


def _script_reply(conn: Any, position: int, run: ScanPass, reloads: int) -> tuple[Any, int]:
    """(reply, reloads so far): reply None when the script had to be (re)loaded and resent."""
    try:
        return conn.read_response(), 0
    except NoScriptError:
        # First use on this server, a SCRIPT FLUSH, or a failover: load and resend. A proxy
        # that spreads requests over several servers would answer NOSCRIPT forever; two reloads
        # in a row mean the script cannot be relied on here.
        if reloads >= 2:
            raise Refused(position, "EVALSHA keeps answering NOSCRIPT") from None
        try:
            conn.send_command("SCRIPT", "LOAD", SCAN_SCRIPT)
            conn.read_response()
        except ResponseError as exc:
            raise Refused(position, str(exc)[:120]) from None
        conn.send_command("EVALSHA", SCAN_SCRIPT_SHA, 0, *_script_args(position, run))
        return None, reloads + 1
    except NoPermissionError as exc:
        raise Refused(position, str(exc)[:120]) from None
    except ResponseError as exc:
        text = str(exc)
        if any(marker.lower() in text.lower() for marker in _SCRIPT_REFUSALS):
            raise Refused(position, text[:120]) from None
        raise


def _script_args(position: int, run: ScanPass) -> tuple[Any, ...]:
    return (position, run.pattern, run.count(), PROBE_BYTES, HEAD_BYTES, TAIL_BYTES)


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


# -- the pipelined fallback ---------------------------------------------------------------------


def read_plain(client: redis.Redis, position: int, run: ScanPass) -> int | None:
    """Scan one server from ``position`` without scripting: each batch's GETRANGE probes go out
    in one write together with the next SCAN, packed by hand (redis-py's per-command packing and
    pipeline bookkeeping cost three times what the server spends), and replies are classified as
    they arrive. The few candidates are then read through an ordinary pipeline."""
    if run.exhausted():
        return position
    with _borrowed(client) as borrowed:
        conn = borrowed.conn
        conn.send_packed_command([_scan_command(position, run.pattern, run.count())])
        while True:
            reply_cursor, reply_keys = conn.read_response()
            keys = [_raw(k) for k in reply_keys]
            following = int(reply_cursor)
            batch = _Batch(next_cursor=following, scanned=len(keys), skipped=0)
            run.count_keys(batch)
            more = following != 0 and not run.exhausted()
            parts = [_probe_command(key) for key in keys]
            if more:
                parts.append(_scan_command(following, run.pattern, run.count()))
            if parts:
                conn.send_packed_command([b"".join(parts)])
            wanted = _read_probes(conn, keys, run)
            if wanted:
                batch.candidates.extend(_read_candidates(client, wanted))
            run.take_records(batch)
            position = following
            if not more:
                borrowed.settled = True
                return None if position == 0 else position


def _read_probes(conn: Any, keys: list[bytes], run: ScanPass) -> list[bytes]:
    """The keys whose probe (already sent) says they are worth reading; the rest that are not
    Celery JSON are counted as skipped."""
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
        elif status is None and not LONG_STATUS.match(probe):
            if OBJECT_START.match(probe):
                wanted.append(key)
            else:
                run.skipped += 1
    return wanted


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
