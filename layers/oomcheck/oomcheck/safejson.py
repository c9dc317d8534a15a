"""JSON decoding for values written by others, with a bound on nesting.

Python's json decoder recurses once per ``[`` or ``{``: a value nested a few thousand levels deep
(100 kB of ``[``) raises RecursionError, which is not a ValueError and used to escape the parsers
and fail a whole source for one hostile value. Here the nesting is measured first by a linear scan
of the brackets outside strings that stops at the first one past the limit (so a hostile value
costs a few dozen steps whatever its size), and a value with fewer brackets than the limit, nearly
every one, skips even that. Nothing but JSON is ever decoded.

Every rejection is a ValueError (as json's own are), so callers count it as one skipped value;
they also bound the length of what they read, so no value is ever decoded whole when huge.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["MAX_DEPTH", "TooDeep", "depth_cut", "loads", "raw_decode", "too_deep"]

# Celery records, kombu messages and the CloudWatch events we read nest at most about 6 levels;
# task arguments may nest more, but past this they are hostile or not ours.
MAX_DEPTH = 64

# A whole string (its closing quote optional: a value cut off inside a string), or one bracket.
# The string alternative is the unrolled form of "(?:[^"\\]|\\.)*", linear on long strings.
_STRING = r'"[^"\\]*(?:\\.[^"\\]*)*"?'
_TOKEN = re.compile(_STRING + r"|[\[\]{}]", re.DOTALL)
_WS = " \t\r\n"
_DECODER = json.JSONDecoder()


class TooDeep(ValueError):
    """The value nests arrays/objects deeper than the limit."""


def too_deep(text: str, start: int = 0, limit: int = MAX_DEPTH) -> bool:
    """True when the JSON value at ``text[start:]`` nests deeper than ``limit``.

    Only the value's own extent counts (up to the bracket that closes it, or the end of a value
    cut off by truncation); a scalar never nests. Where the text is not valid JSON the decoder
    fails at or before the point where the two disagree, so it never gets deeper than what was
    measured here. The scan stops at the first bracket past the limit, so a hostile value costs
    ``limit`` steps whatever its size.
    """
    start = _value_start(text, start, limit)
    if start < 0:
        return False
    depth = 0
    for token in _TOKEN.finditer(text, start):
        char = text[token.start()]
        if char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
            if depth <= 0:
                return False
    return False


def depth_cut(text: str, limit: int = MAX_DEPTH) -> int:
    """The index of the first bracket of ``text`` that nests deeper than ``limit`` (the length
    of ``text`` when none does): ``text[:depth_cut(text)]`` decodes without deep recursion."""
    if _value_start(text, 0, limit) < 0:
        return len(text)
    depth = 0
    for token in _TOKEN.finditer(text):
        char = text[token.start()]
        if char in "[{":
            depth += 1
            if depth > limit:
                return token.start()
        elif char in "]}":
            depth -= 1
    return len(text)


def _value_start(text: str, start: int, limit: int) -> int:
    """Where the array or object to measure begins; -1 when it cannot nest past ``limit``."""
    if _openings(text, start) <= limit:
        return -1
    length = len(text)
    while start < length and text[start] in _WS:
        start += 1
    return start if start < length and text[start] in "[{" else -1


def loads(raw: str | bytes | bytearray, *, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` for untrusted text: TooDeep, or another ValueError (malformed, invalid
    UTF-8), instead of a value that nests deeper than ``max_depth``. Callers cap the length: a
    value that long is never read whole."""
    if _openings(raw, 0) <= max_depth:
        return json.loads(raw)
    if isinstance(raw, bytes | bytearray):
        # As json.loads does for bytes (UTF-8, or UTF-16/32 told by their zero bytes).
        text = bytes(raw).decode(json.detect_encoding(raw), "surrogatepass")
    else:
        text = raw
    if too_deep(text, 0, max_depth):
        raise TooDeep(f"nested deeper than {max_depth}")
    return json.loads(text)


def _openings(text: str | bytes | bytearray, start: int) -> int:
    """How many brackets open from ``start`` on, strings included: a bound on the nesting that
    str.count finds at C speed, so ordinary values never pay for the token scan. (In UTF-16/32
    bytes other characters may hold the byte of a bracket: that only over-counts.)"""
    if isinstance(text, str):
        return text.count("[", start) + text.count("{", start)
    return text.count(b"[", start) + text.count(b"{", start)


def raw_decode(text: str, index: int = 0, *, max_depth: int = MAX_DEPTH) -> tuple[Any, int]:
    """``JSONDecoder.raw_decode`` of the value at ``text[index:]``, refusing one nested deeper
    than ``max_depth`` with TooDeep; returns (value, index after it)."""
    if too_deep(text, index, max_depth):
        raise TooDeep(f"nested deeper than {max_depth}")
    return _DECODER.raw_decode(text, index)
