"""What every exit-evidence parser shares: the result type, the bounds, and small readers of
untrusted fields (strings, numbers, times, host names) that never raise."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from oomcheck.model import ExitEvidence, MemorySample

# CloudWatch accepts events up to 256 KiB (1 MiB since 2025); every format we read is a few KiB.
# Anything far larger is not ours, or is hostile, and is not worth parsing inside a 1-minute run.
MAX_MESSAGE_CHARS = 64 * 1024
MAX_TEXT_CHARS = 300
MAX_PID = 4_194_304  # the largest pid_max Linux allows
# A parsed time further than this from the log event's own timestamp is not trusted.
MAX_SKEW_S = 86_400.0
EXIT_SIGKILL = 137
EXIT_SIGTERM = 143


class Format(StrEnum):
    ECS = "ecs"
    EKS = "eks"
    KERNEL = "kernel"
    OTHER = "other"  # not a format we read (or one of ours that says nothing about a death)
    MALFORMED = "malformed"  # too long, broken JSON, nested too deep, or unusable


@dataclass(frozen=True, slots=True)
class Parsed:
    """What one log message yielded. ``skipped`` counts unusable parts of it (0 or more);
    ``memory`` holds the container memory sample a Container Insights record carries."""

    format: Format
    evidence: tuple[ExitEvidence, ...] = ()
    skipped: int = 0
    memory: tuple[MemorySample, ...] = ()


OTHER = Parsed(Format.OTHER)
MALFORMED = Parsed(Format.MALFORMED, skipped=1)

_HOST_OK = re.compile(r"[a-z0-9][a-z0-9._:-]{0,252}")
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")


def short_str(value: object, limit: int) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip()
    if not value or len(value) > limit:
        return None
    return value


def clean_text(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """Printable, single-line, bounded: this text ends up in alert subjects and bodies."""
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text[: limit * 2])
    cleaned = " ".join(cleaned.split())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def host_name(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    host = value.strip().lower().rstrip(".")
    return host if _HOST_OK.fullmatch(host) else None


def id_host(host: str) -> str:
    """The host as an id part: its first label, so that "ip-10-0-1-5" and
    "ip-10-0-1-5.ec2.internal" give the same id; IP addresses stay whole."""
    return host if _IPV4.fullmatch(host) else host.split(".", 1)[0]


def int_or_none(value: object, *, low: int, high: int) -> int | None:
    number: int | None = None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    # Integral floats and digit strings come from JSON encoders that are loose about numbers.
    elif (isinstance(value, float) and value.is_integer()) or (
        isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 20
    ):
        number = int(value)
    if number is None or not low <= number <= high:
        return None
    return number


def iso_time(value: object) -> float | None:
    if not isinstance(value, str) or len(value) > 40:
        return None
    text = value.strip()
    # fromisoformat takes at most 6 fractional digits; journald and rsyslog may give 9.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.timestamp()
    except (OverflowError, OSError, ValueError):
        return None


def bounded_number(value: object, high: float) -> float | None:
    """A finite number in [0, high] (JSON numbers, or digit strings from loose encoders)."""
    if isinstance(value, bool):
        return None
    number: float | None = None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str) and 0 < len(value) <= 32:
        try:
            number = float(value)
        except ValueError:
            return None
    if number is None or not math.isfinite(number) or not 0 <= number <= high:
        return None
    return number


def epoch_ms(value: object) -> float | None:
    millis = int_or_none(value, low=0, high=2**53)
    return millis / 1000.0 if millis is not None else None


def first_time(*values: object) -> float | None:
    for value in values:
        at = iso_time(value)
        if at is not None:
            return at
    return None


def bounded_time(parsed: float | None, timestamp: float | None) -> float | None:
    """The message's own time unless it is missing or far from the log event's timestamp."""
    if timestamp is not None and not math.isfinite(timestamp):
        timestamp = None
    if parsed is None or not math.isfinite(parsed):
        return timestamp
    if timestamp is not None and abs(parsed - timestamp) > MAX_SKEW_S:
        return timestamp
    return parsed
