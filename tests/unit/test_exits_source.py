"""CloudWatchExitEvents against moto (and botocore's Stubber where moto cannot play the part):
the samples in events/ written to log groups and read back, pagination, overlapping windows,
throttling and an unreachable endpoint; and the demo's ECS event builder."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from botocore.stub import ANY, Stubber
from moto import mock_aws

from oomcheck.aws import client as aws_client
from oomcheck.demo.ecs import ecs_task_stopped_event, put_ecs_event
from oomcheck.demo.services import free_port
from oomcheck.detect import evaluate
from oomcheck.exitparse import parse_message
from oomcheck.model import Cause, Kind, Observation, Policy, State, WorkerSnapshot
from oomcheck.sources.exits import (
    CONTAINER_INSIGHTS_PATTERN,
    TEXT_PATTERN,
    CloudWatchExitEvents,
    ExitRead,
    ExitSourceError,
)

EVENTS = Path(__file__).resolve().parents[2] / "events"
ECS_GROUP = "/oomcheck/ecs-task-state"
EKS_GROUP = "/aws/containerinsights/celery-prod/performance"
KERNEL_GROUP = "/ec2/var/log/messages"
SAMPLES = ("oom", "sigkill", "clean", "error")


@pytest.fixture
def logs() -> Iterator[Any]:
    with mock_aws():
        yield aws_client("logs")


def put(logs: Any, group: str, stream: str, events: list[tuple[float, str]]) -> None:
    """Write (time in seconds, message) pairs as one batch, creating the group and stream."""
    if not logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]:
        logs.create_log_group(logGroupName=group)
    if not logs.describe_log_streams(logGroupName=group, logStreamNamePrefix=stream)["logStreams"]:
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
    batch = [{"timestamp": round(at * 1000), "message": msg} for at, msg in events]
    result = logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=batch)
    assert "rejectedLogEventsInfo" not in result


def ecs_sample(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / f"ecs-task-stopped-{name}.json").read_text())


def put_samples(logs: Any, now: float, *, single_group: str | None = None) -> None:
    """Every sample in events/, logged during the last two minutes, in its own kind of group
    (or all in one group)."""
    for i, name in enumerate(SAMPLES):
        event = ecs_sample(name)
        put(logs, single_group or ECS_GROUP, event["id"], [(now - 100 + i, json.dumps(event))])
    records = json.loads((EVENTS / "eks-container-insights-oomkilled.json").read_text())
    stream = "ip-10-0-1-5.eu-west-1.compute.internal"
    put(
        logs,
        single_group or EKS_GROUP,
        stream,
        [(now - 90 + i, json.dumps(r)) for i, r in enumerate(records)],
    )
    lines = (EVENTS / "kernel-oom.log").read_text().splitlines()
    put(
        logs,
        single_group or KERNEL_GROUP,
        "i-0a1b2c3d4e5f67890",
        [(now - 80 + i * 0.01, line) for i, line in enumerate(lines)],
    )


EXPECTED_IDS = {
    "ecs:celery-prod/1a2b3c4d5e6f47a8b9c0d1e2f3a4b5c6/worker",
    "ecs:celery-prod/1a2b3c4d5e6f47a8b9c0d1e2f3a4b5c6/log_router",
    "ecs:celery-batch/9f8e7d6c5b4a43219f8e7d6c5b4a3210/worker",
    "ecs:celery-prod/5c6d7e8f9a0b41c2d3e4f5a6b7c8d9e0/worker",
    "ecs:celery-prod/7e8f9a0b1c2d43e4f5a6b7c8d9e0f1a2/worker",
    "eks:jobs/celery-worker-6d5f7c9b8-x2k4p/worker/9e8d7c6b5a4f3e2d",
}
KERNEL_PIDS = [4321, 4388, 5120, 6001, 7001, 8002]


def check_sample_read(read: ExitRead) -> None:
    ids = {e.event_id for e in read.evidence}
    assert ids >= EXPECTED_IDS
    kernel = [e for e in read.evidence if e.source == "kernel"]
    assert sorted(e.pid for e in kernel) == KERNEL_PIDS
    assert len(read.evidence) == len(EXPECTED_IDS) + len(KERNEL_PIDS)
    assert read.events_read == 4 + 4 + 14
    assert read.skipped == 0
    # 4 ECS events (5 stopped containers) and 6 kill lines were evidence; the 4 Container
    # Insights records were memory samples, one of them a restart as well
    assert read.ignored == read.events_read - 4 - 4 - 6
    assert [(s.source, round(s.used_mb)) for s in read.memory] == [
        ("eks", 583),
        ("eks", 942),
        ("eks", 99),
        ("eks", 295),
    ]
    assert not read.truncated
    assert [e.at for e in read.evidence] == sorted(e.at for e in read.evidence)


# --------------------------------------------------------------------------------- reading


def test_samples_are_read_back_from_their_log_groups(logs: Any) -> None:
    now = time.time()
    put_samples(logs, now)
    source = CloudWatchExitEvents(logs, [ECS_GROUP, EKS_GROUP, KERNEL_GROUP])
    read = source.read(None, now)
    check_sample_read(read)
    oom = next(e for e in read.evidence if e.event_id.endswith("/worker") and "1a2b" in e.event_id)
    assert (oom.cause, oom.exit_code, oom.clean) == (Cause.OOM_KILLED, 137, False)
    assert "10.0.1.5" in oom.hosts
    # the bare dmesg line names no host: the agent's stream name stands in for it
    bare = next(e for e in read.evidence if e.pid == 8002)
    assert bare.hosts == ("i-0a1b2c3d4e5f67890",)


def test_one_group_may_hold_every_format(logs: Any) -> None:
    now = time.time()
    put_samples(logs, now, single_group="/oomcheck/everything")
    read = CloudWatchExitEvents(logs, ["/oomcheck/everything"]).read(None, now)
    check_sample_read(read)


def test_window_first_run_later_runs_and_the_cap(logs: Any) -> None:
    now = time.time()
    source = CloudWatchExitEvents(
        logs, [KERNEL_GROUP], overlap_s=120, max_window_s=3600, first_lookback_s=900
    )
    assert source.window(None, now) == (now - 900, now, False)
    assert source.window(now - 60, now) == (now - 180, now, False)
    assert source.window(now - 7200, now) == (now - 3600, now, True)
    # a previous run "in the future" (clock skew) still reads the overlap
    assert source.window(now + 30, now) == (now - 120, now, False)


def test_events_outside_the_window_are_not_read(logs: Any) -> None:
    now = time.time()
    line = (EVENTS / "kernel-oom.log").read_text().splitlines()[4]
    put(logs, KERNEL_GROUP, "host", [(now - 1000, line.replace("4321", "1111")), (now - 10, line)])
    read = CloudWatchExitEvents(logs, [KERNEL_GROUP]).read(None, now)  # looks back 900 s
    assert [e.pid for e in read.evidence] == [4321]
    read = CloudWatchExitEvents(logs, [KERNEL_GROUP]).read(now - 1100, now)
    assert sorted(e.pid for e in read.evidence) == [1111, 4321]


def test_clipped_window_is_reported_as_truncated(logs: Any) -> None:
    now = time.time()
    put_samples(logs, now)
    read = CloudWatchExitEvents(logs, [KERNEL_GROUP], max_window_s=600).read(now - 86400, now)
    assert read.truncated and read.truncated_groups == ()
    assert read.start == now - 600
    assert len(read.evidence) == len(KERNEL_PIDS)


# ------------------------------------------------------------------------------ pagination


def kill_line(pid: int) -> str:
    return (
        f"Nov 24 13:50:29 ip-10-0-1-5 kernel: [12345.6] Memory cgroup out of memory: Killed "
        f"process {pid} (celery) total-vm:1000kB, anon-rss:{pid}kB, file-rss:0kB, shmem-rss:0kB"
    )


def test_every_page_is_followed(logs: Any) -> None:
    now = time.time()
    put(logs, KERNEL_GROUP, "a", [(now - 50 + i * 0.1, kill_line(1000 + i)) for i in range(60)])
    put(logs, KERNEL_GROUP, "b", [(now - 50 + i * 0.1, kill_line(2000 + i)) for i in range(60)])
    read = CloudWatchExitEvents(logs, [KERNEL_GROUP], page_limit=7).read(None, now)
    assert read.pages == 18  # 120 events, 7 a page
    assert read.events_read == 120 and not read.truncated
    assert sorted(e.pid for e in read.evidence) == [*range(1000, 1060), *range(2000, 2060)]


def test_page_budget_truncates_and_says_so(logs: Any) -> None:
    now = time.time()
    put(logs, KERNEL_GROUP, "a", [(now - 50 + i * 0.1, kill_line(1000 + i)) for i in range(60)])
    put_samples(logs, now)
    groups = [KERNEL_GROUP, EKS_GROUP]
    read = CloudWatchExitEvents(logs, groups, page_limit=10, max_pages=3).read(None, now)
    assert read.truncated and read.truncated_groups == (KERNEL_GROUP,)
    assert read.pages == 3 + 1
    assert read.events_read == 30 + 4
    assert len(read.evidence) == 30 + 1  # the EKS group was still read after the budget ran out


def stubbed(groups: list[str], **kwargs: Any) -> tuple[CloudWatchExitEvents, Stubber]:
    client = aws_client("logs")
    stubber = Stubber(client)
    return CloudWatchExitEvents(client, groups, **kwargs), stubber


def test_empty_pages_do_not_end_the_read() -> None:
    # FilterLogEvents may return no events with a nextToken (it searched a slice of the streams).
    now = 1_763_992_300.0
    source, stub = stubbed([KERNEL_GROUP])
    base = {
        "logGroupName": KERNEL_GROUP,
        "startTime": round((now - 900) * 1000),
        "endTime": round(now * 1000),
        "filterPattern": TEXT_PATTERN,
    }
    event = {
        "logStreamName": "ip-10-0-1-5",
        "timestamp": round((now - 5) * 1000),
        "message": kill_line(4321),
        "ingestionTime": round((now - 4) * 1000),
        "eventId": "1",
    }
    stub.add_response("filter_log_events", {"events": [], "nextToken": "t1"}, base)
    stub.add_response(
        "filter_log_events", {"events": [], "nextToken": "t2"}, {**base, "nextToken": "t1"}
    )
    stub.add_response("filter_log_events", {"events": [event]}, {**base, "nextToken": "t2"})
    with stub:
        read = source.read(None, now)
    stub.assert_no_pending_responses()
    assert read.pages == 3 and [e.pid for e in read.evidence] == [4321]


def test_filter_pattern_per_group_kind() -> None:
    now = 1_763_992_300.0
    groups = [EKS_GROUP, KERNEL_GROUP, "arn:aws:logs:eu-west-1:123456789012:log-group:/ecs/x:*"]
    source, stub = stubbed(groups)
    window = {"startTime": ANY, "endTime": ANY}
    stub.add_response(
        "filter_log_events",
        {"events": []},
        {"logGroupName": EKS_GROUP, "filterPattern": CONTAINER_INSIGHTS_PATTERN, **window},
    )
    stub.add_response(
        "filter_log_events",
        {"events": []},
        {"logGroupName": KERNEL_GROUP, "filterPattern": TEXT_PATTERN, **window},
    )
    stub.add_response(
        "filter_log_events",
        {"events": []},
        {
            "logGroupIdentifier": "arn:aws:logs:eu-west-1:123456789012:log-group:/ecs/x",
            "filterPattern": TEXT_PATTERN,
            **window,
        },
    )
    with stub:
        source.read(None, now)
    stub.assert_no_pending_responses()
    source, stub = stubbed([EKS_GROUP], server_filter=False)
    stub.add_response("filter_log_events", {"events": []}, {"logGroupName": EKS_GROUP, **window})
    with stub:
        source.read(None, now)
    stub.assert_no_pending_responses()


# ------------------------------------------------------------------------ ids and duplicates


def test_overlapping_reads_give_identical_ids(logs: Any) -> None:
    # Given evidence logged before and after the first run
    first_run = time.time()
    put_samples(logs, first_run)
    source = CloudWatchExitEvents(logs, [ECS_GROUP, EKS_GROUP, KERNEL_GROUP], overlap_s=120)
    first = source.read(None, first_run)
    later = first_run + 0.5
    put(logs, KERNEL_GROUP, "late", [(first_run + 0.2, kill_line(9999))])
    # When the next run reads from the first one, with its overlap
    second = source.read(first_run, later)
    # Then what both windows hold comes back with the same ids, and only the new kill is new
    assert {e.event_id: e for e in first.evidence}.items() <= {
        e.event_id: e for e in second.evidence
    }.items()
    new = {e.event_id for e in second.evidence} - {e.event_id for e in first.evidence}
    assert [e.pid for e in second.evidence if e.event_id in new] == [9999]


def test_duplicates_within_one_read_are_dropped(logs: Any) -> None:
    now = time.time()
    event = ecs_sample("oom")
    # the same event delivered twice to one group, and routed to a second group too
    put(
        logs, ECS_GROUP, event["id"], [(now - 20, json.dumps(event)), (now - 19, json.dumps(event))]
    )
    put(logs, "/oomcheck/ecs-copy", event["id"], [(now - 18, json.dumps(event))])
    # a later version of the same stop (ECS may send STOPPED more than once)
    event["detail"]["version"] += 1
    put(logs, ECS_GROUP, "v6", [(now - 17, json.dumps(event))])
    read = CloudWatchExitEvents(logs, [ECS_GROUP, "/oomcheck/ecs-copy"]).read(None, now)
    assert read.events_read == 4
    assert sorted(e.process for e in read.evidence) == ["log_router", "worker"]


def test_malformed_events_are_counted(logs: Any) -> None:
    now = time.time()
    put(
        logs,
        KERNEL_GROUP,
        "h",
        [
            (now - 30, '{"detail-type": "ECS Task State Change", "detail": ['),
            (now - 29, "x" * 70_000),
            (now - 28, kill_line(4321).replace("process 4321", "process 0")),
            (now - 27, kill_line(4321)),
        ],
    )
    read = CloudWatchExitEvents(logs, [KERNEL_GROUP], server_filter=False).read(None, now)
    assert read.skipped == 3 and [e.pid for e in read.evidence] == [4321]


# ---------------------------------------------------------------------------------- errors


def test_throttling_that_outlives_the_retries_is_our_error() -> None:
    source, stub = stubbed([ECS_GROUP, KERNEL_GROUP])
    stub.add_client_error(
        "filter_log_events",
        service_error_code="ThrottlingException",
        service_message="Rate exceeded",
        http_status_code=400,
    )
    with stub, pytest.raises(ExitSourceError) as caught:
        source.read(None, 1_763_992_300.0)
    error = caught.value
    assert error.code == "ThrottlingException" and error.groups == (ECS_GROUP,)
    assert isinstance(error.__cause__, ClientError)
    assert "Rate exceeded" in str(error) and ECS_GROUP in str(error)
    # a throttled service is not asked again for the next group in the same run
    stub.assert_no_pending_responses()
    assert error.partial is not None and error.partial.evidence == ()


def test_a_missing_group_fails_the_source_but_keeps_what_was_read(logs: Any) -> None:
    now = time.time()
    put_samples(logs, now)
    source = CloudWatchExitEvents(logs, ["/does/not/exist", KERNEL_GROUP])
    with pytest.raises(ExitSourceError) as caught:
        source.read(None, now)
    error = caught.value
    assert error.code == "ResourceNotFoundException"
    assert error.groups == ("/does/not/exist",)
    assert str(error).startswith("1 of 2 log groups unreadable: /does/not/exist")
    assert isinstance(error.__cause__, ClientError)
    assert error.partial is not None
    assert sorted(e.pid for e in error.partial.evidence if e.pid) == KERNEL_PIDS


def test_unreachable_endpoint_is_our_error_within_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing listens on this port: botocore's own retries run, then our error comes out.
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    source = CloudWatchExitEvents(aws_client("logs"), [ECS_GROUP])
    started = time.monotonic()
    with pytest.raises(ExitSourceError) as caught:
        source.read(None, time.time())
    assert time.monotonic() - started < 10
    assert caught.value.code == "EndpointConnectionError"
    assert "127.0.0.1" in str(caught.value)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_pages"):
        CloudWatchExitEvents(object(), [ECS_GROUP], max_pages=0)
    with pytest.raises(ValueError, match="page_limit"):
        CloudWatchExitEvents(object(), [ECS_GROUP], page_limit=20_000)


# -------------------------------------------------------------------------- demo event builder


def shape(value: Any) -> Any:
    """The structure of a JSON value: keys and types, not contents."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


