"""A silence, its matchers, and how they are read from a command line or a payload. Pure.

Times are POSIX seconds (UTC). Every refusal is a one-line SilenceError naming what is wrong.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import Any

from oomcheck.model import Cause, Kind, Severity

# The fields an alert carries that a silence may match on (globs, case-sensitive):
# task is a task name (app.tasks.report), queue a queue a worker consumed or that was orphaned.
MATCH_KEYS = ("kind", "severity", "worker", "queue", "task", "cause")
# Keys whose values are a closed set: a glob that matches none of them can never match.
_CLOSED: Mapping[str, tuple[str, ...]] = {
    "kind": tuple(k.value for k in Kind),
    "severity": tuple(s.value for s in Severity),
    "cause": tuple(c.value for c in Cause),
}
MAX_MATCHERS = 20
MAX_COMMENT = 500
MAX_SILENCE_S = 90 * 86400.0  # a silence is for planned work, not a way to switch alerts off
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")


class SilenceError(ValueError):
    """A silence refused, or one that does not exist: one line."""


@dataclass(frozen=True, slots=True)
class Matcher:
    key: str  # one of MATCH_KEYS
    glob: str

    def __str__(self) -> str:
        return f"{self.key}={self.glob}"

    def matches(self, values: Sequence[str]) -> bool:
        return any(fnmatchcase(v, self.glob) for v in values)


@dataclass(frozen=True, slots=True)
class Silence:
    id: str
    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    comment: str
    created_by: str | None
    created_at: float

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "matchers": [{"key": m.key, "glob": m.glob} for m in self.matchers],
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "comment": self.comment,
            "created_by": self.created_by,
            "created_at": self.created_at,
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Silence:
        return cls(
            id=str(value["id"]),
            matchers=tuple(Matcher(str(m["key"]), str(m["glob"])) for m in value["matchers"]),
            starts_at=float(value["starts_at"]),
            ends_at=float(value["ends_at"]),
            comment=str(value["comment"]),
            created_by=value.get("created_by"),
            created_at=float(value["created_at"]),
        )


def parse_matcher(text: str) -> Matcher:
    key, eq, glob = str(text).partition("=")
    key, glob = key.strip(), glob.strip()
    if not eq or not key or not glob:
        raise SilenceError(f"--match {_show(text)}: use KEY=GLOB, e.g. worker=celery@batch-*")
    if key not in MATCH_KEYS:
        raise SilenceError(f"--match {_show(text)}: {key!r} is not one of {', '.join(MATCH_KEYS)}")
    closed = _CLOSED.get(key)
    if closed is not None and not any(fnmatchcase(v, glob) for v in closed):
        raise SilenceError(
            f"--match {_show(text)} matches no {key} (they are: {', '.join(closed)})"
        )
    return Matcher(key, glob)


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``2h``, ``1d``, ``1w`` or plain seconds."""
    found = _DURATION.match(str(text))
    value = float(found.group(1)) * _UNITS[found.group(2) or "s"] if found else math.nan
    if not math.isfinite(value) or value <= 0:
        raise SilenceError(f"--for {_show(text)}: use a duration such as 90m, 2h or 1d")
    return value


def parse_time(text: str) -> float:
    """ISO-8601; without a zone, UTC."""
    try:
        when = datetime.fromisoformat(str(text).strip())
    except ValueError:
        raise SilenceError(
            f"--until {_show(text)}: use an ISO-8601 time such as 2026-12-07T06:00Z"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def new_silence(
    matches: Sequence[str],
    *,
    comment: str | None,
    now: float,
    ident: str,
    for_: str | None = None,
    until: str | None = None,
    by: str | None = None,
) -> Silence:
    """A silence from its command-line (or payload) parts; SilenceError, one line, when it lacks
    a matcher, a comment or an end, or when an end is in the past or too far away."""
    if not matches:
        raise SilenceError("a silence needs at least one --match KEY=GLOB")
    if len(matches) > MAX_MATCHERS:
        raise SilenceError(f"a silence takes at most {MAX_MATCHERS} --match")
    matchers = tuple(parse_matcher(m) for m in matches)
    words = " ".join(str(comment or "").split())
    if not words:
        raise SilenceError("a silence needs --comment: why, for whoever is paged next")
    if (for_ is None) == (until is None):
        raise SilenceError("a silence needs an end: --for DURATION or --until TIME (one of them)")
    ends_at = now + parse_duration(for_) if for_ is not None else parse_time(str(until))
    if ends_at <= now:
        raise SilenceError(f"--until {_show(until)} is already past")
    if ends_at - now > MAX_SILENCE_S:
        raise SilenceError(f"a silence may last at most {MAX_SILENCE_S / 86400:.0f} days")
    who = " ".join(str(by).split())[:100] if by else None
    return Silence(ident, matchers, now, ends_at, words[:MAX_COMMENT], who or None, now)


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
