"""The event-driven path in the template: ECS task-stopped events through SQS to the function
(on by default), log groups subscribed on request, each with the least privilege it needs."""

from __future__ import annotations

from typing import Any

import pytest

from tests.template import cfn

QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:ecs-events"
DLQ_ARN = "arn:aws:sqs:us-east-1:123456789012:ecs-events-dlq"
PARAMS = {"BrokerUrlParameter": "/b"}


def _stack(template: dict[str, Any], **params: Any) -> cfn.Stack:
    stack = cfn.Stack(template, {**PARAMS, **params})
    stack.physical.update(
        {
            "EcsEventsQueue": cfn.Physical("https://q/ecs-events", {"Arn": QUEUE_ARN}),
            "EcsEventsDeadLetterQueue": cfn.Physical(
                "https://q/dlq", {"Arn": DLQ_ARN, "QueueName": "ecs-events-dlq"}
            ),
            "EcsTaskStoppedToQueueRule": cfn.Physical(
                "r", {"Arn": "arn:aws:events:us-east-1:123456789012:rule/r"}
            ),
            "CheckerFunction": cfn.Physical(
                "checker", {"Arn": "arn:aws:lambda:us-east-1:123456789012:function:checker"}
            ),
            "AlertsTopic": cfn.Physical("arn:aws:sns:us-east-1:123456789012:alerts"),
            "ChatTopic": cfn.Physical("arn:aws:sns:us-east-1:123456789012:chat"),
            "AlarmsTopic": cfn.Physical("arn:aws:sns:us-east-1:123456789012:alarms"),
            "CheckerLogGroup": cfn.Physical("/l", {"Arn": "arn:aws:logs:::log-group:/l:*"}),
            "StateTable": cfn.Physical("t", {"Arn": "arn:aws:dynamodb:::table/t"}),
            "AlertsKey": cfn.Physical("k", {"Arn": "arn:aws:kms:::key/k"}),
            "EcsEventsLogGroup": cfn.Physical("/e", {"Arn": "arn:aws:logs:::log-group:/e:*"}),
        }
    )
    return stack


def _on(stack: cfn.Stack) -> set[str]:
    return {k for k in stack.template["Resources"] if stack.resource_on(k)}


def test_ecs_events_start_checks_by_default_and_the_log_group_rule_stays(template):
    stack = _stack(template)
    on = _on(stack)
    assert {"EcsEventsQueue", "EcsEventsSource", "EcsTaskStoppedToQueueRule"} <= on
    assert {"EcsTaskStoppedRule", "EcsEventsLogGroup"} <= on
    mapping = stack.properties("EcsEventsSource")
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["MaximumBatchingWindowInSeconds"] == "1"
    assert mapping["EventSourceArn"] == QUEUE_ARN
    rule = stack.properties("EcsTaskStoppedToQueueRule", "EventPattern")["EventPattern"]
    assert rule == stack.properties("EcsTaskStoppedRule", "EventPattern")["EventPattern"]


def test_off_leaves_only_the_log_group_path(template):
    stack = _stack(template, EcsEventsStartChecks="false")
    on = _on(stack)
    assert not {r for r in on if r.startswith(("EcsEventsQueue", "EcsEventsSource"))}
    assert "EcsTaskStoppedRule" in on
    [policy] = stack.properties("CheckerRole", "Policies")["Policies"]
    assert not any("sqs" in str(s["Action"]) for s in policy["PolicyDocument"]["Statement"])


def test_the_queue_is_readable_by_the_role_and_writable_by_the_rule_only(template):
    stack = _stack(template)
    [policy] = stack.properties("CheckerRole", "Policies")["Policies"]
    [sqs] = [s for s in policy["PolicyDocument"]["Statement"] if "sqs" in str(s["Action"])]
    assert sorted(sqs["Action"]) == [
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:ReceiveMessage",
    ]
    assert sqs["Resource"] == QUEUE_ARN
    [send] = stack.properties("EcsEventsQueuePolicy")["PolicyDocument"]["Statement"]
    assert send["Action"] == "sqs:SendMessage" and send["Principal"] == {
        "Service": "events.amazonaws.com"
    }
    assert send["Condition"]["ArnEquals"]["aws:SourceArn"].endswith(":rule/r")


def test_events_that_keep_failing_go_to_a_dead_letter_queue_with_an_alarm(template):
    stack = _stack(template)
    queue = stack.properties("EcsEventsQueue")
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == DLQ_ARN
    assert queue["SqsManagedSseEnabled"] == "true" or queue["SqsManagedSseEnabled"] is True
    alarm = stack.properties("EcsEventsDeadLetterAlarm")
    assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": "ecs-events-dlq"}]
    assert alarm["AlarmActions"] == ["arn:aws:sns:us-east-1:123456789012:alarms"]


@pytest.mark.parametrize("groups", [[], ["/ec2/kernel"], ["/a", "/b", "/c", "/d", "/e"]])
def test_each_subscribed_group_gets_a_filter_and_a_bound_permission(template, groups):
    stack = _stack(template, SubscribedLogGroups=groups or "")
    subscribed = [
        stack.properties(f"LogsSubscription{i}")["LogGroupName"]
        for i in range(1, 6)
        if stack.resource_on(f"LogsSubscription{i}")
    ]
    assert subscribed == groups
    for i, group in enumerate(groups, start=1):
        permission = stack.properties(f"LogsInvokePermission{i}")
        assert permission["Principal"] == "logs.amazonaws.com"
        assert permission["SourceAccount"] == "123456789012"
        assert permission["SourceArn"] == (
            f"arn:aws:logs:us-east-1:123456789012:log-group:{group}:*"
        )
        assert stack.template["Resources"][f"LogsSubscription{i}"]["DependsOn"] == (
            f"LogsInvokePermission{i}"
        )
