"""Alerts as a chat channel (Amazon Q Developer in chat applications) renders them: the documented
custom-notification schema, one thread per incident, within the size a channel shows."""

from __future__ import annotations

import json
from dataclasses import replace

import boto3
import pytest
from moto import mock_aws

from oomcheck.alerting.chat import DESCRIPTION_MAX, TITLE_MAX, chat_message, chat_request
from oomcheck.alerting.outbox import Batch, batches
from oomcheck.alerting.render import SNS_MAX_BYTES, fit, reduced, request_size
from oomcheck.alerting.sns import ChatAlerter
from oomcheck.model import Action, PendingAlert
from oomcheck.provision import subscribe_queue
from tests.unit.chatschema import violations
from tests.unit.incidents import T0, incident, state_of


def _single(action: Action = Action.OPEN, **kwargs: object) -> Batch:
    one = incident(1, tasks=3, awaiting=1, **kwargs)  # type: ignore[arg-type]
    pending = PendingAlert(action, T0, note="now known: OOM-killed")  # shown by an update only
    if action is Action.RESOLVE:
        one = replace(one, closed_at=T0 + 300, resolution="the fleet is back to 4 workers")
    return Batch(action, ((one, pending),))


def test_an_open_alert_renders_in_the_documented_schema():
    chat = chat_message(fit(_single(), T0 + 60))
    assert violations(chat) == []
    content = chat["content"]
    assert content["title"].startswith("\N{POLICE CARS REVOLVING LIGHT} oomcheck CRITICAL:")
    assert "celery@worker-1 died, OOM-killed (exit 137)" in content["title"]
    assert "Worker: `celery@worker-1`" in content["description"]
    assert "Cause: OOM-killed, exit 137" in content["description"]
    assert "Tasks: 3 (1 awaiting redelivery, 2 lost)" in content["description"]
    assert content["nextSteps"] == ["Raise the worker's memory limit."]
    assert content["keywords"] == ["worker_lost", "critical", "open"]
    assert chat["metadata"]["threadId"] == "inc-0001"
    assert chat["metadata"]["eventType"] == "oomcheck.open"
    assert chat["metadata"]["relatedResources"] == ["celery@worker-1"]


def test_open_update_remind_and_resolve_of_an_incident_share_one_thread():
    chats = [chat_message(fit(_single(action), T0 + 60)) for action in Action]
    for chat in chats:
        assert violations(chat) == [], chat
    assert {c["metadata"]["threadId"] for c in chats} == {"inc-0001"}
    assert len({c["id"] for c in chats}) == len(chats)  # each its own notification
    by_type = {c["metadata"]["eventType"]: c for c in chats}
    resolved = by_type["oomcheck.resolve"]
    assert resolved["content"]["title"].startswith("\N{WHITE HEAVY CHECK MARK} oomcheck RESOLVED")
    assert "Resolved: the fleet is back to 4 workers" in resolved["content"]["description"]
    assert resolved["content"]["nextSteps"] == []  # nothing left to do
    assert "Update: now known: OOM-killed" in by_type["oomcheck.update"]["content"]["description"]


def test_a_grouped_open_threads_on_its_first_incident_and_lists_every_worker():
    [batch] = batches(state_of(*(incident(i, tasks=2) for i in range(3))))
    message = fit(batch, T0 + 60)
    chat = chat_message(message)
    assert violations(chat) == []
    assert chat["metadata"]["threadId"] == message.incident_id == "inc-0000"
    description = chat["content"]["description"]
    assert "Workers (3), each its own incident:" in description
    for i in range(3):
        assert f"`celery@worker-{i}` `inc-{i:04d}`" in description
    assert chat["metadata"]["additionalContext"]["incident_ids"] == "inc-0000,inc-0001,inc-0002"


def test_a_huge_fleet_death_stays_within_the_chat_limits():
    [batch] = batches(state_of(*(incident(i, tasks=40) for i in range(400))))
    for message in (fit(batch, T0 + 60), reduced(batch, T0 + 60)):
        chat = chat_message(message)
        assert violations(chat) == []
        assert len(chat["content"]["title"]) <= TITLE_MAX
        assert len(chat["content"]["description"]) <= DESCRIPTION_MAX
        assert "and 390 more" in chat["content"]["description"] or message.payload.get("reduced")
        assert request_size(chat_request(message)) < 16 * 1024 < SNS_MAX_BYTES


def test_hostile_names_cannot_break_out_of_their_code_spans():
    one = incident(1)
    finding = replace(one.finding, worker="celery@`*evil*`\n<!here>", advice=("x" * 5000,) * 9)
    batch = Batch(Action.OPEN, ((replace(one, finding=finding), PendingAlert(Action.OPEN, T0)),))
    chat = chat_message(fit(batch, T0))
    assert violations(chat) == []
    assert "Worker: `celery@'*evil*'\n<!here>`" in chat["content"]["description"]
    assert len(chat["content"]["nextSteps"]) == 5
    assert all(len(step) <= 300 for step in chat["content"]["nextSteps"])


@pytest.fixture
def aws_region(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")


def test_the_chat_topic_carries_the_notification_with_the_alert_attributes(aws_region):
    with mock_aws():
        sns, sqs = boto3.client("sns"), boto3.client("sqs")
        topic = sns.create_topic(Name="oomcheck-chat")["TopicArn"]
        queue = subscribe_queue(sns, sqs, topic, "chat-inbox")
        ChatAlerter(topic, client=sns).publish(fit(_single(), T0 + 60))
        [received] = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    envelope = json.loads(received["Body"])
    chat = json.loads(envelope["Message"])
    assert violations(chat) == [] and chat["metadata"]["threadId"] == "inc-0001"
    attributes = {k: v["Value"] for k, v in envelope["MessageAttributes"].items()}
    assert attributes == {
        "kind": "worker_lost",
        "severity": "critical",
        "action": "open",
        "dedup_key": "inc-0001:open:0",
    }
