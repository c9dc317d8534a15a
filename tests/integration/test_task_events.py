"""A real worker death, its victims as task events on an EventBridge bus (a moto server), read
back the way an application would: a rule on the bus whose target is an SQS queue."""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import redis

from oomcheck.alerting.taskevents import DETAIL_TYPE, EventBridgeTaskEvents
from oomcheck.model import Kind, Verdict
from tests.awsfaults import serial_moto
from tests.integration.conftest import Fleet

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    with serial_moto() as endpoint:
        yield endpoint


def _bus_to_queue(endpoint: str) -> tuple[Any, Any, str, str]:
    events = boto3.client("events", endpoint_url=endpoint, region_name="us-east-1")
    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")
    name = f"app-{uuid.uuid4().hex[:8]}"  # one bus, rule and queue per test: parallel-safe
    events.create_event_bus(Name=name)
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events.put_rule(
        Name=name,
        EventBusName=name,
        EventPattern=json.dumps({"source": ["oomcheck"], "detail-type": [DETAIL_TYPE]}),
    )
    events.put_targets(Rule=name, EventBusName=name, Targets=[{"Id": "app", "Arn": arn}])
    return events, sqs, name, str(url)


def _received(sqs: Any, url: str) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    for _ in range(20):  # bounded
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not batch:
            break
        for message in batch:
            got.append(json.loads(message["Body"])["detail"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return got


def _restore_unacked(broker_url: str) -> int:
    """What the broker does once the visibility timeout passes, done now: each unacked message
    goes back to its queue, as kombu's QoS.restore_by_tag moves it (the hash, the index, the
    list)."""
    client = redis.Redis.from_url(broker_url)
    try:
        tags = [t.decode() for t in client.hkeys("unacked")]
        for tag in tags:
            raw = client.hget("unacked", tag)
            assert raw is not None
            message, _exchange, routing_key = json.loads(raw)
            with client.pipeline() as pipe:
                pipe.hdel("unacked", tag)
                pipe.zrem("unacked_index", tag)
                pipe.lpush(routing_key or "celery", json.dumps(message))
                pipe.execute()
        return len(tags)
    finally:
        client.close()


def test_three_victims_give_three_task_events_and_a_redelivery_one_more(fleet: Fleet, moto):
    events, sqs, bus, url = _bus_to_queue(moto)
    fleet.deps.task_events = EventBridgeTaskEvents(bus, client=events)
    # Given a worker running two plain tasks and one acks_late task
    worker = fleet.start("victims@oomcheck-test", concurrency=3)
    plain = [fleet.send("demo.sleepy", 120) for _ in range(2)]
    late = fleet.send("demo.sleepy_late", 120)
    fleet.wait_started(*plain, late)
    assert fleet.check().exit_code == 0
    # When the whole worker is SIGKILLed
    worker.kill(signal.SIGKILL)
    worker.wait()
    report = fleet.check()
    # Then three task events arrive, with the finding's verdicts
    lost = next(f for f in report.findings if f.kind is Kind.WORKER_LOST)
    got = _received(sqs, url)
    assert sorted((e["task_id"], e["verdict"]) for e in got) == sorted(
        (t.id, t.verdict.value) for t in lost.tasks
    )
    verdicts = {e["task_id"]: e["verdict"] for e in got}
    assert verdicts == {plain[0]: "lost", plain[1]: "lost", late: "awaiting_redelivery"}
    assert all(e["incident_id"] == lost.incident_id for e in got)
    assert all(e["worker"] == "victims@oomcheck-test" and e["task_name"] for e in got)
    [awaiting] = [e for e in got if e["task_id"] == late]
    assert awaiting["redeliver_at"] and awaiting["queue"] == fleet.queue
    assert report.stats["task_events_sent"] == 3 and report.stats["task_event_calls"] == 1
    # When nothing changes, nothing more is sent
    fleet.check()
    assert _received(sqs, url) == []
    # When the broker gives the acks_late message back to its queue
    assert _restore_unacked(fleet.broker) == 1
    after = fleet.check()
    # Then that task, and only it, gets one more event
    [again] = _received(sqs, url)
    assert again["task_id"] == late and again["verdict"] == Verdict.REDELIVERED.value
    assert again["dedup_key"] == f"{lost.incident_id}:{late}:redelivered"
    assert after.stats["task_events_sent"] == 1
