"""The subset of CloudWatch Logs filter-pattern syntax that oomcheck sends, evaluated here.

moto accepts every filter pattern and matches everything with it, so a pattern that would drop
the records we need on AWS passes every moto test. The tests therefore run each pattern we send
through :func:`matches` against the documented sample records (events/): a pattern AWS would
evaluate differently from this module is a pattern outside the subset, and is refused with a
ValueError rather than guessed at.

Supported, with CloudWatch's meaning:
- text patterns: ``"a" "b"`` (every term appears), ``?"a" ?"b"`` (any term appears); terms are
  case-sensitive; mixing the two forms is refused;
- JSON patterns: ``{ $.a.b = "x" }``, ``!=``, and ``= > < >= <= !=`` against numbers, combined
  with ``&&``, ``||`` and parentheses. A selector that names a missing field, or a value of the
  wrong type for its comparison, does not match. ``*`` wildcards and arrays are refused.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["matches"]

_JSON_TOKEN = re.compile(
    r"\s*(?:(?P<sel>\$(?:\.[A-Za-z_][A-Za-z0-9_]*)+)|(?P<op>&&|\|\||!=|>=|<=|=|>|<)"
    r'|(?P<str>"(?:[^"\\]|\\.)*")|(?P<num>-?\d+(?:\.\d+)?)|(?P<par>[()]))'
)
_TEXT_TERM = re.compile(r'\s*(?P<opt>\?)?(?:"(?P<quoted>[^"]*)"|(?P<bare>[A-Za-z0-9_.:-]+))')
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
    ">=": operator.ge,
    "<=": operator.le,
}


def matches(pattern: str, message: str) -> bool:
    """Whether CloudWatch would deliver ``message`` under ``pattern`` (see the module doc)."""
    text = pattern.strip()
    if text.startswith("{"):
        if not text.endswith("}"):
            raise ValueError(f"unsupported JSON pattern: {pattern!r}")
        try:
            record = json.loads(message)
        except ValueError:
            return False  # a JSON pattern never matches a non-JSON event
        return _JsonPattern(text[1:-1]).evaluate(record)
    return _text_matches(text, message)


def _text_matches(pattern: str, message: str) -> bool:
    optional: list[str] = []
    required: list[str] = []
    position = 0
    while position < len(pattern):
        term = _TEXT_TERM.match(pattern, position)
        if term is None or term.end() == position:
            raise ValueError(f"unsupported text pattern: {pattern!r}")
        word = term.group("quoted") if term.group("quoted") is not None else term.group("bare")
        (optional if term.group("opt") else required).append(word)
        position = term.end()
        while position < len(pattern) and pattern[position].isspace():
            position += 1
    if optional and required:
        raise ValueError(f"mixed ?term and term patterns are not supported: {pattern!r}")
    if optional:
        return any(word in message for word in optional)
    return all(word in message for word in required)


class _JsonPattern:
    def __init__(self, body: str) -> None:
        self._tokens = list(self._tokenize(body))
        self._at = 0

    @staticmethod
    def _tokenize(body: str) -> Iterator[tuple[str, str]]:
        position = 0
        while body[position:].strip():
            token = _JSON_TOKEN.match(body, position)
            if token is None or token.lastgroup is None:
                raise ValueError(f"unsupported JSON pattern near {body[position:][:30]!r}")
            yield token.lastgroup, token.group(token.lastgroup)
            position = token.end()

    def evaluate(self, record: Any) -> bool:
        self._at = 0
        result = self._any(record)
        if self._at != len(self._tokens):
            raise ValueError(f"unsupported JSON pattern: trailing {self._tokens[self._at :]}")
        return result

    def _peek(self) -> tuple[str, str] | None:
        return self._tokens[self._at] if self._at < len(self._tokens) else None

    def _take(self, kind: str) -> str:
        token = self._peek()
        if token is None or token[0] != kind:
            raise ValueError(f"unsupported JSON pattern: expected {kind}, found {token}")
        self._at += 1
        return token[1]

    def _any(self, record: Any) -> bool:
        result = self._all(record)
        while self._peek() == ("op", "||"):
            self._at += 1
            right = self._all(record)  # evaluated whatever `result` is: it moves the cursor
            result = result or right
        return result

    def _all(self, record: Any) -> bool:
        result = self._atom(record)
        while self._peek() == ("op", "&&"):
            self._at += 1
            right = self._atom(record)
            result = result and right
        return result

    def _atom(self, record: Any) -> bool:
        if self._peek() == ("par", "("):
            self._at += 1
            result = self._any(record)
            self._take("par")
            return result
        selector = self._take("sel")
        op = self._take("op")
        if op not in _COMPARE:
            raise ValueError(f"unsupported JSON pattern: {op} after {selector}")
        token = self._peek()
        if token is None or token[0] not in ("str", "num"):
            raise ValueError(f"unsupported JSON pattern: no value after {selector} {op}")
        self._at += 1
        return _compare(_select(record, selector), op, token)


def _select(record: Any, selector: str) -> Any:
    value = record
    for name in selector.split(".")[1:]:
        if not isinstance(value, dict) or name not in value:
            return None
        value = value[name]
    return value


def _compare(value: Any, op: str, token: tuple[str, str]) -> bool:
    kind, raw = token
    if kind == "str":
        wanted = json.loads(raw)
        if "*" in wanted:
            raise ValueError("wildcards in JSON pattern strings are not supported")
        if op not in ("=", "!="):
            raise ValueError(f"unsupported JSON pattern: {op} with a string")
        return isinstance(value, str) and _COMPARE[op](value, wanted)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return _COMPARE[op](value, float(raw))
