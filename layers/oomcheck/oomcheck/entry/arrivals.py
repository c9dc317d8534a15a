"""Events that announce a death and start a check with the evidence in hand. Pure.

Three shapes reach the function besides schedules and manual invokes:

- ``sqs``: a batch of SQS records, each body an EventBridge event (the "ECS Task State Change"
  rule's second target is the queue); the record's ``messageId`` is what a partial batch
  response hands back when the run could not use it;
- ``eventbridge``: one EventBridge event invoked directly (``sam local invoke -e``, tests);
- ``logs``: a CloudWatch Logs subscription payload (base64 of gzip of JSON) from a log group of
  kernel lines or Container Insights records.

Each is read with the Powertools event class for it, and every message goes through the same
parsers (oomcheck.exitparse) as the log-group read: the evidence gets the same ``event_id`` it
gets when a scheduled run reads it back from the log group later, so the state's processed
events keep it from counting twice. A record that is malformed, hostile (too large, nested too
deep, a gzip bomb) or foreign (another event type) is dropped with a one-line reason and never
fails the batch: retrying it would fail again.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from oomcheck.exitparse import Format, Parsed, parse_ecs_event, parse_message
from oomcheck.model import ExitEvidence, MemorySample, Observation
from oomcheck.safejson import loads

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

ECS_DETAIL_TYPE = "ECS Task State Change"
# A subscription payload holds at most one PutLogEvents batch (1 MiB of messages); a payload
# that inflates far beyond that is not CloudWatch's.
MAX_INFLATED_BYTES = 4 * 1024 * 1024
# The base64 text of a payload larger than a synchronous Lambda invocation (6 MB) is not one.
MAX_PAYLOAD_CHARS = 8 * 1024 * 1024
# PutLogEvents takes at most 10,000 events per batch.
MAX_LOG_EVENTS = 10_000
# An SQS message is at most 256 KiB.
MAX_BODY_CHARS = 256 * 1024
MAX_DROPPED_LINES = 20


class Shape(StrEnum):
    SQS = "sqs"
    EVENTBRIDGE = "eventbridge"
    LOGS = "logs"


@dataclass(frozen=True, slots=True)
class Arrival:
    """What the events of one invocation said. ``items``: the SQS message ids of the records
    that were read (handed back as failures when the run cannot use them); ``dropped``: one
    line per record that was dropped and why; ``skipped``: malformed parts (as ExitRead counts
    them); ``ignored``: well-formed events that say nothing of a death (a task still running)."""

    shape: Shape
    evidence: tuple[ExitEvidence, ...] = ()
    memory: tuple[MemorySample, ...] = ()
    items: tuple[str, ...] = ()
    events: int = 0
    skipped: int = 0
    ignored: int = 0
    dropped: tuple[str, ...] = ()

    def counters(self) -> dict[str, int]:
        return {
            "arrived_events": self.events,
            "arrived_evidence": len(self.evidence),
            "arrived_skipped": self.skipped,
        }


def parse_arrival(event: Mapping[str, Any], *, containers: Sequence[str] = ()) -> Arrival | None:
    """The evidence the events of an invocation carry, or None when the invocation is no arrival
    (a schedule or a manual invoke); never raises on bad input (see the module docstring).
    ``containers``: glob patterns of the container names that count (empty: all)."""
    shape = _shape_of(event)
    if shape is None:
        return None
    acc = _Accumulator(containers)
    if shape is Shape.SQS:
        _read_sqs(event, acc)
    elif shape is Shape.LOGS:
        _read_logs(event, acc)
    else:
        acc.event(dict(event), None, "the event")
    return acc.arrival(shape)


def _shape_of(event: Mapping[str, Any]) -> Shape | None:
    records = event.get("Records")
    if isinstance(records, list) and records:
        first = records[0]
        if isinstance(first, Mapping) and first.get("eventSource") == "aws:sqs":
            return Shape.SQS
    if "awslogs" in event:
        return Shape.LOGS
    if event.get("detail-type") == ECS_DETAIL_TYPE:
        return Shape.EVENTBRIDGE
    return None


def merged(observation: Observation, arrival: Arrival) -> Observation:
    """The observation with the arrived evidence and memory samples in it. The copy read from
    the log group stands when both have an event (the ids are the same); a log read that failed
    (None) still gets the arrived evidence: it is known, whatever CloudWatch said."""
    if not arrival.evidence and not arrival.memory:
        return observation
    exits = _union(observation.exits or (), arrival.evidence)
    memory = (
        _union(observation.memory or (), arrival.memory) if arrival.memory else observation.memory
    )
    return replace(observation, exits=exits, memory=memory)


def _union(read: Sequence[Any], arrived: Sequence[Any]) -> tuple[Any, ...]:
    by_id = {item.event_id: item for item in arrived}
    by_id.update({item.event_id: item for item in read})
    return tuple(sorted(by_id.values(), key=lambda e: (e.at, e.event_id)))


@dataclass
class _Accumulator:
    containers: Sequence[str]
    evidence: dict[str, ExitEvidence] = field(default_factory=dict)
    memory: dict[str, MemorySample] = field(default_factory=dict)
    items: list[str] = field(default_factory=list)
    events: int = 0
    skipped: int = 0
    ignored: int = 0
    dropped: list[str] = field(default_factory=list)

    def drop(self, where: str, why: str) -> None:
        self.skipped += 1
        if len(self.dropped) < MAX_DROPPED_LINES:
            self.dropped.append(f"{where}: {why}; dropped")

    def add(self, parsed: Parsed, where: str) -> None:
        if parsed.format == Format.MALFORMED:
            self.drop(where, "malformed (not JSON, too long or nested too deep)")
            return
        self.skipped += parsed.skipped
        if parsed.format == Format.OTHER or not (parsed.evidence or parsed.memory):
            self.ignored += 1
        for item in parsed.evidence:
            # a duplicate delivery within the batch: the first copy stands
            self.evidence.setdefault(item.event_id, item)
        for sample in parsed.memory:
            self.memory.setdefault(sample.event_id, sample)

    def event(self, value: object, timestamp: float | None, where: str) -> bool:
        """One EventBridge event (already decoded); False when it was dropped."""
        from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent

        self.events += 1
        if not isinstance(value, dict):
            self.drop(where, "not a JSON object")
            return False
        detail_type = EventBridgeEvent(value).get("detail-type")
        if detail_type != ECS_DETAIL_TYPE:
            self.drop(where, f"not an {ECS_DETAIL_TYPE} event ({_show(detail_type)})")
            return False
        parsed = parse_ecs_event(value, timestamp=timestamp, containers=self.containers)
        self.add(parsed, where)
        return parsed.format != Format.MALFORMED

    def arrival(self, shape: Shape) -> Arrival:
        return Arrival(
            shape=shape,
            evidence=tuple(sorted(self.evidence.values(), key=lambda e: (e.at, e.event_id))),
            memory=tuple(sorted(self.memory.values(), key=lambda m: (m.at, m.event_id))),
            items=tuple(self.items),
            events=self.events,
            skipped=self.skipped,
            ignored=self.ignored,
            dropped=tuple(self.dropped),
        )


def _read_sqs(event: Mapping[str, Any], acc: _Accumulator) -> None:
    from aws_lambda_powertools.utilities.data_classes import SQSEvent

    for index, record in enumerate(SQSEvent(dict(event)).records):
        where = f"SQS record {index}"
        if not isinstance(record.raw_event, dict) or not isinstance(record.get("messageId"), str):
            acc.events += 1
            acc.drop(where, "no messageId")
            continue
        where = f"SQS message {_show(record.message_id)}"
        body = record.get("body")
        if not isinstance(body, str) or len(body) > MAX_BODY_CHARS:
            acc.events += 1
            acc.drop(where, "body missing or larger than an SQS message")
            continue
        try:
            value = loads(body)
        except ValueError:
            acc.events += 1
            acc.drop(where, "body is not JSON (or nested too deep)")
            continue
        if acc.event(value, _sent_at(record), where):
            acc.items.append(record.message_id)


def _sent_at(record: SQSRecord) -> float | None:
    try:
        raw = record.attributes.sent_timestamp
    except (KeyError, TypeError):  # no attributes, or not an object
        return None
    if isinstance(raw, str) and raw.isdigit() and len(raw) <= 16:
        return int(raw) / 1000.0
    return None


def _read_logs(event: Mapping[str, Any], acc: _Accumulator) -> None:
    from aws_lambda_powertools.utilities.data_classes import CloudWatchLogsEvent
    from aws_lambda_powertools.utilities.data_classes.cloud_watch_logs_event import (
        CloudWatchLogsDecodedData,
    )

    where = "CloudWatch Logs payload"
    awslogs = event.get("awslogs")
    data = awslogs.get("data") if isinstance(awslogs, Mapping) else None
    if not isinstance(data, str):
        acc.events += 1
        acc.drop(where, "no awslogs.data")
        return
    # Powertools' own decompress_logs_data inflates without a bound: a gzip bomb would take
    # the memory of the function, so the payload is inflated here, at most MAX_INFLATED_BYTES.
    text = _inflate(CloudWatchLogsEvent(dict(event)).raw_logs_data)
    value: object = None
    if text is not None:
        try:
            value = loads(text)
        except ValueError:
            value = None
    if not isinstance(value, dict):
        acc.events += 1
        acc.drop(where, "not base64 of gzip of a JSON object, or larger than a log batch")
        return
    decoded = CloudWatchLogsDecodedData(value)
    if decoded.get("messageType") == "CONTROL_MESSAGE":
        return  # CloudWatch's reachability probe: nothing to read
    group = decoded.get("logGroup")
    stream = decoded.get("logStream")
    log_events = decoded.get("logEvents")
    if decoded.get("messageType") != "DATA_MESSAGE" or not isinstance(log_events, list):
        acc.events += 1
        acc.drop(where, f"not a DATA_MESSAGE with logEvents (from {_show(group)})")
        return
    for index, item in enumerate(log_events[:MAX_LOG_EVENTS]):
        acc.events += 1
        _log_event(item, stream if isinstance(stream, str) else None, acc, f"{where} #{index}")
    for _ in log_events[MAX_LOG_EVENTS:]:
        acc.events += 1
        acc.skipped += 1


def _log_event(item: object, stream: str | None, acc: _Accumulator, where: str) -> None:
    message = item.get("message") if isinstance(item, Mapping) else None
    raw_ts = item.get("timestamp") if isinstance(item, Mapping) else None
    if not isinstance(message, str):
        acc.drop(where, "no message")
        return
    timestamp = (
        raw_ts / 1000.0
        if isinstance(raw_ts, int | float) and not isinstance(raw_ts, bool)
        else None
    )
    acc.add(
        parse_message(message, timestamp=timestamp, stream=stream, containers=acc.containers),
        where,
    )


def _inflate(data: str) -> str | None:
    if len(data) > MAX_PAYLOAD_CHARS:
        return None
    try:
        packed = base64.b64decode(data, validate=True)
        inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header
        raw = inflater.decompress(packed, MAX_INFLATED_BYTES)
        if inflater.unconsumed_tail:
            return None
        return raw.decode("utf-8")
    except (binascii.Error, ValueError, zlib.error, UnicodeDecodeError):
        return None


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
