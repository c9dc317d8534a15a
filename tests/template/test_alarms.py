"""The alarms watch metrics that exist: the checker's own EMF metrics under the namespace and
service dimension the function's Powertools environment gives them, and the AWS ones of this
stack's function and rule."""

from __future__ import annotations

import ast
from typing import Any

from oomcheck.report.metrics import RUN_LEVEL
from tests.template import cfn

APP = cfn.ROOT / "functions" / "checker" / "app.py"
METRICS = {"Ref": "MetricsNamespace"}
# Every alarm template.yaml declares, by logical id: the namespace and metric it watches.
ALARMS = {
    "EcsEventsDeadLetterAlarm": ("AWS/SQS", "ApproximateNumberOfMessagesVisible"),
    "EcsEventsDeliveryAlarm": ("AWS/Events", "FailedInvocations"),
    "CheckerErrorsAlarm": ("AWS/Lambda", "Errors"),
    "CheckerThrottlesAlarm": ("AWS/Lambda", "Throttles"),
    "CheckerHeartbeatAlarm": ("AWS/Lambda", "Invocations"),
    "SourceErrorsAlarm": (METRICS, "SourceErrors"),
    "AlertsFailedAlarm": (METRICS, "AlertsFailed"),
    "AlertsUndeliverableAlarm": (METRICS, "AlertsUndeliverable"),
}
# The run-level counts of an alert that reached nobody: the function cannot tell anyone itself
# (its publishes are what failed), so CloudWatch must.
UNDELIVERED = ("AlertsFailed", "AlertsUndeliverable")


def _emitted() -> set[str]:
    """The run-level metrics the handler emits on its Metrics object (the ``service``
    dimension the alarms name): run_level()'s, as the handler loops over them."""
    handler = ast.parse(APP.read_text())
    assert any(
        isinstance(node, ast.Call) and getattr(node.func, "id", "") == "run_level"
        for node in ast.walk(handler)
    ), "the handler no longer emits run_level()"
    return set(RUN_LEVEL)


def _alarms(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        k: r["Properties"]
        for k, r in template["Resources"].items()
        if r["Type"] == "AWS::CloudWatch::Alarm"
    }


def test_the_stack_declares_its_alarms(template: dict[str, Any]) -> None:
    """The tests below loop over the alarms: this one holds that there are the ones we mean."""
    watched = {k: (a["Namespace"], a["MetricName"]) for k, a in _alarms(template).items()}
    assert watched == ALARMS


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


def test_an_alert_that_reached_nobody_is_alarmed_at_once(template: dict[str, Any]) -> None:
    """A failed publish (retried next run) and an undeliverable one (dropped for good, only the
    handler's "alert undeliverable" log line says so) each raise an alarm in the minute they
    happen; a minute with no run is not an undelivered alert (the heartbeat alarm covers it)."""
    by_metric = {a["MetricName"]: a for a in _alarms(template).values()}
    for metric in UNDELIVERED:
        assert metric in RUN_LEVEL, metric
        alarm = by_metric[metric]
        assert alarm["Statistic"] == "Sum" and alarm["Period"] == 60, metric
        assert alarm["EvaluationPeriods"] == 1 and alarm.get("DatapointsToAlarm", 1) == 1, metric
        assert alarm["ComparisonOperator"] == "GreaterThanThreshold", metric
        assert alarm["Threshold"] == 0, metric
        assert alarm["TreatMissingData"] == "notBreaching", metric


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


def test_every_alarm_notifies_the_alarm_topic(template: dict[str, Any]) -> None:
    alarms = _alarms(template)
    assert alarms.keys() == ALARMS.keys()
    for name, alarm in alarms.items():
        assert alarm["AlarmActions"] == [{"Ref": "AlarmsTopic"}], name
        assert alarm.get("OKActions", [{"Ref": "AlarmsTopic"}]) == [{"Ref": "AlarmsTopic"}], name
        assert alarm["AlarmName"]["Fn::Sub"].startswith("${AWS::StackName}-"), (
            f"{name}: the topic policy admits alarms named after the stack only"
        )


def _publishers(template: dict[str, Any], topic: str) -> set[str]:
    """Who may publish to ``topic``: services its policy admits, and the checker if its role
    may."""
    resources = template["Resources"]
    found = set()
    for resource in resources.values():
        if (
            resource["Type"] != "AWS::SNS::TopicPolicy"
            or {"Ref": topic} not in resource["Properties"]["Topics"]
        ):
            continue
        for statement in resource["Properties"]["PolicyDocument"]["Statement"]:
            if statement["Effect"] == "Allow":
                found.add(str(statement["Principal"]["Service"]))
    [policy] = resources["CheckerRole"]["Properties"]["Policies"]
    for statement in policy["PolicyDocument"]["Statement"]:
        publishes = isinstance(statement, dict) and statement.get("Action") == "sns:Publish"
        if publishes and {"Ref": topic} in statement["Resource"]:
            found.add("checker")
    return found


def test_one_schema_per_topic(template: dict[str, Any]) -> None:
    """Alerts (oomcheck's JSON and email text) and chat notifications come from the checker
    alone; CloudWatch's alarm messages from CloudWatch alone, on a topic of their own, so a
    subscription filter on the alerts' attributes never drops an alarm unseen."""
    assert _publishers(template, "AlertsTopic") == {"checker"}
    assert _publishers(template, "ChatTopic") == {"checker"}
    assert _publishers(template, "AlarmsTopic") == {"cloudwatch.amazonaws.com"}
    env = template["Resources"]["CheckerFunction"]["Properties"]["Environment"]["Variables"]
    assert env["OOMCHECK_TOPIC_ARN"] == {"Ref": "AlertsTopic"}
    assert env["OOMCHECK_CHAT_TOPIC_ARN"] == {"Ref": "ChatTopic"}
    outputs = template["Outputs"]
    for topic in ("AlertsTopic", "ChatTopic", "AlarmsTopic"):
        assert outputs[f"{topic}Arn"]["Value"] == {"Ref": topic}


def test_an_email_address_gets_the_alerts_and_the_alarms(template: dict[str, Any]) -> None:
    subscribed = {
        r["Properties"]["TopicArn"]["Ref"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::SNS::Subscription"
        and r["Properties"]["Endpoint"] == {"Ref": "AlertEmail"}
    }
    assert subscribed == {"AlertsTopic", "AlarmsTopic"}
