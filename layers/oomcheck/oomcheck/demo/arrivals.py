"""Invocation events as AWS delivers them to the function, for the demo, the tests and the bench:
an SQS batch of EventBridge events (an EventBridge rule with an SQS target, read by an event
source mapping) and a CloudWatch Logs subscription payload (base64 of gzip of JSON)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:oomcheck-ecs-events"


def sqs_record(body: str, *, sent_at: float, receive_count: int = 1) -> dict[str, Any]:
    """One SQS record as the event source mapping hands it over. The message id is derived
    from the body and the receive count, so a redelivery of a body is a new message id only
    when SQS would give one (a second send)."""
    digest = hashlib.sha256(f"{body}#{sent_at}".encode()).hexdigest()
    return {
        "messageId": str(uuid.UUID(digest[:32])),
        "receiptHandle": base64.b64encode(digest.encode()).decode(),
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": str(receive_count),
            "SentTimestamp": str(round(sent_at * 1000)),
            "SenderId": "AIDAIENQZJOLO23YVJ4VO",
            "ApproximateFirstReceiveTimestamp": str(round(sent_at * 1000) + 5),
        },
        "messageAttributes": {},
        "md5OfBody": hashlib.md5(body.encode(), usedforsecurity=False).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": QUEUE_ARN,
        "awsRegion": "us-east-1",
    }


def sqs_batch(events: Iterable[dict[str, Any]], *, sent_at: float) -> dict[str, Any]:
    """An SQS event whose records carry ``events`` (EventBridge events) as their bodies."""
    return {
        "Records": [
            sqs_record(json.dumps(e, separators=(",", ":")), sent_at=sent_at + i / 1000)
            for i, e in enumerate(events)
        ]
    }


def subscription_payload(
    log_group: str,
    log_stream: str,
    messages: Sequence[tuple[float, str]],
    *,
    filter_name: str = "oomcheck",
) -> dict[str, Any]:
    """The event a CloudWatch Logs subscription filter invokes a function with: ``messages``
    are (time in seconds, message) pairs of one log stream."""
    data = {
        "messageType": "DATA_MESSAGE",
        "owner": "123456789012",
        "logGroup": log_group,
        "logStream": log_stream,
        "subscriptionFilters": [filter_name],
        "logEvents": [
            {
                "id": str(int(hashlib.sha256(f"{at}{m}".encode()).hexdigest()[:16], 16)),
                "timestamp": round(at * 1000),
                "message": m,
            }
            for at, m in messages
        ],
    }
    return {"awslogs": {"data": pack(data)}}


def pack(value: object) -> str:
    return base64.b64encode(gzip.compress(json.dumps(value).encode())).decode()