def build(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "cluster": "celery-prod",
        "task_id": "1a2b3c4d5e6f47a8b9c0d1e2f3a4b5c6",
        "private_ip": "10.0.1.5",
        "container": "worker",
        "exit_code": 137,
        "reason": "OutOfMemoryError: Container killed due to memory usage",
        "stop_code": "EssentialContainerExited",
        "stopped_reason": "Essential container in task exited",
        "at": 1_763_992_230.612,
        "region": "eu-west-1",
        "version": 5,
    }
    return ecs_task_stopped_event(**{**args, **overrides})


def test_builder_has_the_shape_of_the_samples() -> None:
    built = build()
    reference = ecs_sample("oom")
    reference["detail"]["containers"] = reference["detail"]["containers"][:1]
    reference_worker = reference["detail"]["containers"][0]
    del reference_worker["imageDigest"]
    assert shape(built) == shape(reference)
    assert built["detail"]["stoppedAt"] == "2025-11-24T13:50:30.612Z"
    assert built["time"] == "2025-11-24T13:50:30Z"
    assert built["resources"] == [reference["detail"]["taskArn"]]
    assert built["detail"]["taskArn"] == reference["detail"]["taskArn"]
    # the same death built twice is the same event (a duplicate delivery)
    assert build() == built


def test_builder_event_parses_like_the_real_one() -> None:
    (built,) = parse_message(json.dumps(build())).evidence
    real = parse_message((EVENTS / "ecs-task-stopped-oom.json").read_text()).evidence[0]
    for attr in ("event_id", "cause", "exit_code", "clean", "process", "at"):
        assert getattr(built, attr) == getattr(real, attr), attr
    assert set(real.hosts) == set(built.hosts)
    (plain,) = parse_message(json.dumps(build(exit_code=137, reason=None))).evidence
    assert (plain.cause, plain.clean) == (Cause.KILLED, False)
    (vague,) = parse_message(json.dumps(build(exit_code=None, reason=None))).evidence
    assert (
        vague.exit_code is None
        and "exitCode" not in build(exit_code=None)["detail"]["containers"][0]
    )


