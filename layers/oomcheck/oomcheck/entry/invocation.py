"""What a Lambda invocation asks for: a scheduled check, an audit, a watch, or a check started
by the events that announce a death (oomcheck.entry.arrivals). Pure. The event is read once,
here: the handler dispatches on the ``Invocation`` and never looks at the event again.

Events come from schedules people edit by hand and from ``aws lambda invoke``: every field is
checked here, and a bad one is a one-line InvocationError naming it (a NaN interval would
otherwise make the watch loop spin until the Lambda is killed).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from oomcheck.config.parsers import span
from oomcheck.entry.arrivals import Arrival, Shape, parse_arrival
from oomcheck.model import Mode

MODES = tuple(m.value for m in Mode)
MAX_WATCH_S = 900.0  # a Lambda's own ceiling
MIN_INTERVAL_S = 0.1


class InvocationError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Invocation:
    mode: Mode
    duration_s: float = 0.0
    interval_s: float | None = None
    scheduled_time: str | None = None
    # a check started by arriving events: what they said (oomcheck.entry.arrivals)
    arrival: Arrival | None = None
    # a silence request instead of a run (oomcheck.silences.commands.from_payload)
    silence: Mapping[str, Any] | None = None
    # an audit's window of the history by task type (``"since": "7d"``); None: the default
    since_s: float | None = None

    @property
    def batch(self) -> tuple[str, ...] | None:
        """The SQS message ids a partial batch response may hand back (the records that were
        read); None when the invocation is not an SQS batch and returns the report instead."""
        if self.arrival is None or self.arrival.shape is not Shape.SQS:
            return None
        return self.arrival.items


def parse_invocation(event: Any, *, containers: Sequence[str] = ()) -> Invocation:
    """Accepts an EventBridge "Scheduled Event", an EventBridge Scheduler input such as
    ``{"mode": "check", "scheduled_time": "..."}``, ``{"mode": "audit"}`` or
    ``{"mode": "watch", "duration_s": 50, "interval_s": 5}``; an empty event is a check. An
    audit takes ``"since"`` (``"7d"``, ``"24h"``, seconds): the window of its history by task type.
    ``interval_s`` absent or null means the configured OOMCHECK_WATCH_INTERVAL.
    An SQS batch, an "ECS Task State Change" event or a CloudWatch Logs subscription payload
    is a check with the events as evidence (``arrival``), read with the ``containers`` patterns
    (glob patterns of the container names that count; empty: all)."""
    if event is None or event == {}:
        return Invocation(Mode.CHECK)
    if not isinstance(event, Mapping):
        raise InvocationError(f"the event must be a JSON object, not {type(event).__name__}")
    arrival = parse_arrival(event, containers=containers)
    if arrival is not None:
        return Invocation(Mode.CHECK, arrival=arrival)
    if "silence" in event:
        request = event["silence"]
        if not isinstance(request, Mapping):
            example = '{"action": "list"}'
            raise InvocationError(
                f'"silence" must be a JSON object such as {example}, not {_show(request)}'
            )
        return Invocation(Mode.CHECK, silence=dict(request))
    if event.get("detail-type") == "Scheduled Event":
        return Invocation(Mode.CHECK, scheduled_time=_time(event, "time", required=True))
    mode = event.get("mode", "check")
    if not isinstance(mode, str) or mode not in MODES:
        raise InvocationError(f"unknown mode {_show(mode)}: use one of {', '.join(MODES)}")
    duration = _seconds(event, "duration_s", 50.0 if mode == "watch" else 0.0)
    if duration > MAX_WATCH_S:
        raise InvocationError(
            f"duration_s {duration:g} is longer than a Lambda can run ({MAX_WATCH_S:g})"
        )
    interval = None if event.get("interval_s") is None else _seconds(event, "interval_s", 0.0)
    if interval is not None and not MIN_INTERVAL_S <= interval <= MAX_WATCH_S:
        raise InvocationError(
            f"interval_s must be from {MIN_INTERVAL_S:g} to {MAX_WATCH_S:g} seconds, "
            f"not {interval:g}"
        )
    return Invocation(
        Mode(mode),
        duration,
        interval,
        _time(event, "scheduled_time", required=False),
        since_s=_since(event),
    )


def _since(event: Mapping[str, Any]) -> float | None:
    raw = event.get("since")
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise InvocationError(f"since must be a span such as 7d, not {_show(raw)}")
    try:
        return span(str(raw))
    except ValueError as exc:
        raise InvocationError(f"since {exc}") from None


def _seconds(event: Mapping[str, Any], key: str, default: float) -> float:
    raw = event.get(key, default)
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise InvocationError(f"{key} must be a number of seconds, not {_show(raw)}")
    try:
        value = float(raw)
    except (ValueError, OverflowError):
        value = math.nan
    if not math.isfinite(value):
        raise InvocationError(f"{key} must be a finite number of seconds, not {_show(raw)}")
    if value < 0:
        raise InvocationError(f"{key} must not be negative, got {_show(raw)}")
    return value


def _time(event: Mapping[str, Any], key: str, *, required: bool) -> str | None:
    value = event.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        what = "a scheduled event needs" if required else "the event's"
        raise InvocationError(f"{what} {key!r} as an ISO-8601 time string, got {_show(value)}")
    return value


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
