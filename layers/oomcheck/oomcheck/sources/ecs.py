"""The ECS API as a source of who the workers are: the running tasks of named services and their
addresses (ListTasks, DescribeTasks).

Container Insights memory records carry a task id and no address, while a worker's nodename
carries its address (``celery@ip-10-0-1-5``): with each task's address added to the hosts of its
records, the usual matching ties them to their workers on every broker, without a hand-written
OOMCHECK_WORKER_MAP.

Needs ``ecs:ListTasks`` (condition ``ecs:cluster``) and ``ecs:DescribeTasks`` on the clusters'
tasks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from oomcheck.model import MemorySample

# DescribeTasks takes at most 100 tasks; a service rarely runs more, and a run reads at most this
# many pages per service so that a huge service cannot stall it.
_PAGE = 100
MAX_PAGES = 5


@dataclass(frozen=True, slots=True)
class EcsTask:
    task_id: str
    cluster: str
    service: str
    addresses: tuple[str, ...]
    started_at: float | None = None


def parse_services(names: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """``cluster/service`` entries; raises ValueError naming a malformed one."""
    out: list[tuple[str, str]] = []
    for name in names:
        cluster, sep, service = name.partition("/")
        if not sep or not cluster or not service:
            raise ValueError(f"{name[:80]!r} must be cluster/service")
        out.append((cluster, service))
    return tuple(out)


@dataclass
class EcsTasks:
    client: Any  # a boto3 ECS client
    services: tuple[tuple[str, str], ...]

    def running(self) -> tuple[EcsTask, ...]:
        tasks: list[EcsTask] = []
        for cluster, service in self.services:
            for arns in self._pages(cluster, service):
                reply = self.client.describe_tasks(cluster=cluster, tasks=arns)
                tasks.extend(_task(cluster, service, t) for t in reply.get("tasks", ()))
        return tuple(tasks)

    def describe(self) -> str:
        return f"ecs: {len(self.services)} service(s)"

    def _pages(self, cluster: str, service: str) -> Iterable[list[str]]:
        token: str | None = None
        for _ in range(MAX_PAGES):
            extra = {"nextToken": token} if token else {}
            reply = self.client.list_tasks(
                cluster=cluster,
                serviceName=service,
                desiredStatus="RUNNING",
                maxResults=_PAGE,
                **extra,
            )
            arns = list(reply.get("taskArns", ()))
            if arns:
                yield arns
            token = reply.get("nextToken")
            if not token:
                return


def _task(cluster: str, service: str, task: dict[str, Any]) -> EcsTask:
    addresses: list[str] = []
    for attachment in task.get("attachments", ()):
        for detail in attachment.get("details", ()):
            if detail.get("name") == "privateIPv4Address" and detail.get("value"):
                addresses.append(str(detail["value"]))
    for container in task.get("containers", ()):
        for interface in container.get("networkInterfaces", ()):
            if interface.get("privateIpv4Address"):
                addresses.append(str(interface["privateIpv4Address"]))
    started = task.get("startedAt")
    started_at = started.timestamp() if isinstance(started, datetime) else None
    return EcsTask(
        task_id=str(task["taskArn"]).rsplit("/", 1)[-1].lower(),
        cluster=cluster,
        service=service,
        addresses=tuple(dict.fromkeys(addresses)),
        started_at=started_at,
    )


def with_addresses(
    samples: Sequence[MemorySample], tasks: Sequence[EcsTask]
) -> tuple[MemorySample, ...]:
    """The samples, each naming its ECS task's addresses besides the task id it carries."""
    by_id = {t.task_id: t.addresses for t in tasks if t.addresses}
    out: list[MemorySample] = []
    for sample in samples:
        extra = [a for h in sample.hosts for a in by_id.get(h.lower(), ())]
        hosts = tuple(dict.fromkeys((*sample.hosts, *extra)))
        out.append(sample if hosts == sample.hosts else replace(sample, hosts=hosts))
    return tuple(out)
