"""What a Lambda invocation asks for: a scheduled check, an audit, or a watch. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MODES = ("check", "audit", "watch")
MAX_WATCH_S = 900.0  # a Lambda's own ceiling


class InvocationError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Invocation:
    mode: str
    duration_s: float = 0.0
    interval_s: float | None = None
    scheduled_time: str | None = None


def parse_invocation(event: Any) -> Invocation:
    """Accepts an EventBridge "Scheduled Event", an EventBridge Scheduler input such as
    ``{"mode": "check", "scheduled_time": "..."}``, ``{"mode": "audit"}`` or
    ``{"mode": "watch", "duration_s": 50, "interval_s": 5}``; an empty event is a check."""
    if event is None or event == {}:
        return Invocation("check")
    if not isinstance(event, Mapping):
        raise InvocationError(f"the event must be a JSON object, not {type(event).__name__}")
    if event.get("detail-type") == "Scheduled Event":
        from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent

        return Invocation("check", scheduled_time=EventBridgeEvent(dict(event)).time)
    mode = event.get("mode", "check")
    if mode not in MODES:
        raise InvocationError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    duration = _seconds(event, "duration_s", 50.0 if mode == "watch" else 0.0)
    if duration > MAX_WATCH_S:
        raise InvocationError(
            f"duration_s {duration} is longer than a Lambda can run ({MAX_WATCH_S})"
        )
    interval = _seconds(event, "interval_s", 0.0) or None
    scheduled = event.get("scheduled_time")
    return Invocation(mode, duration, interval, str(scheduled) if scheduled else None)


def _seconds(event: Mapping[str, Any], key: str, default: float) -> float:
    raw = event.get(key, default)
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise InvocationError(f"{key} must be a number of seconds")
    try:
        value = float(raw)
    except ValueError:
        raise InvocationError(f"{key} must be a number of seconds, not {raw!r}") from None
    if value < 0:
        raise InvocationError(f"{key} must not be negative")
    return value
