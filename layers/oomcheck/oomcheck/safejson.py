"""JSON decoding for values written by others, with a bound on nesting.

Python's json decoder recurses once per ``[`` or ``{``: a value nested a few thousand levels deep
(100 kB of ``[``) raises RecursionError, which is not a ValueError and used to escape the parsers
and fail a whole source for one hostile value. Here the nesting is measured first by a linear scan
of the brackets outside strings, which stops as soon as the limit is passed, so rejecting a hostile
value costs a few dozen regex steps whatever its size. Nothing but JSON is ever decoded.

Every rejection is a ValueError (as json's own are), so callers count it as one skipped value;
they also bound the length of what they read, so no value is ever decoded whole when huge.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["MAX_DEPTH", "TooDeep", "loads", "raw_decode", "too_deep"]

# Celery records, kombu messages and the CloudWatch events we read nest at most about 6 levels;
# task arguments may nest more, but past this they are hostile or not ours.
MAX_DEPTH = 64

# A whole string (its closing quote optional: a value cut off inside a string), or one bracket.
# The string alternative is the unrolled form of "(?:[^"\\]|\\.)*", linear on long strings.
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]', re.DOTALL)
_WS = " \t\r\n"
_DECODER = json.JSONDecoder()


class TooDeep(ValueError):
    """The value nests arrays/objects deeper than the limit."""


def too_deep(text: str, start: int = 0, limit: int = MAX_DEPTH) -> bool:
    """True when the JSON value at ``text[start:]`` nests deeper than ``limit``.

    Only the value's own extent is scanned (up to the bracket that closes it, or the end of a
    value cut off by truncation); a scalar never nests. Where the text is not valid JSON the
    decoder fails at or before the point where the two disagree, so it never gets deeper than
    what was measured here.
    """
    length = len(text)
    while start < length and text[start] in _WS:
        start += 1
    if start >= length or text[start] not in "[{":
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


def loads(raw: str | bytes | bytearray, *, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` for untrusted text: TooDeep, or another ValueError (malformed, invalid
    UTF-8), instead of a value that nests deeper than ``max_depth``. Callers cap the length: a
    value that long is never read whole."""
    if isinstance(raw, bytes | bytearray):
        # As json.loads does for bytes (UTF-8, or UTF-16/32 told by their zero bytes).
        text = bytes(raw).decode(json.detect_encoding(raw), "surrogatepass")
    else:
        text = raw
    if too_deep(text, 0, max_depth):
        raise TooDeep(f"nested deeper than {max_depth}")
    return json.loads(text)


def raw_decode(text: str, index: int = 0, *, max_depth: int = MAX_DEPTH) -> tuple[Any, int]:
    """``JSONDecoder.raw_decode`` of the value at ``text[index:]``, refusing one nested deeper
    than ``max_depth`` with TooDeep; returns (value, index after it)."""
    if too_deep(text, index, max_depth):
        raise TooDeep(f"nested deeper than {max_depth}")
    return _DECODER.raw_decode(text, index)
