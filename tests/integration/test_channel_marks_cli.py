"""Tried as a new user would: the chat topic's ARN has a typo. Each `oomcheck check` is a new
process (as each cold start is); the alert topic gets the alert once, the chat topic is retried
alone on every run until it exists, then gets it once; the report says what each channel did."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from oomcheck.provision import subscribe_queue
from tests.awsfaults import serial_moto
from tests.integration.conftest import Fleet

pytestmark = pytest.mark.integration

OOMCHECK = str(Path(sys.executable).with_name("oomcheck"))


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    with serial_moto() as endpoint:
        yield endpoint


def _check(fleet: Fleet, endpoint: str, alerts: str, chat: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OOMCHECK_", "CELERY_"))}
    env.update(
        {
            "OOMCHECK_BROKER_URL": fleet.broker,
            "OOMCHECK_RESULT_BACKEND": fleet.backend,
            "OOMCHECK_STATE_FILE": str(fleet.tmp / "cli-state.json"),
            "OOMCHECK_INSPECT_TIMEOUT": "1",
            "OOMCHECK_REPING_TIMEOUT": "1",
            "OOMCHECK_TOPIC_ARN": alerts,
            "OOMCHECK_CHAT_TOPIC_ARN": chat,
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }
    )
    run = subprocess.run(
        [OOMCHECK, "check", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in run.stderr, run.stderr
    return dict(json.loads(run.stdout))


def _received(sqs: Any, url: str) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    for _ in range(20):  # bounded
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not batch:
            break
        for message in batch:
            got.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return got


def test_a_broken_chat_topic_never_repeats_the_alert_topic(fleet: Fleet, moto: str):
    sns = boto3.client("sns", endpoint_url=moto, region_name="us-east-1")
    sqs = boto3.client("sqs", endpoint_url=moto, region_name="us-east-1")
    name = f"alerts-{uuid.uuid4().hex[:8]}"
    alerts = sns.create_topic(Name=name)["TopicArn"]
    alerts_inbox = subscribe_queue(sns, sqs, alerts, name)
    chat = alerts.replace(name, f"chat-{name}")  # a typo: no such topic yet
    # Given a worker that dies with a task on it
    worker = fleet.start("chatless@oomcheck-test")
    task = fleet.send("demo.sleepy", 120)
    fleet.wait_started(task)
    assert _check(fleet, moto, alerts, chat)["findings"] == []
    worker.kill(signal.SIGKILL)
    worker.wait()
    # When three checks run, each a new process, while the chat topic does not exist
    reports = [_check(fleet, moto, alerts, chat) for _ in range(3)]
    # Then the alert topic got the alert once, and every report says chat failed
    assert len(_received(sqs, alerts_inbox)) == 1
    first = next(a for a in reports[0]["alerts"] if a["kind"] == "worker_lost")
    assert first["published"] is False and "NotFound" in first["error"]
    assert first["channels"] == {f"sns:{alerts}": "published", f"chat:{chat}": "failed"}
    for report in reports[1:]:
        [again] = [a for a in report["alerts"] if a["kind"] == "worker_lost"]
        assert again["channels"] == {f"sns:{alerts}": "sent earlier", f"chat:{chat}": "failed"}
    # When the chat topic is created under that name
    assert sns.create_topic(Name=f"chat-{name}")["TopicArn"] == chat
    chat_inbox = subscribe_queue(sns, sqs, chat, f"chat-{name}")
    fixed = _check(fleet, moto, alerts, chat)
    # Then chat takes it once, the alert topic nothing more, and the alert is done
    [done] = [a for a in fixed["alerts"] if a["kind"] == "worker_lost"]
    assert done["published"] is True
    assert done["channels"] == {f"sns:{alerts}": "sent earlier", f"chat:{chat}": "published"}
    assert len(_received(sqs, chat_inbox)) == 1 and _received(sqs, alerts_inbox) == []
    after = _check(fleet, moto, alerts, chat)
    assert [a for a in after["alerts"] if a["kind"] == "worker_lost"] == []
    assert _received(sqs, chat_inbox) == [] and _received(sqs, alerts_inbox) == []
