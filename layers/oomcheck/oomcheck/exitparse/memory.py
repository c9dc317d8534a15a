"""Container memory samples from Container Insights performance records (``Type`` =
``Container``), ECS and EKS. Pure: a decoded record in, a MemorySample out.

Field names, checked against AWS's reference of the performance log events (CloudWatch User
Guide, "Container Insights performance log events for Amazon ECS" and "... for Amazon EKS and
Kubernetes", "Relevant fields in performance log events for Amazon EKS and Kubernetes", and
"Amazon EKS and Kubernetes Container Insights metrics"):

- ECS, group ``/aws/ecs/containerinsights/<cluster>/performance``: ``Type`` "Container",
  ``ContainerName``, ``TaskId`` (32 hex digits), ``ClusterName``, ``ContainerKnownStatus``,
  ``Timestamp`` (a JSON number, ms), ``MemoryUtilized`` and ``MemoryReserved`` (MiB). The
  documented record has no hard-limit field and no address: ``MemoryReserved`` is the container's
  reservation, so a share of it is said to be of the reservation, and the task id is the only
  way to the worker (with the task's IP when an ECS task event of the same read gives it).
- EKS, group ``/aws/containerinsights/<cluster>/performance``: ``Type`` "Container",
  ``kubernetes.pod_name`` / ``container_name`` / ``namespace_name``, ``Timestamp`` (a string of
  ms), ``container_memory_working_set`` and ``container_memory_limit`` (bytes; the limit "is not
  emitted if it's not set"), ``container_memory_request`` (bytes, optional),
  ``container_memory_utilization`` (percent of the NODE's memory: working set / node limit) and
  ``container_memory_utilization_over_container_limit`` (percent of the container limit, absent
  without a limit), ``container_status``. The working set is what the kernel's OOM decision
  follows, so it is the "used" figure; the limit is taken from ``container_memory_limit`` first.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Any

from oomcheck.exitparse.common import (
    Format,
    Parsed,
    bounded_number,
    bounded_time,
    clean_text,
    epoch_ms,
    host_name,
    short_str,
)
from oomcheck.model import MemorySample

__all__ = ["BASIS_HARD", "BASIS_NODE", "BASIS_RESERVATION", "parse_ecs_memory", "parse_eks_memory"]

BASIS_HARD = "hard limit"
BASIS_RESERVATION = "reservation"
BASIS_REQUEST = "request"
BASIS_NODE = "node memory"
BASIS_NONE = "no limit known"

MIB = 1024.0 * 1024.0
# 16 TiB: no container has more; a larger figure is not a measurement.
MAX_MIB = 16.0 * 1024 * 1024
MAX_BYTES = MAX_MIB * MIB
_TASK_ID = re.compile(r"[0-9a-f]{32}|[0-9a-zA-Z-]{1,64}")


def parse_ecs_memory(
    record: Mapping[str, Any], *, timestamp: float | None = None, containers: Sequence[str] = ()
) -> Parsed:
    """One ECS ``Type: Container`` record -> one sample, or nothing for a container that is not
    running or not wanted; a record with unusable fields is skipped and counted."""
    status = record.get("ContainerKnownStatus")
    if status is not None and status != "RUNNING":
        return Parsed(Format.ECS)
    name = _name(record.get("ContainerName"))
    task_id = short_str(record.get("TaskId"), 64)
    if not name or not task_id or not _TASK_ID.fullmatch(task_id):
        return Parsed(Format.ECS, skipped=1)
    if containers and not any(fnmatchcase(name, p) for p in containers):
        return Parsed(Format.ECS)
    used = bounded_number(record.get("MemoryUtilized"), MAX_MIB)
    reserved = bounded_number(record.get("MemoryReserved"), MAX_MIB)
    at = bounded_time(epoch_ms(record.get("Timestamp")), timestamp)
    if used is None or at is None:
        return Parsed(Format.ECS, skipped=1)
    cluster = _name(record.get("ClusterName")) or ""
    sample = MemorySample(
        source="ecs",
        event_id=f"ecs-memory:{cluster}/{task_id}/{name}/{round(at * 1000)}",
        at=at,
        used_mb=used,
        limit_mb=reserved or None,
        basis=BASIS_RESERVATION if reserved else BASIS_NONE,
        hosts=(task_id.lower(),),
        container=name,
    )
    return Parsed(Format.ECS, memory=(sample,))


def parse_eks_memory(
    record: Mapping[str, Any], *, timestamp: float | None = None, containers: Sequence[str] = ()
) -> Parsed:
    """One EKS ``Type: Container`` record -> one sample of its working set against the best
    limit it states (see :func:`eks_limit`)."""
    kube = record.get("kubernetes")
    if not isinstance(kube, Mapping):
        return Parsed(Format.MALFORMED, skipped=1)
    status = record.get("container_status")
    if status is not None and status != "Running":
        return Parsed(Format.EKS)
    pod = host_name(kube.get("pod_name"))
    container = _name(kube.get("container_name"))
    if not pod or not container:
        return Parsed(Format.EKS, skipped=1)
    if containers and not any(fnmatchcase(container, p) for p in containers):
        return Parsed(Format.EKS)
    working_set = bounded_number(record.get("container_memory_working_set"), MAX_BYTES)
    at = bounded_time(epoch_ms(record.get("Timestamp")), timestamp)
    if working_set is None or at is None:
        return Parsed(Format.EKS, skipped=1)
    limit, basis = eks_limit(record, working_set)
    namespace = _name(kube.get("namespace_name")) or "default"
    sample = MemorySample(
        source="eks",
        event_id=f"eks-memory:{namespace}/{pod}/{container}/{round(at * 1000)}",
        at=at,
        used_mb=working_set / MIB,
        limit_mb=limit / MIB if limit else None,
        basis=basis,
        hosts=(pod,),
        container=container,
    )
    return Parsed(Format.EKS, memory=(sample,))


def eks_limit(record: Mapping[str, Any], working_set: float) -> tuple[float | None, str]:
    """(bytes, basis): the container's hard limit; else the node's memory (which is what a
    container without a limit can grow to), derived from ``container_memory_utilization``;
    else the request; else nothing."""
    limit = bounded_number(record.get("container_memory_limit"), MAX_BYTES)
    if limit:
        return limit, BASIS_HARD
    over_limit = bounded_number(
        record.get("container_memory_utilization_over_container_limit"), 1e6
    )
    if over_limit and working_set:
        return working_set * 100.0 / over_limit, BASIS_HARD
    of_node = bounded_number(record.get("container_memory_utilization"), 100.0)
    if of_node and working_set:
        return working_set * 100.0 / of_node, BASIS_NODE
    request = bounded_number(record.get("container_memory_request"), MAX_BYTES)
    if request:
        return request, BASIS_REQUEST
    return None, BASIS_NONE


def _name(value: object) -> str | None:
    raw = short_str(value, 255)
    return clean_text(raw, 255) if raw else None
