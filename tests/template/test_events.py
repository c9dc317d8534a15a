"""The events in events/ and the schedule's input in template.yaml are invocations the handler
accepts, in the mode each is meant for; a watch fits in the function's timeout."""

from __future__ import annotations

import importlib.util
import json
import re
from typing import Any

import pytest

from oomcheck.entry.invocation import parse_invocation
from tests.template import cfn

EVENTS = cfn.ROOT / "events"
APP = cfn.ROOT / "functions" / "checker" / "app.py"
# What EventBridge Scheduler substitutes for <aws.scheduler.scheduled-time>.
SCHEDULED_TIME = "2026-11-24T14:00:00Z"


def _watch_margin() -> float:
    spec = importlib.util.spec_from_file_location("oomcheck_app_margin", APP)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return float(module._WATCH_MARGIN_S)


@pytest.mark.parametrize(
    ("name", "mode"),
    [
        ("audit.json", "audit"),
        ("scheduled.json", "check"),
        ("scheduled-eventbridge.json", "check"),
        ("watch.json", "watch"),
    ],
)
def test_event_files_parse_to_their_mode(name: str, mode: str) -> None:
    invocation = parse_invocation(json.loads((EVENTS / name).read_text()))
    assert invocation.mode == mode
    if mode == "check":
        assert invocation.scheduled_time == SCHEDULED_TIME


def test_audit_event_is_just_the_mode() -> None:
    """What `sam remote invoke --event-file` and `aws lambda invoke --payload` send as is."""
    assert json.loads((EVENTS / "audit.json").read_text()) == {"mode": "audit"}


def _schedule_input(template: dict[str, Any], watch_seconds: int) -> dict[str, Any]:
    stack = cfn.Stack(template, {"BrokerUrlParameter": "/x", "WatchSeconds": watch_seconds})
    tick = template["Resources"]["CheckerFunctionTick"]
    assert tick["Type"] == "AWS::Scheduler::Schedule"
    raw = stack.resolve(tick["Properties"]["Target"]["Input"])
    assert "<aws.scheduler.scheduled-time>" in raw
    return dict(json.loads(raw.replace("<aws.scheduler.scheduled-time>", SCHEDULED_TIME)))


def test_schedule_input_is_a_check_by_default(template: dict[str, Any]) -> None:
    event = _schedule_input(template, 0)
    assert event == {"mode": "check", "scheduled_time": SCHEDULED_TIME}
    assert parse_invocation(event).mode == "check"


def test_schedule_period_is_a_parameter_of_one_minute(template: dict[str, Any]) -> None:
    spec = template["Parameters"]["ScheduleExpression"]
    assert spec["Default"] == "rate(1 minute)"
    allowed = re.compile(spec["AllowedPattern"])
    for good in ("rate(1 minute)", "rate(5 minutes)", "rate(2 hours)", "cron(0/5 * * * ? *)"):
        assert allowed.fullmatch(good), good
    for bad in ("rate(30 seconds)", "rate(0 minutes)", "rate(1 minutes)", "every minute"):
        assert not allowed.fullmatch(bad), bad


@pytest.mark.parametrize("seconds", [20, 30, 40, 50, 55, 60])
def test_watch_fits_in_the_function_timeout(template: dict[str, Any], seconds: int) -> None:
    """The handler stops a watch _WATCH_MARGIN_S before the timeout; the template's timeout for
    each watch length leaves that margin plus two seconds of cold start."""
    assert seconds in template["Parameters"]["WatchSeconds"]["AllowedValues"]
    event = _schedule_input(template, seconds)
    invocation = parse_invocation(event)
    assert invocation.mode == "watch" and invocation.duration_s == seconds
    stack = cfn.Stack(template, {"BrokerUrlParameter": "/x", "WatchSeconds": seconds})
    timeout = int(stack.properties("CheckerFunction", "Timeout")["Timeout"])
    assert timeout >= seconds + _watch_margin() + 2, (seconds, timeout)
    assert timeout <= 900


def test_check_mode_uses_the_timeout_parameter(template: dict[str, Any]) -> None:
    stack = cfn.Stack(template, {"BrokerUrlParameter": "/x", "FunctionTimeout": 45})
    assert stack.properties("CheckerFunction", "Timeout")["Timeout"] == "45"


def test_invocation_events_are_json_objects() -> None:
    for name in ("audit.json", "scheduled.json", "scheduled-eventbridge.json", "watch.json"):
        assert isinstance(json.loads((EVENTS / name).read_text()), dict), name
