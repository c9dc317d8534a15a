"""memory_pressure from a real worker: its task grows inside a memory cgroup, Container
Insights-shaped records carry the cgroup's real usage to a moto log group, and the checker names
the growing task before the kernel kills it; the kill's alert then says which task was growing."""

from __future__ import annotations

import copy
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from oomcheck.demo.workers import MemoryCgroup, wait_for
from oomcheck.model import Cause, Kind, Policy, SourceState, SourceStatus
from oomcheck.report.document import Report
from tests.integration.conftest import Fleet, poll_checks

EVENTS = Path(__file__).resolve().parents[2] / "events"
GROUP = "/aws/containerinsights/test-cluster/performance"
STREAM = "ip-10-0-1-5.eu-west-1.compute.internal"
POD = "celery-worker-5d8f9c7b6-x2k4p"
WORKER = f"grower@{POD}"  # the pod name is the nodename's host part, as celery's default %h
LIMIT_MB = 256
MIB = 1024 * 1024


@pytest.fixture
def logs() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("logs")
        client.create_log_group(logGroupName=GROUP)
        client.create_log_stream(logGroupName=GROUP, logStreamName=STREAM)
        yield client


def eks_record(cgroup: MemoryCgroup, *, restarts: int | None = None) -> dict[str, Any]:
    """An EKS performance record of the worker's container (AWS's documented shape, from
    events/), with the cgroup's real working set and limit, stamped now."""
    record = copy.deepcopy(
        json.loads((EVENTS / "eks-container-insights-memory.json").read_text())[0]
    )
    used, limit = cgroup.usage_bytes(), cgroup.limit_bytes()
    record.update(
        Timestamp=str(int(time.time() * 1000) - 500),
        FullPodName=POD,
        container_memory_working_set=used,
        container_memory_usage=used,
        container_memory_limit=limit,
        container_memory_utilization_over_container_limit=round(100 * used / limit, 3),
    )
    record["kubernetes"]["pod_name"] = POD
    if restarts is None:
        record.pop("number_of_container_restarts", None)
    else:
        record.update(
            number_of_container_restarts=restarts, container_last_termination_reason="OOMKilled"
        )
    return record


def put(logs: Any, record: dict[str, Any]) -> None:
    logs.put_log_events(
        logGroupName=GROUP,
        logStreamName=STREAM,
        logEvents=[{"timestamp": int(record["Timestamp"]), "message": json.dumps(record)}],
    )


def _has(report: Report, kind: Kind) -> bool:
    return any(f.kind == kind for f in report.findings)


def test_pressure_names_the_growing_task_before_the_kill_and_the_kill_says_which_grew(
    fleet: Fleet, logs: Any, cgroup_or_skip_reason: str | None, tmp_path: Path
) -> None:
    if cgroup_or_skip_reason:
        pytest.skip(f"real memory growth needs a memory cgroup: {cgroup_or_skip_reason}")
    # Given a worker in a 256 MiB cgroup, its Container Insights group configured
    fleet.overrides = {"log_groups": (GROUP,), "policy": Policy(memory_threshold=0.8)}
    worker = fleet.start(WORKER, memory_mb=LIMIT_MB)
    cgroup = fleet.cgroups[-1]
    put(logs, eks_record(cgroup))
    quiet = fleet.check()
    assert not _has(quiet, Kind.MEMORY_PRESSURE) and quiet.sources["memory"] == SourceStatus(
        SourceState.OK
    )
    # When a task grows the container to about 90 % of its limit and holds there
    target_mb = int((0.9 * LIMIT_MB * MIB - cgroup.usage_bytes()) / MIB)
    assert target_mb >= 16, f"the idle worker already uses {cgroup.usage_bytes() / MIB:.0f} MiB"
    flag = tmp_path / "grow-more"
    task = fleet.send("demo.grow", target_mb, str(flag), 4 * LIMIT_MB, 60)
    wait_for(lambda: cgroup.usage_bytes() >= 0.85 * LIMIT_MB * MIB, 30, what="the task's growth")

    def sampled_check(report_kind: Kind) -> Report:
        def until(report: Report) -> bool:
            if _has(report, report_kind):
                return True
            put(logs, eks_record(cgroup))  # the agent's next sample
            return False

        return poll_checks(fleet, until, timeout=30, interval=1.1)

    report = sampled_check(Kind.MEMORY_PRESSURE)
    # Then memory_pressure names the worker, its use against the limit, and the growing task
    pressure = next(f for f in report.findings if f.kind == Kind.MEMORY_PRESSURE)
    assert pressure.worker == WORKER
    assert f"of {LIMIT_MB:,} MiB" in pressure.summary and "of its hard limit" in pressure.summary
    assert f"running: demo.grow {task}" in pressure.summary
    assert [t.id for t in pressure.tasks] == [task]
    assert [m.kind for m in fleet.publisher.messages] == ["memory_pressure"]
    assert f"demo.grow {task}" in fleet.publisher.messages[0].text
    # And the audit's memory block shows the worker with the task
    audit = fleet.check("audit")
    top = audit.to_json()["memory"][0]
    assert top["worker"] == WORKER and top["tasks"][0]["name"] == "demo.grow"
    assert top["share"] >= 0.8

    # When the task grows on, the kernel kills, and the runtime ends the container (Kubernetes'
    # memory.oom.group) and restarts it: the next record says OOMKilled
    flag.touch()
    wait_for(lambda: cgroup.oom_kills() > 0, 30, what="the kernel's OOM kill")
    worker.kill(signal.SIGKILL)
    worker.wait()
    put(logs, eks_record(cgroup, restarts=1))
    report = poll_checks(fleet, lambda r: _has(r, Kind.WORKER_LOST), timeout=30, interval=0.5)
    # Then the death's alert says which task was growing, and the pressure closes with it
    lost = next(f for f in report.findings if f.kind == Kind.WORKER_LOST)
    assert lost.cause == Cause.OOM_KILLED
    memory_line = next(e for e in lost.evidence if e.startswith("memory: before it died"))
    assert memory_line.endswith(f"growing in it: demo.grow {task}")
    alert = next(m for m in fleet.publisher.messages if m.kind == "worker_lost")
    assert f"growing in it: demo.grow {task}" in alert.text
    resolved = [m for m in fleet.publisher.messages if m.action.value == "resolve"]
    assert [m.kind for m in resolved] == ["memory_pressure"]
