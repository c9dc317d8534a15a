"""Events that start a check: SQS batches of ECS events, direct EventBridge events and
CloudWatch Logs subscription payloads, parsed into the same evidence a log-group read gives."""

from __future__ import annotations

import base64
import gzip
import json
import zlib
from dataclasses import replace
from pathlib import Path

import pytest

from oomcheck.demo.arrivals import pack, sqs_batch, sqs_record, subscription_payload
from oomcheck.entry.arrivals import Arrival, Shape, merged, parse_arrival
from oomcheck.entry.invocation import parse_invocation
from oomcheck.exitparse import parse_message
from oomcheck.model import Cause, Observation

EVENTS = Path(__file__).resolve().parents[2] / "events"
SENT_AT = 1_764_000_000.0


def _event(name: str) -> dict:
    return json.loads((EVENTS / name).read_text())


def _arrive(event: dict, shape: Shape, containers: tuple[str, ...] = ()) -> Arrival:
    arrival = parse_arrival(event, containers=containers)
    assert arrival is not None and arrival.shape is shape
    return arrival


def _log_read(event: dict) -> list:
    """What the log-group path makes of the same event (the EventBridge rule's log target)."""
    evidence = parse_message(json.dumps(event), timestamp=SENT_AT).evidence
    return sorted(evidence, key=lambda e: (e.at, e.event_id))


@pytest.mark.parametrize(
    ("event", "shape"),
    [
        pytest.param(sqs_batch([_event("ecs-task-stopped-oom.json")], sent_at=1.0), Shape.SQS),
        pytest.param(_event("ecs-task-stopped-oom.json"), Shape.EVENTBRIDGE, id="eventbridge"),
        pytest.param(subscription_payload("/k", "ip-10-0-1-5", [(1.0, "x")]), Shape.LOGS),
        pytest.param({"mode": "check"}, None, id="manual"),
        pytest.param(_event("scheduled-eventbridge.json"), None, id="schedule"),
    ],
)
def test_the_shape_of_each_invocation(event, shape):
    arrival = parse_arrival(event)
    assert (None if arrival is None else arrival.shape) == shape
    invocation = parse_invocation(event)
    assert invocation.mode == "check" and invocation.arrival == arrival


@pytest.mark.parametrize(
    "name",
    [
        "ecs-task-stopped-oom.json",
        "ecs-task-stopped-sigkill.json",
        "ecs-task-stopped-error.json",
        "ecs-task-stopped-clean.json",
    ],
)
def test_an_sqs_event_gives_the_evidence_the_log_group_gives_later(name):
    event = _event(name)
    arrival = _arrive(sqs_batch([event], sent_at=SENT_AT), Shape.SQS)
    # the same ids: the state's processed events keep the log group's copy from counting again
    assert arrival.evidence == tuple(_log_read(event))
    assert arrival.evidence  # every sample stops at least one container
    assert len(arrival.items) == 1 and arrival.dropped == ()


def test_an_oom_event_says_oom_killed_and_names_the_task_address():
    event = _event("ecs-task-stopped-oom.json")
    arrival = _arrive(event, Shape.EVENTBRIDGE, containers=("worker",))
    [evidence] = arrival.evidence
    assert evidence.cause == Cause.OOM_KILLED and evidence.exit_code == 137
    assert "10.0.1.5" in evidence.hosts and not evidence.clean


def test_sidecars_are_left_out_by_the_container_patterns():
    event = _event("ecs-task-stopped-oom.json")
    arrival = _arrive(event, Shape.EVENTBRIDGE, containers=("log_*",))
    assert [e.process for e in arrival.evidence] == ["log_router"]
    assert _arrive(event, Shape.EVENTBRIDGE, containers=("celery-*",)).evidence == ()


def test_the_same_event_twice_in_a_batch_is_one_piece_of_evidence():
    event = _event("ecs-task-stopped-oom.json")
    batch = sqs_batch([event, event], sent_at=SENT_AT)
    arrival = _arrive(batch, Shape.SQS)
    assert arrival.evidence == _arrive(event, Shape.EVENTBRIDGE).evidence
    assert len(arrival.items) == 2


