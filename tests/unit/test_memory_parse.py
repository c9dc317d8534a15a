"""Container memory samples out of Container Insights performance records: the examples AWS
documents (ECS and EKS), the samples in events/, records without a limit, and hostile records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from oomcheck.exitparse import Format, parse_message
from oomcheck.exitparse.memory import BASIS_HARD, BASIS_NODE, BASIS_RESERVATION

EVENTS = Path(__file__).resolve().parents[2] / "events"
TS = 1623963900.0

# The Type: Container example of "Container Insights performance log events for Amazon ECS".
AWS_ECS_EXAMPLE: dict[str, Any] = {
    "Version": "0",
    "Type": "Container",
    "ContainerName": "sleep",
    "TaskId": "7ac4dfba69214411b4783a3b8189c9ba",
    "TaskDefinitionFamily": "sleep360",
    "TaskDefinitionRevision": "1",
    "ContainerInstanceId": "0d7650e6dec34c1a9200f72098071e8f",
    "EC2InstanceId": "i-0c470579dbcdbd2f3",
    "ClusterName": "MyCluster",
    "Image": "busybox",
    "ContainerKnownStatus": "RUNNING",
    "Timestamp": 1623963900000,
    "CpuUtilized": 0.0,
    "CpuReserved": 10.0,
    "MemoryUtilized": 0,
    "MemoryReserved": 10,
    "StorageReadBytes": 0,
    "StorageWriteBytes": 0,
    "NetworkRxBytes": 0,
    "NetworkRxDropped": 0,
    "NetworkRxErrors": 0,
    "NetworkRxPackets": 14,
    "NetworkTxBytes": 0,
    "NetworkTxDropped": 0,
    "NetworkTxErrors": 0,
    "NetworkTxPackets": 0,
}

# The memory part of the Type: Container example of "... for Amazon EKS and Kubernetes".
AWS_EKS_EXAMPLE: dict[str, Any] = {
    "ClusterName": "myCICluster",
    "NodeName": "ip-192-0-2-0.us-west-2.compute.internal",
    "PodName": "cloudwatch-agent-statsd",
    "Timestamp": "1567097399912",
    "Type": "Container",
    "Version": "0",
    "container_memory_limit": 104857600,
    "container_memory_request": 104857600,
    "container_memory_utilization": 0.10574541028701798,
    "container_memory_working_set": 17580032,
    "container_status": "Running",
    "kubernetes": {
        "container_name": "cloudwatch-agent",
        "docker": {
            "container_id": "8967b6b37da239dfad197c9fdea3e5dfd35a8a759ec86e2e4c3f7b401e232706"
        },
        "host": "ip-192-168-75-26.us-west-2.compute.internal",
        "namespace_name": "amazon-cloudwatch",
        "pod_name": "cloudwatch-agent-statsd-df44f855f-ts4q2",
    },
    "number_of_container_restarts": 0,
}


def parse(record: object, timestamp: float | None = None, **kwargs: Any) -> Any:
    text = record if isinstance(record, str) else json.dumps(record)
    return parse_message(text, timestamp=timestamp, **kwargs)


def test_the_documented_ecs_record_is_a_sample_of_its_reservation() -> None:
    parsed = parse(AWS_ECS_EXAMPLE)
    [sample] = parsed.memory
    assert parsed.format == Format.ECS and parsed.skipped == 0 and not parsed.evidence
    assert (sample.source, sample.used_mb, sample.limit_mb) == ("ecs", 0.0, 10.0)
    # the ECS record carries no hard limit: the share is said to be of the reservation
    assert sample.basis == BASIS_RESERVATION
    assert sample.hosts == ("7ac4dfba69214411b4783a3b8189c9ba",)
    assert sample.container == "sleep"
    assert sample.at == TS


def test_the_documented_eks_record_is_a_sample_of_its_hard_limit() -> None:
    parsed = parse(AWS_EKS_EXAMPLE)
    [sample] = parsed.memory
    assert parsed.format == Format.EKS and parsed.skipped == 0
    assert sample.used_mb == pytest.approx(16.77, abs=0.01)
    assert (sample.limit_mb, sample.basis) == (100.0, BASIS_HARD)
    assert sample.hosts == ("cloudwatch-agent-statsd-df44f855f-ts4q2",)
    assert sample.event_id == (
        "eks-memory:amazon-cloudwatch/cloudwatch-agent-statsd-df44f855f-ts4q2/"
        "cloudwatch-agent/1567097399912"
    )


def test_ecs_sample_file_climbs_and_the_sidecar_can_be_left_out() -> None:
    records = json.loads((EVENTS / "ecs-container-insights-memory.json").read_text())
    samples = [s for r in records for s in parse(r).memory]
    assert [(s.container, s.used_mb) for s in samples] == [
        ("celery-worker", 612.0),
        ("celery-worker", 901.0),
        ("celery-worker", 968.0),
        ("log-router", 38.0),
    ]
    worker_only = [s for r in records for s in parse(r, containers=["celery-*"]).memory]
    assert [round(s.share or 0, 3) for s in worker_only] == [0.598, 0.88, 0.945]


def test_eks_sample_file_climbs_towards_its_limit() -> None:
    records = json.loads((EVENTS / "eks-container-insights-memory.json").read_text())
    samples = [s for r in records for s in parse(r).memory]
    assert [round(s.share or 0, 3) for s in samples] == [0.569, 0.89, 0.934]
    assert {s.basis for s in samples} == {BASIS_HARD}
    assert samples[0].at < samples[1].at < samples[2].at


def test_an_eks_restart_record_is_also_a_sample() -> None:
    records = json.loads((EVENTS / "eks-container-insights-oomkilled.json").read_text())
    parsed = parse(records[2])
    assert len(parsed.evidence) == 1 and len(parsed.memory) == 1
    assert parsed.memory[0].used_mb == pytest.approx(99.0, abs=0.1)


@pytest.mark.parametrize(
    ("drop", "extra", "limit_mb", "basis"),
    [
        pytest.param((), {}, 100.0, "hard limit", id="limit"),
        pytest.param(
            ("container_memory_limit",),
            {"container_memory_utilization_over_container_limit": 16.765594482421875},
            pytest.approx(100.0, rel=1e-4),
            "hard limit",
            id="limit-from-the-over-limit-percentage",
        ),
        pytest.param(
            ("container_memory_limit",),
            {},
            pytest.approx(15854.7, abs=0.1),
            "node memory",
            id="no-limit-node-memory",
        ),
        pytest.param(
            ("container_memory_limit", "container_memory_utilization"),
            {},
            100.0,
            "request",
            id="request-only",
        ),
        pytest.param(
            ("container_memory_limit", "container_memory_utilization", "container_memory_request"),
            {},
            None,
            "no limit known",
            id="nothing",
        ),
    ],
)
def test_eks_limit_basis(
    drop: tuple[str, ...], extra: dict[str, Any], limit_mb: Any, basis: str
) -> None:
    record = {k: v for k, v in AWS_EKS_EXAMPLE.items() if k not in drop} | extra
    [sample] = parse(record).memory
    assert sample.limit_mb == limit_mb
    assert sample.basis == basis
    assert basis != BASIS_NODE or sample.share == pytest.approx(0.0010574, rel=1e-3)


def test_stopped_containers_are_not_samples() -> None:
    assert parse({**AWS_ECS_EXAMPLE, "ContainerKnownStatus": "STOPPED"}).memory == ()
    assert parse({**AWS_EKS_EXAMPLE, "container_status": "Terminated"}).memory == ()


HOSTILE_ECS = [
    pytest.param({"MemoryUtilized": "1e999"}, id="infinite"),
    pytest.param({"MemoryUtilized": -5}, id="negative"),
    pytest.param({"MemoryUtilized": True}, id="bool"),
    pytest.param({"MemoryUtilized": 10**30}, id="huge"),
    pytest.param({"MemoryUtilized": None}, id="missing"),
    pytest.param({"TaskId": "x" * 500}, id="long-task-id"),
    pytest.param({"TaskId": ["a"]}, id="task-id-not-text"),
    pytest.param({"ContainerName": ""}, id="no-container"),
    pytest.param({"Timestamp": "soon"}, id="bad-time"),
]


@pytest.mark.parametrize("change", HOSTILE_ECS)
def test_hostile_ecs_records_are_skipped_and_counted(change: dict[str, Any]) -> None:
    parsed = parse({**AWS_ECS_EXAMPLE, **change}, timestamp=TS)
    if change.get("Timestamp") == "soon":
        # the log event's own time stands in for a record time that cannot be read
        assert parsed.memory[0].at == TS
        return
    assert parsed.memory == () and parsed.skipped == 1


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"container_memory_working_set": "NaN"}, id="nan"),
        pytest.param({"container_memory_working_set": {"a": 1}}, id="object"),
        pytest.param({"kubernetes": {"pod_name": "Bad Name!", "container_name": "w"}}, id="pod"),
        pytest.param({"kubernetes": "x"}, id="kubernetes-not-an-object"),
    ],
)
def test_hostile_eks_records_are_skipped_and_counted(change: dict[str, Any]) -> None:
    parsed = parse({**AWS_EKS_EXAMPLE, **change})
    assert parsed.memory == () and parsed.skipped >= 1


def test_deep_huge_and_non_json_messages_are_skipped() -> None:
    deep = '{"Type": "Container", "TaskId": "ab", "x": ' + "[" * 5000 + "]" * 5000 + "}"
    assert parse(deep).format == Format.MALFORMED
    huge = json.dumps({**AWS_ECS_EXAMPLE, "pad": "x" * 200_000})
    assert parse(huge).format == Format.MALFORMED
    assert parse("\x80\x04\x95 pickle").memory == ()