def test_put_ecs_event_writes_as_eventbridge_does_and_is_read_back(logs: Any) -> None:
    now = time.time()
    event = build(at=now - 5)
    put_ecs_event(logs, "/oomcheck/demo/ecs", event)  # creates the group and the stream
    put_ecs_event(logs, "/oomcheck/demo/ecs", event)  # a second delivery: the stream exists
    streams = logs.describe_log_streams(logGroupName="/oomcheck/demo/ecs")["logStreams"]
    assert [s["logStreamName"] for s in streams] == [event["id"]]
    stored = logs.filter_log_events(logGroupName="/oomcheck/demo/ecs")["events"]
    assert [json.loads(e["message"]) for e in stored] == [event, event]
    assert stored[0]["timestamp"] == int(now - 5) * 1000  # the event's time, whole seconds
    read = CloudWatchExitEvents(logs, ["/oomcheck/demo/ecs"]).read(None, now)
    assert [(e.cause, e.exit_code, e.hosts[0]) for e in read.evidence] == [
        (Cause.OOM_KILLED, 137, "ip-10-0-1-5.eu-west-1.compute.internal")
    ]


# ------------------------------------------------------------------ through evaluate (glue)


def test_read_evidence_names_the_cause_of_a_lost_worker(logs: Any) -> None:
    # Given a worker on the OOM sample's task address, seen alive, then gone
    now = time.time()
    worker = "celery@ip-10-0-1-5.eu-west-1.compute.internal"
    alive = WorkerSnapshot(name=worker, pid=7, uptime_s=600, pool_pids=(8, 9))
    state, _ = evaluate(
        State(), Observation(at=now - 60, workers={worker: alive}), Policy(), now - 60
    )
    put_samples(logs, now)
    # When the run reads CloudWatch and the worker does not answer
    read = CloudWatchExitEvents(logs, [ECS_GROUP]).read(now - 60, now)
    observation = Observation(at=now, workers={}, exits=read.evidence, inspected_at=now)
    _, findings = evaluate(state, observation, Policy(), now)
    # Then it is lost, OOM-killed, with the ECS line as evidence
    lost = next(f for f in findings if f.kind == Kind.WORKER_LOST)
    assert (lost.worker, lost.cause, lost.exit_code) == (worker, Cause.OOM_KILLED, 137)
    assert any(line.startswith("ecs: exitCode 137 OutOfMemoryError") for line in lost.evidence)


