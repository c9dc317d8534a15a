"""Delivery per channel, remembered in the state: a channel that fails is retried alone, in any
process, and a channel that took an alert never gets it again."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from moto import mock_aws

from oomcheck.alerting import delivery
from oomcheck.alerting.channels import FanoutPublisher
from oomcheck.alerting.outbox import SentJournal
from oomcheck.alerting.sns import ChatAlerter, SnsAlerter
from oomcheck.deadline import Deadline
from oomcheck.model import Delivery, Mode
from oomcheck.report.document import Report
from oomcheck.store.file import FileStateStore
from tests.unit.incidents import T0, incident, state_of
from tests.unit.test_delivery import FakeClock

ACCOUNT = "123456789012"


@pytest.fixture
def aws(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    with mock_aws():
        yield boto3.client("sns"), boto3.client("sqs")


def _topic_to_queue(sns: Any, sqs: Any, name: str) -> tuple[str, str]:
    arn = sns.create_topic(Name=name)["TopicArn"]
    url = sqs.create_queue(QueueName=f"{name}-inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=queue_arn)
    return arn, url


def _drain(sqs: Any, url: str) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    for _ in range(10):  # bounded: a few receives empty the queue
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not batch:
            break
        got += [json.loads(m["Body"]) for m in batch]
        for m in batch:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return got


def _cold_run(path: str, sns: Any, alerts_arn: str, chat_arn: str) -> delivery.Committed:
    """One run in a new process: new publishers, an empty journal; only the state file is kept."""
    store = FileStateStore(path)
    store.acquire("run", T0, 60)
    loaded = store.load()
    fanout = FanoutPublisher(
        [SnsAlerter(alerts_arn, client=sns), ChatAlerter(chat_arn, client=sns)]
    )
    box = delivery.Outbox(
        publisher=fanout,
        store=store,
        owner="run",
        retention_s=86400,
        deadline=Deadline.after(30, FakeClock()),
        publish_s=0.0,
        finish_s=0.5,
        journal=SentJournal(),
    )
    state = loaded if loaded.incidents else state_of(incident(1, tasks=2))
    try:
        return delivery.commit(box, loaded, state, T0)
    finally:
        store.abandon("run")


def test_a_broken_chat_topic_is_retried_alone_across_cold_starts(aws, tmp_path):
    sns, sqs = aws
    path = str(tmp_path / "state.json")
    # Given a working alert topic and a chat topic ARN with a typo (it does not exist)
    alerts_arn, alerts_inbox = _topic_to_queue(sns, sqs, "alerts")
    chat_arn = f"arn:aws:sns:us-east-1:{ACCOUNT}:chat"
    # When three runs, each in a new process, deliver while chat is broken
    runs = [_cold_run(path, sns, alerts_arn, chat_arn) for _ in range(3)]
    # Then the alert topic got the alert once, and every run says chat failed
    assert len(_drain(sqs, alerts_inbox)) == 1
    first = runs[0].delivered.records[0]
    assert first.outcome is Delivery.FAILED and "NotFound" in (first.error or "")
    assert first.channels == {f"sns:{alerts_arn}": "published", f"chat:{chat_arn}": "failed"}
    later = runs[2].delivered.records[0]
    assert later.channels == {f"sns:{alerts_arn}": "sent earlier", f"chat:{chat_arn}": "failed"}
    pending = FileStateStore(path).load().incidents["inc-0001"].pending
    assert pending[0].taken == (f"sns:{alerts_arn}",) and pending[0].attempts == 3
    # When the chat topic is created (the typo fixed) and a new process runs
    _, chat_inbox = _topic_to_queue(sns, sqs, "chat")
    fixed = _cold_run(path, sns, alerts_arn, chat_arn)
    # Then chat takes it once, the alert topic gets nothing more, and the alert is done
    assert [r.outcome for r in fixed.delivered.records] == [Delivery.PUBLISHED]
    assert len(_drain(sqs, chat_inbox)) == 1 and _drain(sqs, alerts_inbox) == []
    assert not FileStateStore(path).load().incidents["inc-0001"].pending
    # And a run after that sends nothing anywhere
    assert _cold_run(path, sns, alerts_arn, chat_arn).delivered.records == []
    assert _drain(sqs, chat_inbox) == [] and _drain(sqs, alerts_inbox) == []


def test_the_report_shows_each_channels_outcome(aws, tmp_path):
    sns, sqs = aws
    alerts_arn, _ = _topic_to_queue(sns, sqs, "alerts")
    chat_arn = f"arn:aws:sns:us-east-1:{ACCOUNT}:missing"
    done = _cold_run(str(tmp_path / "s.json"), sns, alerts_arn, chat_arn)
    report = Report(
        mode=Mode.CHECK,
        checked_at=T0,
        duration_ms=1,
        workers=(),
        findings=(),
        sources={},
        stats={},
        alerts=tuple(done.delivered.records),
    )
    [alert] = report.to_json()["alerts"]
    assert alert["published"] is False
    assert alert["channels"] == {f"sns:{alerts_arn}": "published", f"chat:{chat_arn}": "failed"}
