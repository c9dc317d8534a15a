"""`oomcheck setup --queue`: the queue it subscribes to the alert topic lets that topic, and only
that topic, send to it (on AWS a queue with no such policy refuses SNS's deliveries; moto does not
enforce queue policies, so the policy itself is read back and evaluated)."""

from __future__ import annotations

import json
from typing import Any

import boto3
from moto import mock_aws

from oomcheck import provision
from tests.template import iam
from tests.template.cfn import REGION


def _queue_policy(sqs: Any, url: str) -> tuple[str, list[dict[str, Any]]]:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn", "Policy"])[
        "Attributes"
    ]
    assert "Policy" in attributes, "the queue has no policy: SNS could not deliver to it on AWS"
    return attributes["QueueArn"], iam.statements([json.loads(attributes["Policy"])])


def _sent_by(queue_arn: str, topic_arn: str | None) -> iam.Need:
    """SNS delivering a message of ``topic_arn`` (None: no source named) to the queue."""
    context = () if topic_arn is None else (("aws:SourceArn", (topic_arn,)),)
    return iam.Need("sqs:SendMessage", queue_arn, context)


def test_setup_queue_admits_the_alert_topic_only_and_receives_its_alerts() -> None:
    with mock_aws():
        # Given: `oomcheck setup --table t --topic alerts --queue inbox`
        done = provision.setup("oomcheck-t", "oomcheck-alerts", queue="oomcheck-inbox")
        sns = boto3.client("sns", region_name=REGION)
        sqs = boto3.client("sqs", region_name=REGION)
        other = sns.create_topic(Name="someone-else")["TopicArn"]
        assert done.queue_url is not None

        # Then: the queue's policy lets SNS send for this topic, and for no other
        queue_arn, statements = _queue_policy(sqs, done.queue_url)
        [admits] = [s for s in statements if s["Effect"] == "Allow"]
        assert admits["Principal"] == {"Service": "sns.amazonaws.com"}
        assert admits["Condition"] == {"ArnEquals": {"aws:SourceArn": done.topic_arn}}
        assert iam.allowed(statements, _sent_by(queue_arn, done.topic_arn))
        assert not iam.allowed(statements, _sent_by(queue_arn, other))
        assert not iam.allowed(statements, _sent_by(queue_arn, None))

        # When: an alert is published to the topic; Then: it arrives in the queue
        sns.publish(TopicArn=done.topic_arn, Subject="oomcheck test", Message="worker died")
        [received] = sqs.receive_message(QueueUrl=done.queue_url, WaitTimeSeconds=1)["Messages"]
        envelope = json.loads(received["Body"])
        assert envelope["TopicArn"] == done.topic_arn and envelope["Message"] == "worker died"


def test_setup_twice_keeps_one_statement_per_topic_and_the_queue_owners_own() -> None:
    """Idempotent, and a queue that already had a policy keeps its statements: the topic's is
    replaced, not added twice; a second topic subscribing the same queue gets one of its own."""
    with mock_aws():
        sqs = boto3.client("sqs", region_name=REGION)
        url = sqs.create_queue(QueueName="oomcheck-inbox")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        own = {
            "Sid": "OwnersRead",
            "Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
            "Action": "sqs:ReceiveMessage",
            "Resource": arn,
        }
        sqs.set_queue_attributes(
            QueueUrl=url,
            Attributes={"Policy": json.dumps({"Version": "2012-10-17", "Statement": [own]})},
        )
        first = provision.setup("oomcheck-t", "oomcheck-alerts", queue="oomcheck-inbox")
        again = provision.setup("oomcheck-t", "oomcheck-alerts", queue="oomcheck-inbox")
        chat = provision.setup("oomcheck-t", "oomcheck-chat", queue="oomcheck-inbox")
        _, statements = _queue_policy(sqs, url)

    assert first.queue_url == again.queue_url == chat.queue_url == url
    assert own in statements
    sources = [s["Condition"]["ArnEquals"]["aws:SourceArn"] for s in statements if s != own]
    assert sorted(sources) == sorted([first.topic_arn, chat.topic_arn])
    assert len({s["Sid"] for s in statements}) == len(statements) == 3
