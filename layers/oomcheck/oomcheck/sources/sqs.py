"""Celery's Amazon SQS queues, read with boto3 only: their attributes, and the messages of their
dead-letter queues looked at without being taken.

A live queue is never received from: a receive raises the message's receive count, and one
receive too many makes SQS move the message to the dead-letter queue. Only a dead-letter queue
that has no redrive policy of its own is received from, with a visibility timeout of 0 so that
the message stays visible to whoever moves it back.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from oomcheck.model import DeadLetter, SqsQueue, SqsView

# kombu's SQS transport: a queue named "celery" is the SQS queue "<prefix>celery"; dots become
# dashes and anything else SQS refuses becomes an underscore (kombu.transport.SQS.entity_name).
_NOT_ALLOWED = re.compile(r"[^a-zA-Z0-9_-]")
_ATTRIBUTES = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "VisibilityTimeout",
    "RedrivePolicy",
)
# Receives of 10 messages per dead-letter queue and run: a bound on what one check costs.
MAX_DLQ_BATCHES = 5
DEFAULT_QUEUE = "celery"


def entity_name(name: str, prefix: str = "") -> str:
    """The SQS queue name kombu gives Celery's queue ``name``."""
    fifo = name.endswith(".fifo")
    base = name.removesuffix(".fifo") if fifo else name
    return prefix + _NOT_ALLOWED.sub("_", base.replace(".", "-")) + (".fifo" if fifo else "")


def queue_names(configured: Sequence[str], options: Mapping[str, Any]) -> tuple[str, ...]:
    """Celery's queues to watch: OOMCHECK_QUEUES, else the predefined queues, else "celery"."""
    if configured:
        return tuple(dict.fromkeys(configured))
    predefined = options.get("predefined_queues")
    if isinstance(predefined, Mapping) and predefined:
        return tuple(sorted(str(name) for name in predefined))
    return (DEFAULT_QUEUE,)


def celery_headers(body: str) -> tuple[str | None, str | None]:
    """(task id, task name) of a Celery message as kombu puts it on SQS: base64 of the JSON
    envelope (or the JSON itself without ``sqs_base64_encoding``); (None, None) otherwise. Only
    the envelope's headers are read: the task's arguments are never decoded."""
    text = body.strip()
    if not text.startswith("{"):
        try:
            text = base64.b64decode(text, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return None, None
    try:
        envelope = json.loads(text)
    except ValueError:
        return None, None
    headers = envelope.get("headers") if isinstance(envelope, dict) else None
    if not isinstance(headers, dict):
        return None, None
    task_id, name = headers.get("id"), headers.get("task")
    return (
        task_id if isinstance(task_id, str) else None,
        name if isinstance(name, str) else None,
    )


@dataclass
class SqsQueues:
    """GetQueueUrl once per queue (kept for the process), then per run one GetQueueAttributes
    per queue and per dead-letter queue, and receives only from non-empty dead-letter queues."""

    client: Any  # a boto3 SQS client
    names: tuple[str, ...]
    prefix: str = ""
    predefined: Mapping[str, Any] = field(default_factory=dict)
    urls: dict[str, str | None] = field(default_factory=dict)
    calls: int = 0

    def read(self) -> SqsView:
        queues: list[SqsQueue] = []
        dead: list[DeadLetter] = []
        complete = True
        for name in self.names:
            url = self._url(name, self._predefined_url(name))
            if url is None:
                continue
            attributes = self._attributes(url)
            dlq_arn, max_receives = _redrive(attributes.get("RedrivePolicy"))
            dlq_name = dlq_arn.rsplit(":", 1)[-1] if dlq_arn else None
            queues.append(
                SqsQueue(
                    name=name,
                    visible=int(attributes.get("ApproximateNumberOfMessages", 0)),
                    in_flight=int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
                    visibility_timeout_s=float(attributes.get("VisibilityTimeout", 30)),
                    dead_letter_queue=dlq_name,
                    max_receive_count=max_receives,
                )
            )
            if dlq_arn and dlq_name:
                found, whole = self._dead_letters(name, dlq_arn, dlq_name)
                dead.extend(found)
                complete = complete and whole
        return SqsView(tuple(queues), tuple(dead), complete)

    def describe(self) -> str:
        return f"sqs: {len(self.names)} queue(s)"

    def _predefined_url(self, name: str) -> str | None:
        entry = self.predefined.get(name)
        url = entry.get("url") if isinstance(entry, Mapping) else None
        return url if isinstance(url, str) and url else None

    def _url(self, name: str, known: str | None, owner: str | None = None) -> str | None:
        if known is not None:
            return known
        key = f"{owner or ''}/{name}"
        if key not in self.urls:
            sqs_name = name if owner else entity_name(name, self.prefix)
            extra = {"QueueOwnerAWSAccountId": owner} if owner else {}
            self.calls += 1
            try:
                self.urls[key] = self.client.get_queue_url(QueueName=sqs_name, **extra)["QueueUrl"]
            except self.client.exceptions.QueueDoesNotExist:
                # not created yet (kombu creates a queue when a worker first declares it):
                # asked again next run, and nothing here creates it
                return None
        return self.urls[key]

    def _attributes(self, url: str) -> dict[str, str]:
        self.calls += 1
        reply = self.client.get_queue_attributes(QueueUrl=url, AttributeNames=list(_ATTRIBUTES))
        return dict(reply.get("Attributes", {}))

    def _dead_letters(
        self, queue: str, dlq_arn: str, dlq_name: str
    ) -> tuple[list[DeadLetter], bool]:
        parts = dlq_arn.split(":")
        owner = parts[4] if len(parts) > 5 and parts[4] else None
        url = self._url(dlq_name, None, owner or "-")
        if url is None:
            return [], True
        attributes = self._attributes(url)
        waiting = int(attributes.get("ApproximateNumberOfMessages", 0))
        if waiting == 0:
            return [], True
        if attributes.get("RedrivePolicy"):
            # a receive here could move its messages on: counted, never looked at
            return [], False
        seen: dict[str, DeadLetter] = {}
        for _ in range(MAX_DLQ_BATCHES):
            self.calls += 1
            reply = self.client.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=10,
                VisibilityTimeout=0,
                WaitTimeSeconds=0,
                MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
            )
            fresh = [m for m in reply.get("Messages", ()) if m["MessageId"] not in seen]
            for message in fresh:
                seen[message["MessageId"]] = _dead_letter(queue, dlq_name, message)
            if not fresh or len(seen) >= waiting:
                break
        return list(seen.values()), len(seen) >= waiting


def _dead_letter(queue: str, dlq: str, message: Mapping[str, Any]) -> DeadLetter:
    task_id, name = celery_headers(str(message.get("Body", "")))
    system = message.get("Attributes", {})
    count = system.get("ApproximateReceiveCount")
    sent = system.get("SentTimestamp")
    return DeadLetter(
        queue=queue,
        dead_letter_queue=dlq,
        message_id=str(message["MessageId"]),
        task_id=task_id,
        name=name,
        receive_count=int(count) if count is not None else None,
        sent_at=int(sent) / 1000.0 if sent is not None else None,
    )


def _redrive(policy: str | None) -> tuple[str | None, int | None]:
    if not policy:
        return None, None
    try:
        parsed = json.loads(policy)
    except ValueError:
        return None, None
    arn = parsed.get("deadLetterTargetArn") if isinstance(parsed, dict) else None
    count = parsed.get("maxReceiveCount") if isinstance(parsed, dict) else None
    try:
        receives = int(count) if count is not None else None
    except (TypeError, ValueError):
        receives = None
    return (arn if isinstance(arn, str) else None), receives
