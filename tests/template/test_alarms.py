"""The alarms watch metrics that exist: the checker's own EMF metrics under the namespace and
service dimension the function's Powertools environment gives them, and the AWS ones of this
stack's function and rule."""

from __future__ import annotations

import ast
from typing import Any

from tests.template import cfn

APP = cfn.ROOT / "functions" / "checker" / "app.py"


def _emitted() -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(APP.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_metric":
            for keyword in node.keywords:
                if keyword.arg == "name" and isinstance(keyword.value, ast.Constant):
                    names.add(str(keyword.value.value))
    return names


def _alarms(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        k: r["Properties"]
        for k, r in template["Resources"].items()
        if r["Type"] == "AWS::CloudWatch::Alarm"
    }


def test_custom_metric_alarms_match_what_the_handler_emits(template: dict[str, Any]) -> None:
    env = template["Resources"]["CheckerFunction"]["Properties"]["Environment"]["Variables"]
    emitted = _emitted()
    assert "SourceErrors" in emitted
    custom = {
        k: a for k, a in _alarms(template).items() if not str(a["Namespace"]).startswith("AWS/")
    }
    assert custom, "no alarm on the checker's own metrics"
    for name, alarm in custom.items():
        assert alarm["MetricName"] in emitted, name
        assert alarm["Namespace"] == env["POWERTOOLS_METRICS_NAMESPACE"], name
        # Powertools puts every metric under the one dimension "service".
        assert alarm["Dimensions"] == [
            {"Name": "service", "Value": env["POWERTOOLS_SERVICE_NAME"]}
        ], name


def test_the_watcher_is_watched(template: dict[str, Any]) -> None:
    by_metric = {(str(a["Namespace"]), a["MetricName"]): a for a in _alarms(template).values()}
    errors = by_metric[("AWS/Lambda", "Errors")]
    throttles = by_metric[("AWS/Lambda", "Throttles")]
    for alarm in (errors, throttles):
        assert alarm["ComparisonOperator"] == "GreaterThanThreshold" and alarm["Threshold"] == 0
        assert alarm["Dimensions"] == [
            {"Name": "FunctionName", "Value": {"Ref": "CheckerFunction"}}
        ]
    heartbeat = by_metric[("AWS/Lambda", "Invocations")]
    assert heartbeat["TreatMissingData"] == "breaching"
    assert heartbeat["ComparisonOperator"] == "LessThanThreshold" and heartbeat["Threshold"] == 1
    assert heartbeat["Period"] == 60 and heartbeat["EvaluationPeriods"] == {
        "Ref": "HeartbeatMinutes"
    }
    assert template["Parameters"]["HeartbeatMinutes"]["Default"] == 5


def test_every_alarm_notifies_the_alert_topic(template: dict[str, Any]) -> None:
    for name, alarm in _alarms(template).items():
        assert alarm["AlarmActions"] == [{"Ref": "AlertsTopic"}], name
        assert alarm["AlarmName"]["Fn::Sub"].startswith("${AWS::StackName}-"), (
            f"{name}: the topic policy admits alarms named after the stack only"
        )
