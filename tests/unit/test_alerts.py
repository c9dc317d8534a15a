"""Alerts as a person and a machine read them, and their delivery through SNS."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from oomcheck.alerts import PublishError, render, subject_for
from oomcheck.sns import SnsAlerter
from oomcheck.model import Action, Cause, Finding, Kind, Severity, TaskFate, Verdict
from oomcheck.provision import subscribe_queue
from tests.unit.scenario import LIMITS, T0, Replay, obs, snap, started, task

W = "celery@ip-10-0-1-5.eu-west-1.compute.internal"


def _incident():
    replay = Replay(deliver=False)
    replay.step(
        obs(
            T0,
            [snap(W, active=[task("t-plain", acknowledged=True)], limits=LIMITS)],
            started_=[started("t-plain", W)],
        )
    )
    replay.step(obs(T0 + 60, [], started_=[started("t-plain", W)]))
    [incident] = replay.state.incidents.values()
    return incident


def test_email_body_says_what_died_each_task_fate_and_what_to_do():
    message = render(_incident(), Action.OPEN, T0 + 60)
    assert W in message.text
    assert "t-plain" in message.text and "LOST" in message.text
    assert "WHAT TO DO" in message.text and "EVIDENCE" in message.text
    assert message.payload["finding"]["tasks"][0]["verdict"] == "lost"
    assert message.payload["kind"] == "worker_lost" and message.payload["action"] == "open"


@pytest.mark.parametrize("action", list(Action))
def test_subject_fits_sns(action):
    long = Finding(
        kind=Kind.WORKER_LOST,
        severity=Severity.CRITICAL,
        worker="celery@" + "x" * 300 + "\nbad",
        cause=Cause.OOM_KILLED,
        exit_code=137,
        tasks=tuple(TaskFate(str(i), "n", "STARTED", None, Verdict.LOST) for i in range(3)),
    )
    subject = subject_for(long, action)
    assert len(subject) < 100 and "\n" not in subject and subject.isascii()


def test_subject_names_cause_and_exit_code():
    finding = Finding(
        kind=Kind.WORKER_LOST,
        severity=Severity.CRITICAL,
        worker="celery@w1",
        cause=Cause.OOM_KILLED,
        exit_code=137,
    )
    assert subject_for(finding, Action.OPEN) == (
        "[oomcheck] CRITICAL: celery@w1 died, OOM-killed (exit 137)"
    )


def test_sns_delivers_text_to_email_and_json_to_sqs_with_filter_attributes():
    with mock_aws():
        sns = boto3.client("sns", region_name="us-east-1")
        sqs = boto3.client("sqs", region_name="us-east-1")
        topic = sns.create_topic(Name="alerts")["TopicArn"]
        queue = subscribe_queue(sns, sqs, topic, "inbox")
        message = render(_incident(), Action.OPEN, T0 + 60)
        SnsAlerter(topic, client=sns).publish(message)
        [received] = sqs.receive_message(QueueUrl=queue, MessageAttributeNames=["All"])["Messages"]
        envelope = json.loads(received["Body"])
        assert envelope["Subject"] == message.subject
        payload = json.loads(envelope["Message"])
        assert payload["incident_id"] == message.incident_id
        assert payload["text"] == message.text
        assert envelope["MessageAttributes"]["kind"]["Value"] == "worker_lost"
        assert envelope["MessageAttributes"]["severity"]["Value"] == "critical"


def test_sns_failure_is_a_publish_error_without_secrets():
    sns = boto3.client("sns", region_name="us-east-1")
    with Stubber(sns) as stub:
        stub.add_client_error("publish", service_error_code="Throttling", http_status_code=400)
        with pytest.raises(PublishError, match="Throttling"):
            SnsAlerter("arn:aws:sns:us-east-1:123456789012:t", client=sns).publish(
                render(_incident(), Action.OPEN, T0)
            )
