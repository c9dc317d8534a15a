"""Lambda events read once, at the edge, into one Invocation: every malformed field is a
one-line error naming it, and every sample in events/ is the invocation it is meant to be."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from oomcheck.demo.arrivals import sqs_batch, sqs_record, subscription_payload
from oomcheck.entry.arrivals import Shape
from oomcheck.entry.invocation import InvocationError, parse_invocation
from oomcheck.model import Cause

EVENTS = Path(__file__).resolve().parents[2] / "events"


@pytest.mark.parametrize(
    ("event", "mode", "duration"),
    [
        (None, "check", 0.0),
        (
            {
                "detail-type": "Scheduled Event",
                "source": "aws.events",
                "time": "2026-11-24T10:00:00Z",
                "id": "1",
                "detail": {},
                "region": "us-east-1",
                "resources": [],
                "account": "1",
                "version": "0",
            },
            "check",
            0.0,
        ),
        ({"mode": "check", "scheduled_time": "2026-11-24T10:00:00Z"}, "check", 0.0),
        ({"mode": "audit"}, "audit", 0.0),
        ({"mode": "watch"}, "watch", 50.0),
        ({"mode": "watch", "duration_s": "20"}, "watch", 20.0),
    ],
)
def test_invocations(event, mode, duration):
    invocation = parse_invocation(event)
    assert (invocation.mode, invocation.duration_s) == (mode, duration)


@pytest.mark.parametrize(
    "event",
    [
        [1],
        {"mode": "delete-everything"},
        {"mode": "watch", "duration_s": 5000},
        {"mode": "watch", "duration_s": True},
        {"mode": "watch", "duration_s": "soon"},
    ],
)
def test_bad_invocations_are_refused(event):
    with pytest.raises(InvocationError):
        parse_invocation(event)


@pytest.mark.parametrize(
    ("event", "wanted"),
    [
        ({"mode": "watch", "interval_s": float("nan")}, "interval_s must be a finite number"),
        ({"mode": "watch", "interval_s": "NaN"}, "interval_s must be a finite number"),
        ({"mode": "watch", "duration_s": float("nan")}, "duration_s must be a finite number"),
        ({"mode": "watch", "duration_s": float("inf")}, "duration_s must be a finite number"),
        ({"mode": "watch", "interval_s": 0}, "interval_s must be from 0.1 to 900"),
        ({"mode": "watch", "interval_s": 1e9}, "interval_s must be from 0.1 to 900"),
        ({"mode": "watch", "interval_s": -1}, "interval_s must not be negative"),
        ({"mode": "watch", "duration_s": [1]}, "duration_s must be a number of seconds"),
        ({"mode": ["check"]}, "unknown mode ['check']"),
        ({"mode": "check", "scheduled_time": 5}, "'scheduled_time' as an ISO-8601"),
        (
            {"detail-type": "Scheduled Event", "source": "aws.events", "detail": {}},
            "a scheduled event needs 'time'",
        ),
        ({"detail-type": "Scheduled Event", "time": ""}, "a scheduled event needs 'time'"),
    ],
)
def test_malformed_events_are_one_line_errors(event, wanted):
    with pytest.raises(InvocationError) as info:
        parse_invocation(event)
    assert wanted in str(info.value)
    assert "\n" not in str(info.value)


def test_a_huge_mode_is_not_echoed_whole():
    with pytest.raises(InvocationError) as info:
        parse_invocation({"mode": "x" * 100_000})
    assert len(str(info.value)) < 200


def test_a_watch_event_parsed_from_json_with_nan_is_refused():
    # Lambda's runtime parses events with Python's json, which reads a bare NaN
    event = json.loads('{"mode": "watch", "duration_s": 50, "interval_s": NaN}')
    with pytest.raises(InvocationError, match="interval_s"):
        parse_invocation(event)


def test_interval_null_means_the_configured_one():
    assert parse_invocation({"mode": "watch", "interval_s": None}).interval_s is None
    assert parse_invocation({"mode": "watch", "interval_s": "2.5"}).interval_s == 2.5


@dataclass(frozen=True)
class Sample:
    """What an events/ file is as an invocation: its mode, and for a check that events start,
    the arrival's shape, the (cause, exit code) of each piece of evidence and the memory
    samples. ``records``: the file holds CloudWatch log records (a JSON list, or lines), which
    reach the function inside a CloudWatch Logs subscription payload."""

    mode: str
    shape: Shape | None = None
    evidence: tuple[tuple[Cause, int | None], ...] = ()
    memory: int = 0
    scheduled_time: str | None = None
    duration_s: float = 0.0
    records: bool = False


TICK = "2026-11-24T14:00:00Z"
OOM = (Cause.OOM_KILLED, 137)
SAMPLES = {
    "audit.json": Sample("audit"),
    "scheduled.json": Sample("check", scheduled_time=TICK),
    "scheduled-eventbridge.json": Sample("check", scheduled_time=TICK),
    "watch.json": Sample("watch", scheduled_time=TICK, duration_s=50.0),
    "digest.json": Sample("digest"),
    "ecs-task-stopped-clean.json": Sample("check", Shape.EVENTBRIDGE, ((Cause.EXITED, 0),)),
    "ecs-task-stopped-error.json": Sample("check", Shape.EVENTBRIDGE, ((Cause.EXITED, 1),)),
    # the log router sidecar exits 0 when the worker is OOM-killed
    "ecs-task-stopped-oom.json": Sample("check", Shape.EVENTBRIDGE, ((Cause.EXITED, 0), OOM)),
    "ecs-task-stopped-sigkill.json": Sample("check", Shape.EVENTBRIDGE, ((Cause.KILLED, 137),)),
    "ecs-container-insights-memory.json": Sample("check", Shape.LOGS, memory=4, records=True),
    "eks-container-insights-memory.json": Sample("check", Shape.LOGS, memory=3, records=True),
    "eks-container-insights-oomkilled.json": Sample(
        "check", Shape.LOGS, (OOM,), memory=4, records=True
    ),
    "kernel-oom.log": Sample("check", Shape.LOGS, (OOM,) * 6, records=True),
    # a silence request, not a run (tests/unit/test_silence_commands.py)
    "silence.json": Sample("check"),
}


def _invocation_event(path: Path, sample: Sample) -> Any:
    if not sample.records:
        return json.loads(path.read_text())
    if path.suffix == ".json":
        lines = [json.dumps(record) for record in json.loads(path.read_text())]
    else:
        lines = path.read_text().splitlines()
    at = 1_764_000_000.0
    return subscription_payload(
        "/g", "ip-10-0-1-5", [(at + n, line) for n, line in enumerate(lines)]
    )


def test_every_sample_event_is_in_the_table():
    assert sorted(p.name for p in EVENTS.iterdir()) == sorted(SAMPLES)


@pytest.mark.parametrize(("name", "sample"), SAMPLES.items(), ids=list(SAMPLES))
def test_each_sample_event_is_the_invocation_it_is_meant_to_be(name, sample):
    invocation = parse_invocation(_invocation_event(EVENTS / name, sample))
    assert invocation.mode == sample.mode
    assert (invocation.scheduled_time, invocation.duration_s) == (
        sample.scheduled_time,
        sample.duration_s,
    )
    arrival = invocation.arrival
    assert (None if arrival is None else arrival.shape) == sample.shape
    if arrival is not None:
        assert [(e.cause, e.exit_code) for e in arrival.evidence] == list(sample.evidence)
        assert len(arrival.memory) == sample.memory
        assert arrival.dropped == () and arrival.skipped == 0
        assert invocation.batch is None  # not an SQS batch: the report is returned


@pytest.mark.parametrize(
    "name", [n for n, s in SAMPLES.items() if s.records and n.endswith(".json")], ids=str
)
def test_log_records_are_no_invocation_on_their_own(name):
    with pytest.raises(InvocationError, match="must be a JSON object, not list"):
        parse_invocation(json.loads((EVENTS / name).read_text()))


def test_an_sqs_batch_answers_with_the_ids_of_the_records_it_read():
    event = json.loads((EVENTS / "ecs-task-stopped-oom.json").read_text())
    batch = sqs_batch([event, event], sent_at=1_764_000_000.0)
    batch["Records"].append(sqs_record("{not json", sent_at=1_764_000_000.0))
    invocation = parse_invocation(batch)
    assert invocation.batch == tuple(r["messageId"] for r in batch["Records"][:2])
    assert invocation.arrival is not None and len(invocation.arrival.dropped) == 1


@pytest.mark.filterwarnings("ignore:No application metrics to publish")
def test_the_handler_refuses_a_nan_watch_before_running(monkeypatch, tmp_path):
    from tests.unit import test_handler

    module = test_handler.handler_module.__wrapped__(monkeypatch, tmp_path)
    with pytest.raises(InvocationError, match="interval_s must be a finite number"):
        module.handler({"mode": "watch", "interval_s": float("nan")}, test_handler.Context())


@pytest.mark.parametrize(
    ("interval", "duration"), [(float("nan"), 10.0), (5.0, float("nan")), (0.0, 10.0)]
)
def test_watch_refuses_an_interval_or_duration_it_could_never_finish(interval, duration):
    from oomcheck.runner import watch

    runs: list[object] = []
    with pytest.raises(ValueError, match="finite interval"):
        watch(object(), interval=interval, duration=duration, on_report=runs.append)  # type: ignore[arg-type]
    assert runs == []
