"""The SQS source against moto: queue attributes, dead letters looked at without taking, never a
receive from a live queue, never a queue created; and a whole run on an sqs:// broker."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from oomcheck.config.settings import from_env
from oomcheck.model import Mode
from oomcheck.runner import run_once
from oomcheck.sources.sqs import SqsQueues, celery_headers, entity_name, queue_names
from oomcheck.wiring import build_deps


def celery_body(task_id: str, name: str) -> str:
    """A Celery message as kombu's SQS transport sends it: base64 of the JSON envelope."""
    envelope = {
        "body": base64.b64encode(b"[[], {}, {}]").decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"id": task_id, "task": name, "lang": "py"},
        "properties": {"delivery_tag": str(uuid.uuid4())},
    }
    return base64.b64encode(json.dumps(envelope).encode()).decode()


@pytest.fixture
def sqs() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("sqs", region_name="us-east-1")


def make_queue(sqs: Any, name: str, *, max_receives: int = 2) -> tuple[str, str]:
    dlq = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    url = sqs.create_queue(
        QueueName=name,
        Attributes={
            "VisibilityTimeout": "900",
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": arn, "maxReceiveCount": str(max_receives)}
            ),
        },
    )["QueueUrl"]
    return url, dlq


def receive_count(sqs: Any, url: str) -> int:
    message = sqs.receive_message(
        QueueUrl=url, VisibilityTimeout=0, MessageSystemAttributeNames=["ApproximateReceiveCount"]
    )["Messages"][0]
    return int(message["Attributes"]["ApproximateReceiveCount"])


def test_kombu_names_and_the_queues_to_watch() -> None:
    assert entity_name("celery", "prod-") == "prod-celery"
    assert entity_name("reports.daily") == "reports-daily"
    assert entity_name("jobs.fifo") == "jobs.fifo"
    assert queue_names((), {}) == ("celery",)
    assert queue_names((), {"predefined_queues": {"b": {}, "a": {}}}) == ("a", "b")
    assert queue_names(("x", "x", "y"), {"predefined_queues": {"a": {}}}) == ("x", "y")


def test_celery_headers_read_only_the_envelope() -> None:
    assert celery_headers(celery_body("t1", "shop.report")) == ("t1", "shop.report")
    assert celery_headers(json.dumps({"headers": {"id": "t2", "task": "a"}})) == ("t2", "a")
    assert celery_headers("not a celery message") == (None, None)
    assert celery_headers(base64.b64encode(b"[1, 2]").decode()) == (None, None)


def test_attributes_are_read_and_a_waiting_message_is_never_received(sqs: Any) -> None:
    url, _ = make_queue(sqs, "celery")
    sqs.send_message(QueueUrl=url, MessageBody=celery_body("t1", "shop.report"))
    source = SqsQueues(sqs, ("celery",))
    for _ in range(3):
        view = source.read()
    (queue,) = view.queues
    assert (queue.name, queue.visible, queue.in_flight) == ("celery", 1, 0)
    assert queue.visibility_timeout_s == 900.0
    assert (queue.dead_letter_queue, queue.max_receive_count) == ("celery-dlq", 2)
    assert view.dead_letters == ()
    # three checks later the message was never received: this receive is its first
    assert receive_count(sqs, url) == 1
    # the queue URLs are kept: a later check asks only for attributes
    before = source.calls
    source.read()
    assert source.calls - before == 2  # the queue's and its dead-letter queue's attributes


def test_a_dead_letter_is_seen_and_stays_in_its_queue(sqs: Any) -> None:
    _, dlq = make_queue(sqs, "celery")
    sqs.send_message(QueueUrl=dlq, MessageBody=celery_body("t9", "shop.big"))
    source = SqsQueues(sqs, ("celery",))
    first = source.read()
    second = source.read()
    assert first.complete and second.complete
    (letter,) = second.dead_letters
    assert (letter.queue, letter.dead_letter_queue) == ("celery", "celery-dlq")
    assert (letter.task_id, letter.name) == ("t9", "shop.big")
    assert letter.receive_count is not None
    # looked at with a visibility timeout of 0: still there, visible, for a redrive
    attributes = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "1"
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_a_missing_queue_is_skipped_and_never_created(sqs: Any) -> None:
    url, _ = make_queue(sqs, "prod-celery")
    view = SqsQueues(sqs, ("celery", "absent"), prefix="prod-").read()
    assert [q.name for q in view.queues] == ["celery"]
    names = sorted(u.rsplit("/", 1)[-1] for u in sqs.list_queues()["QueueUrls"])
    assert names == ["prod-celery", "prod-celery-dlq"]
    predefined = SqsQueues(sqs, ("celery",), predefined={"celery": {"url": url}}).read()
    assert predefined.queues[0].dead_letter_queue == "prod-celery-dlq"


def test_a_check_on_sqs_says_what_cannot_be_seen_and_creates_no_queue(
    sqs: Any, tmp_path: Path
) -> None:
    url, dlq = make_queue(sqs, "celery")
    sqs.send_message(QueueUrl=url, MessageBody=celery_body("t1", "shop.report"))
    sqs.send_message(QueueUrl=dlq, MessageBody=celery_body("t9", "shop.big"))
    settings = from_env(
        {
            "OOMCHECK_BROKER_URL": "sqs://",
            "OOMCHECK_BROKER_TRANSPORT_OPTIONS": json.dumps({"region": "us-east-1"}),
            "OOMCHECK_STATE_FILE": str(tmp_path / "state.json"),
        }
    )
    assert settings.broker_transport == "sqs"
    deps = build_deps(settings, write=lambda _: None)
    for mode in (Mode.CHECK, Mode.CHECK, Mode.AUDIT):
        report = run_once(deps, mode)
    statuses = {k: str(v.state) for k, v in report.sources.items()}
    assert statuses["inspect"] == "off"
    assert "no remote control" in report.sources["inspect"].detail
    assert statuses["presence"] == "off"
    assert statuses["broker"] == "off"
    assert statuses["sqs"] == "ok"
    assert "source_unavailable" not in [f.kind.value for f in report.findings]
    dead = [f for f in report.findings if f.kind.value == "task_dead_lettered"]
    assert [t.id for f in dead for t in f.tasks] == ["t9"]
    assert report.queues is not None
    assert [(q["name"], q["messages"]) for q in report.queues] == [("celery", 1)]
    # no pidbox reply queue, nothing created; the waiting message was never received
    names = sorted(u.rsplit("/", 1)[-1] for u in sqs.list_queues()["QueueUrls"])
    assert names == ["celery", "celery-dlq"]
    assert receive_count(sqs, url) == 1