def test_memory_samples_from_both_container_insights_groups_in_the_same_calls(logs: Any) -> None:
    # Given: ECS and EKS performance records, and the ECS stop of the task the ECS records are of
    now = time.time()
    ecs_group = "/aws/ecs/containerinsights/celery-prod/performance"
    oom = ecs_sample("oom")
    task_id = oom["detail"]["taskArn"].rsplit("/", 1)[-1]
    ecs_records = json.loads((EVENTS / "ecs-container-insights-memory.json").read_text())
    put(
        logs,
        ecs_group,
        "AgentTelemetry-0d7650e6dec34c1a9200f72098071e8f",
        [(now - 100 + i, json.dumps({**r, "TaskId": task_id})) for i, r in enumerate(ecs_records)],
    )
    eks_records = json.loads((EVENTS / "eks-container-insights-memory.json").read_text())
    put(
        logs,
        EKS_GROUP,
        "node-1",
        [(now - 90 + i, json.dumps(r)) for i, r in enumerate(eks_records)],
    )
    put(logs, ECS_GROUP, oom["id"], [(now - 50, json.dumps(oom))])
    source = CloudWatchExitEvents(logs, [ecs_group, EKS_GROUP, ECS_GROUP], containers=["*worker"])
    # When
    read = source.read(None, now)
    # Then: one page per group, as before; the sidecar is left out
    assert read.pages == 3
    assert source.memory_groups == (ecs_group, EKS_GROUP)
    assert [(s.source, s.container) for s in read.memory] == [("ecs", "celery-worker")] * 3 + [
        ("eks", "worker")
    ] * 3
    # the ECS samples name the task's address too, from its stop event
    assert set(read.memory[0].hosts) >= {task_id, "10.0.1.5"}
    assert read.memory[-1].hosts == ("celery-worker-6d5f7c9b8-x2k4p",)
