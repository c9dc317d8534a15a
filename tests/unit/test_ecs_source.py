"""The ECS lookup: the running tasks of named services and their addresses (ListTasks,
DescribeTasks, in the shapes AWS documents), and Container Insights memory records, which carry
a task id and no address, tied through it to their workers with no OOMCHECK_WORKER_MAP."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from oomcheck.config.settings import SettingsError, from_env
from oomcheck.model import Kind
from oomcheck.sources.ecs import EcsTasks, parse_services, with_addresses
from tests.unit.scenario import T0, Replay, mem, obs, only, snap

TASK = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
ARN = f"arn:aws:ecs:eu-west-1:123456789012:task/celery-prod/{TASK}"


class FakeEcs:
    """Answers ListTasks in pages of one and DescribeTasks as AWS does; records the calls."""

    def __init__(self, tasks: list[dict[str, Any]]) -> None:
        self.tasks = tasks
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def list_tasks(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("ListTasks", kwargs))
        index = int(kwargs.get("nextToken", "0"))
        reply: dict[str, Any] = {"taskArns": [self.tasks[index]["taskArn"]]}
        if index + 1 < len(self.tasks):
            reply["nextToken"] = str(index + 1)
        return reply

    def describe_tasks(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("DescribeTasks", kwargs))
        return {"tasks": [t for t in self.tasks if t["taskArn"] in kwargs["tasks"]], "failures": []}


def fargate_task(arn: str, ip: str) -> dict[str, Any]:
    return {
        "taskArn": arn,
        "lastStatus": "RUNNING",
        "group": "service:celery-worker",
        "startedAt": datetime(2026, 12, 1, 9, 0, tzinfo=UTC),
        "attachments": [
            {
                "type": "ElasticNetworkInterface",
                "status": "ATTACHED",
                "details": [
                    {"name": "subnetId", "value": "subnet-0abc"},
                    {"name": "privateIPv4Address", "value": ip},
                ],
            }
        ],
        "containers": [{"name": "worker", "networkInterfaces": [{"privateIpv4Address": ip}]}],
    }


def test_running_tasks_of_a_service_with_their_addresses() -> None:
    other = ARN.replace(TASK, "aa" * 16)
    client = FakeEcs([fargate_task(ARN, "10.0.1.5"), fargate_task(other, "10.0.1.6")])
    tasks = EcsTasks(client, parse_services(["celery-prod/celery-worker"])).running()
    assert [(t.task_id, t.addresses) for t in tasks] == [
        (TASK, ("10.0.1.5",)),
        ("aa" * 16, ("10.0.1.6",)),
    ]
    assert tasks[0].started_at == datetime(2026, 12, 1, 9, 0, tzinfo=UTC).timestamp()
    listed = [kw for name, kw in client.calls if name == "ListTasks"]
    assert listed[0] == {
        "cluster": "celery-prod",
        "serviceName": "celery-worker",
        "desiredStatus": "RUNNING",
        "maxResults": 100,
    }


def test_a_memory_record_with_a_task_id_raises_pressure_on_its_worker() -> None:
    client = FakeEcs([fargate_task(ARN, "10.0.1.5")])
    tasks = EcsTasks(client, (("celery-prod", "celery-worker"),)).running()
    worker = "celery@ip-10-0-1-5"
    replay = Replay()
    found = []
    for i, used in enumerate((1900, 1950)):
        at = T0 + 60 * i
        samples = with_addresses([mem(TASK, used, at - 5, source="ecs")], tasks)
        found = replay.step(obs(at, [snap(worker, at=at)], memory=samples))
    assert only(found, Kind.MEMORY_PRESSURE).worker == worker
    # without the lookup the same records belong to nobody
    bare = Replay()
    for i, used in enumerate((1900, 1950)):
        at = T0 + 60 * i
        found = bare.step(
            obs(at, [snap(worker, at=at)], memory=[mem(TASK, used, at - 5, source="ecs")])
        )
    assert [f for f in found if f.kind is Kind.MEMORY_PRESSURE] == []


@pytest.mark.parametrize("raw", ["celery-prod", "/svc", "cluster/", "a/b/c"])
def test_a_service_must_be_cluster_slash_service(raw: str) -> None:
    with pytest.raises(SettingsError, match="OOMCHECK_ECS_SERVICES"):
        from_env({"OOMCHECK_BROKER_URL": "sqs://", "OOMCHECK_ECS_SERVICES": raw})
