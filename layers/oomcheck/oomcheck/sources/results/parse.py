"""Celery result records, parsed from the bytes the scan reads: pure functions, no I/O.

A record is read as its first ``PROBE_BYTES`` (the status, where Celery writes it), then, when it
is worth parsing, as a head of at most ``HEAD_BYTES`` and a tail of ``TAIL_BYTES`` (``worker``
sits after the possibly huge args/kwargs). Nothing is ever unpickled or evaluated, and JSON is
decoded through :mod:`oomcheck.safejson`, so a value nested deeper than its limit is skipped like
any other unreadable one instead of raising out of the scan.
"""

from __future__ import annotations

import json
import re
from typing import Any

from oomcheck.model import Cause, LostFailure, StartedTask
from oomcheck.safejson import depth_cut, loads, raw_decode, too_deep

__all__ = [
    "HEAD_BYTES",
    "KEY_STEM",
    "LOOKUP_PROBE_BYTES",
    "PROBE_BYTES",
    "TAIL_BYTES",
    "interpret_record",
    "lost_reason",
    "partial_object",
    "probe_status",
    "written_at",
]

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

_STATUS_RE = re.compile(rb'\A\s*\{\s*"status"\s*:\s*"([^"]*)"')
OBJECT_START = re.compile(rb"\A\s*\{")
# A status string that runs past the probe is longer than any state this module looks for.
LONG_STATUS = re.compile(rb'\A\s*\{\s*"status"\s*:\s*"[^"]*\Z')
# Signals and exit codes are small: a run of digits long enough to overflow int() is not one.
_SIGNAL_RE = re.compile(r"\bsignal (\d{1,9})\b")
_EXITCODE_RE = re.compile(r"\bexitcode (-?\d{1,9})\b")
_WORKER_RE = re.compile(rb'"worker"\s*:\s*')
_WS = " \t\r\n"
_DECODER = json.JSONDecoder()


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


def lost_cause(signal: int | None) -> Cause:
    """What a WorkerLostError's signal says of the death: SIGKILL (the OOM killer's signal, but
    also anyone's kill -9) is a kill of unknown origin; anything else does not say."""
    return Cause.KILLED if signal == 9 else Cause.UNKNOWN


def lost_reason(message: str) -> tuple[int | None, int | None]:
    """(signal, exitcode) from billiard's 'Worker exited prematurely: ...' text."""
    sig = _SIGNAL_RE.search(message)
    code = _EXITCODE_RE.search(message)
    return (int(sig.group(1)) if sig else None, int(code.group(1)) if code else None)


def partial_object(text: str) -> dict[str, Any]:
    """The members of a JSON object that survive truncation of its text, in order.

    Parsing stops at the first member whose value is cut off, nested deeper than
    ``safejson.MAX_DEPTH``, or malformed; what came before is returned. Nothing but JSON is ever
    decoded.
    """
    # Cut where the nesting passes the limit: the member there is then cut off like any other.
    return _members(text[: depth_cut(text)] if too_deep(text) else text)


def _members(text: str) -> dict[str, Any]:
    """partial_object of a text already known not to nest too deep."""
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
        value, _ = raw_decode(text)
    except ValueError:
        return None
    return value if isinstance(value, str) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _record_object(head: bytes, size: int) -> tuple[dict[str, Any] | None, bool]:
    """(the record's object or what survives of it, complete); None when it is not readable as
    a JSON object: malformed, not an object, invalid UTF-8, or nested too deep."""
    if size <= len(head):
        try:
            obj = loads(head)
        except ValueError:  # includes UnicodeDecodeError and TooDeep
            return None, True
        return (obj, True) if isinstance(obj, dict) else (None, True)
    text = head.decode("utf-8", "replace")
    # A head that nests too deep is hostile even where the fields before the deep part parse.
    if too_deep(text):
        return None, False
    return _members(text), False


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
    when the value could not be read as a Celery JSON record (not JSON, malformed, nested
    deeper than ``safejson.MAX_DEPTH``, or so long that its status/result did not fit in the
    head).
    """
    obj, complete = _record_object(head, size)
    status = obj.get("status") if obj is not None else None
    if obj is None or not isinstance(status, str):
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
    message = _exc_message(meta.get("exc_message"))
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
        cause=lost_cause(signal),
    ), False


def _exc_message(raw: Any) -> str:
    """Celery stores an exception's args as a list; older writers stored a string."""
    if isinstance(raw, list | tuple):
        return " ".join(str(part) for part in raw)
    return "" if raw is None else str(raw)
