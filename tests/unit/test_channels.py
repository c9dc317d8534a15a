"""Every alert on every configured channel (alert topic, chat topic, EventBridge bus), marked sent
once all took it; a failing channel is retried alone."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from oomcheck.alerting import delivery
from oomcheck.alerting.channels import FanoutPublisher
from oomcheck.alerting.eventbridge import DETAIL_TYPES, EventBridgeAlerter
from oomcheck.alerting.outbox import SentJournal, batches
from oomcheck.alerting.render import PublishError, fit
from oomcheck.config.settings import from_env
from oomcheck.deadline import Deadline
from oomcheck.model import Action
from oomcheck.store.file import FileStateStore
from oomcheck.wiring import build_deps
from tests.unit.incidents import T0, incident, state_of
from tests.unit.test_delivery import FakeClock, Topic


@pytest.fixture
def aws_region(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")


class Named(Topic):
    def __init__(self, name: str) -> None:
        super().__init__(FakeClock())
        self.name = name

    def describe(self) -> str:
        return self.name


def _commit(tmp_path: Any, publisher: Any, journal: SentJournal) -> delivery.Committed:
    store = FileStateStore(str(tmp_path / "state.json"))
    store.acquire("run-1", T0, 60)
    loaded = store.load()
    state = journal.apply(loaded if loaded.incidents else state_of(incident(1, tasks=2)))
    box = delivery.Outbox(
        publisher=publisher,
        store=store,
        owner="run-1",
        retention_s=86400,
        deadline=Deadline.after(30, FakeClock()),
        publish_s=0.0,
        finish_s=0.5,
        journal=journal,
    )
    try:
        return delivery.commit(box, loaded, state, T0)
    finally:
        store.abandon("run-1")


def test_a_failing_channel_is_retried_alone_and_the_alert_is_sent_once_all_took_it(tmp_path):
    # Given the alert topic and EventBridge working, and the chat topic throttled
    alerts, chat, bus = Named("sns"), Named("chat"), Named("events")
    chat.fail_with = PublishError("sns publish: Throttling")
    fanout = FanoutPublisher([alerts, chat, bus])
    journal = SentJournal()
    # When a run delivers
    first = _commit(tmp_path, fanout, journal)
    # Then the alert stays pending, the report says which channel failed
    [record] = first.delivered.records
    assert not record.published and record.error == "chat: sns publish: Throttling"
    assert [len(c.accepted) for c in (alerts, chat, bus)] == [1, 0, 1]
    # When the next run of this process delivers with the chat topic back
    chat.fail_with = None
    second = _commit(tmp_path, fanout, journal)
    # Then only chat gets it, and the alert is marked sent
    assert [len(c.accepted) for c in (alerts, chat, bus)] == [1, 1, 1]
    assert [r.published for r in second.delivered.records] == [True]
    saved = FileStateStore(str(tmp_path / "state.json")).load()
    assert not saved.incidents["inc-0001"].pending
    assert fanout.taken == {}  # nothing left to remember


def test_a_message_every_channel_refuses_is_permanent_else_it_may_pass():
    message = fit(batches(state_of(incident(1)))[0], T0)
    refusing, throttled = Named("a"), Named("b")
    refusing.fail_with = PublishError("sns publish: InvalidParameter", permanent=True)
    throttled.fail_with = PublishError("events put: ThrottlingException")
    with pytest.raises(PublishError) as mixed:
        FanoutPublisher([refusing, throttled]).publish(message)
    assert not mixed.value.permanent
    with pytest.raises(PublishError) as refused:
        FanoutPublisher([refusing]).publish(message)
    assert refused.value.permanent


def _bus_to_queue(events: Any, sqs: Any) -> str:
    """A bus with a rule for oomcheck's events whose target is an SQS queue: how a team's rule
    sees them."""
    events.create_event_bus(Name="oncall")
    url = sqs.create_queue(QueueName="pagerduty-stand-in")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events.put_rule(
        Name="oomcheck-incidents",
        EventBusName="oncall",
        EventPattern=json.dumps({"source": ["oomcheck"], "detail": {"severity": ["critical"]}}),
    )
    events.put_targets(
        Rule="oomcheck-incidents", EventBusName="oncall", Targets=[{"Id": "q", "Arn": arn}]
    )
    return str(url)


def test_alerts_reach_an_eventbridge_rule_with_the_sns_payload(aws_region, tmp_path):
    with mock_aws():
        events, sqs = boto3.client("events"), boto3.client("sqs")
        queue = _bus_to_queue(events, sqs)
        publisher = EventBridgeAlerter("oncall", client=events)
        one = incident(1, tasks=2)
        message = fit(batches(state_of(one))[0], T0)
        assert publisher.publish(message)
        got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    [event] = [json.loads(m["Body"]) for m in got]
    assert event["source"] == "oomcheck"
    assert event["detail-type"] == DETAIL_TYPES[Action.OPEN] == "oomcheck Incident Opened"
    assert event["detail"] == json.loads(json.dumps(message.payload))
    assert event["detail"]["incident_id"] == "inc-0001"
    assert event["detail"]["dedup_key"] == "inc-0001:open:0"


@pytest.mark.parametrize(
    ("code", "permanent"),
    [("ThrottlingException", False), ("InternalFailure", False), ("MalformedDetail", True)],
)
def test_a_failed_entry_is_a_publish_error(code, permanent, aws_region):
    client = boto3.client("events")
    message = fit(batches(state_of(incident(1)))[0], T0)
    with Stubber(client) as stub:
        stub.add_response(
            "put_events",
            {"FailedEntryCount": 1, "Entries": [{"ErrorCode": code, "ErrorMessage": "no"}]},
        )
        with pytest.raises(PublishError) as failed:
            EventBridgeAlerter("oncall", client=client).publish(message)
    assert failed.value.permanent is permanent and code in str(failed.value)


def test_wiring_puts_every_configured_channel_behind_the_alert_topic(aws_region, tmp_path):
    env = {
        "OOMCHECK_BROKER_URL": "memory://",
        "OOMCHECK_STATE_FILE": str(tmp_path / "s.json"),
        "OOMCHECK_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:alerts",
        "OOMCHECK_CHAT_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:chat",
        "OOMCHECK_EVENT_BUS": "oncall",
    }
    deps = build_deps(from_env(env), budget_s=30)
    assert deps.publisher.describe() == (
        "sns:arn:aws:sns:us-east-1:123456789012:alerts + "
        "chat:arn:aws:sns:us-east-1:123456789012:chat + events:oncall"
    )
    alone = build_deps(from_env({k: env[k] for k in list(env)[:3]}), budget_s=30)
    # three channels one after the other: the run keeps back their sum
    assert deps.publish_s == pytest.approx(3 * alone.publish_s) and alone.publish_s > 0