def test_bad_records_are_dropped_with_a_reason_and_the_rest_is_read():
    good = _event("ecs-task-stopped-oom.json")
    deep = "[" * 10_000 + "]" * 10_000
    batch = {
        "Records": [
            sqs_record("not json at all", sent_at=SENT_AT),
            sqs_record(json.dumps({"detail-type": "EC2 Instance State-change"}), sent_at=SENT_AT),
            sqs_record(deep, sent_at=SENT_AT),
            sqs_record("x" * 300_000, sent_at=SENT_AT),
            {"eventSource": "aws:sqs", "body": "{}"},
            sqs_record(json.dumps(good), sent_at=SENT_AT),
        ]
    }
    arrival = _arrive(batch, Shape.SQS)
    assert arrival.evidence == _arrive(good, Shape.EVENTBRIDGE).evidence
    assert arrival.items == (batch["Records"][5]["messageId"],)  # only what can be retried
    assert len(arrival.dropped) == 5 and arrival.skipped == 5
    assert all("\n" not in line and line.endswith("dropped") for line in arrival.dropped)
    assert "not JSON" in arrival.dropped[0]
    assert "EC2 Instance State-change" in arrival.dropped[1]


def test_a_kernel_line_from_a_subscription_is_the_evidence_the_log_group_gives():
    lines = (EVENTS / "kernel-oom.log").read_text().splitlines()
    [line] = [x for x in lines if "Killed process 4321 (" in x]
    payload = subscription_payload("/ec2/kernel", "ip-10-0-1-5", [(SENT_AT, line)])
    arrival = _arrive(payload, Shape.LOGS)
    wanted = parse_message(line, timestamp=SENT_AT, stream="ip-10-0-1-5").evidence
    assert arrival.evidence == wanted and arrival.evidence[0].pid == 4321
    assert arrival.items == ()


def test_container_insights_records_give_memory_samples():
    record = json.dumps(_event("ecs-container-insights-memory.json")[0])
    payload = subscription_payload("/aws/ecs/containerinsights/c/performance", "s", [(1.0, record)])
    arrival = _arrive(payload, Shape.LOGS)
    assert len(arrival.memory) == 1 and arrival.evidence == ()


def test_a_control_message_is_nothing():
    payload = {"awslogs": {"data": pack({"messageType": "CONTROL_MESSAGE", "logEvents": []})}}
    arrival = _arrive(payload, Shape.LOGS)
    assert arrival == Arrival(Shape.LOGS)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param("%%% not base64", id="not-base64"),
        pytest.param(base64.b64encode(b"plain text").decode(), id="not-gzip"),
        pytest.param(base64.b64encode(gzip.compress(b"[1, 2]")).decode(), id="not-an-object"),
        pytest.param(
            base64.b64encode(zlib.compress(b"{" + b" " * (64 * 1024 * 1024), 9)).decode(),
            id="gzip-bomb",
        ),
        pytest.param(pack({"messageType": "DATA_MESSAGE", "logEvents": "x"}), id="no-list"),
    ],
)
def test_a_hostile_logs_payload_is_dropped_with_one_line(data):
    arrival = _arrive({"awslogs": {"data": data}}, Shape.LOGS)
    assert arrival.evidence == () and arrival.skipped == 1
    [line] = arrival.dropped
    assert "\n" not in line and len(line) < 200


def test_arrived_evidence_joins_the_log_read_and_the_log_copy_stands():
    event = _event("ecs-task-stopped-oom.json")
    read = _log_read(event)[0]
    arrival = _arrive(event, Shape.EVENTBRIDGE)
    arrived = arrival.evidence[0]
    other = replace(arrived, event_id="kernel:x:1:abc", at=arrived.at - 5)
    observation = Observation(at=SENT_AT, workers={}, exits=(read,))
    both = merged(observation, replace(arrival, evidence=(arrived, other)))
    assert both.exits == (other, read) and both.exits[1] is read
    # a log read that failed (None) still gets what arrived
    assert merged(replace(observation, exits=None), arrival).exits == arrival.evidence
    assert merged(observation, Arrival(Shape.SQS)) is observation
