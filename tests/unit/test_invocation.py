"""Lambda events checked at the edge: every malformed field is a one-line error naming it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oomcheck.entry.invocation import InvocationError, parse_invocation

EVENTS = Path(__file__).resolve().parents[2] / "events"


@pytest.mark.parametrize(
    ("event", "wanted"),
    [
        ({"mode": "watch", "interval_s": float("nan")}, "interval_s must be a finite number"),
        ({"mode": "watch", "interval_s": "NaN"}, "interval_s must be a finite number"),
        ({"mode": "watch", "duration_s": float("nan")}, "duration_s must be a finite number"),
        ({"mode": "watch", "duration_s": float("inf")}, "duration_s must be a finite number"),
        ({"mode": "watch", "interval_s": 0}, "interval_s must be from 0.1 to 900"),
        ({"mode": "watch", "interval_s": 1e9}, "interval_s must be from 0.1 to 900"),
        ({"mode": "watch", "interval_s": -1}, "interval_s must not be negative"),
        ({"mode": "watch", "duration_s": [1]}, "duration_s must be a number of seconds"),
        ({"mode": ["check"]}, "unknown mode ['check']"),
        ({"mode": "check", "scheduled_time": 5}, "'scheduled_time' as an ISO-8601"),
        (
            {"detail-type": "Scheduled Event", "source": "aws.events", "detail": {}},
            "a scheduled event needs 'time'",
        ),
        ({"detail-type": "Scheduled Event", "time": ""}, "a scheduled event needs 'time'"),
    ],
)
def test_malformed_events_are_one_line_errors(event, wanted):
    with pytest.raises(InvocationError) as info:
        parse_invocation(event)
    assert wanted in str(info.value)
    assert "\n" not in str(info.value)


def test_a_huge_mode_is_not_echoed_whole():
    with pytest.raises(InvocationError) as info:
        parse_invocation({"mode": "x" * 100_000})
    assert len(str(info.value)) < 200


def test_a_watch_event_parsed_from_json_with_nan_is_refused():
    # Lambda's runtime parses events with Python's json, which reads a bare NaN
    event = json.loads('{"mode": "watch", "duration_s": 50, "interval_s": NaN}')
    with pytest.raises(InvocationError, match="interval_s"):
        parse_invocation(event)


def test_interval_null_means_the_configured_one():
    assert parse_invocation({"mode": "watch", "interval_s": None}).interval_s is None
    assert parse_invocation({"mode": "watch", "interval_s": "2.5"}).interval_s == 2.5


@pytest.mark.parametrize("path", sorted(EVENTS.glob("*.json")), ids=lambda p: p.name)
def test_the_sample_invocation_events_parse(path):
    event = json.loads(path.read_text())
    if isinstance(event, dict) and ("mode" in event or event.get("source") == "aws.events"):
        invocation = parse_invocation(event)
        assert invocation.mode in ("check", "audit", "watch")
        if event.get("source") == "aws.events":
            assert invocation.scheduled_time == event["time"]


@pytest.mark.filterwarnings("ignore:No application metrics to publish")
def test_the_handler_refuses_a_nan_watch_before_running(monkeypatch, tmp_path):
    from tests.unit import test_handler

    module = test_handler.handler_module.__wrapped__(monkeypatch, tmp_path)
    with pytest.raises(InvocationError, match="interval_s must be a finite number"):
        module.handler({"mode": "watch", "interval_s": float("nan")}, test_handler.Context())


@pytest.mark.parametrize(
    ("interval", "duration"), [(float("nan"), 10.0), (5.0, float("nan")), (0.0, 10.0)]
)
def test_watch_refuses_an_interval_or_duration_it_could_never_finish(interval, duration):
    from oomcheck.runner import watch

    runs: list[object] = []
    with pytest.raises(ValueError, match="finite interval"):
        watch(object(), interval=interval, duration=duration, on_report=runs.append)  # type: ignore[arg-type]
    assert runs == []
