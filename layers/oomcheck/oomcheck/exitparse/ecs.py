"""ECS "ECS Task State Change" events routed by an EventBridge rule to a log group (the log
message is the whole event as JSON). Only tasks whose ``detail.lastStatus`` is STOPPED count; one
piece of evidence per stopped container, since the exit code and the OOM reason are per container
and the container name is what tells the Celery worker from its sidecars."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Any

from oomcheck.exitparse.common import (
    EXIT_SIGKILL,
    EXIT_SIGTERM,
    MALFORMED,
    Format,
    Parsed,
    bounded_time,
    clean_text,
    first_time,
    host_name,
    int_or_none,
    short_str,
)
from oomcheck.model import Cause, ExitEvidence

__all__ = [
    "DELIBERATE_STOP_CODES",
    "MAX_CONTAINERS",
    "OOM_REASON_PREFIX",
    "ecs_cause",
    "parse_ecs_event",
]

# An ECS task definition holds at most 10 containers.
MAX_CONTAINERS = 32

OOM_REASON_PREFIX = "outofmemoryerror"
# ECS stop codes that mean someone (a user, the service scheduler scaling in or deploying, a Spot
# reclaim or a termination notice) asked the task to stop: ECS sent SIGTERM, then SIGKILL after
# stopTimeout. They make a container with no exit code clean; an exit code still speaks for itself.
DELIBERATE_STOP_CODES = frozenset(
    {"UserInitiated", "ServiceSchedulerInitiated", "SpotInterruption", "TerminationNotice"}
)
# Stops in which ECS sends SIGTERM to the containers still running: a 143 (SIGTERM) there is the
# stop doing what it was asked. EssentialContainerExited is one: the other containers get SIGTERM.
_SIGTERM_STOP_CODES = DELIBERATE_STOP_CODES | {"EssentialContainerExited"}


def parse_ecs_event(
    event: Mapping[str, Any], *, timestamp: float | None = None, containers: Sequence[str] = ()
) -> Parsed:
    """One "ECS Task State Change" event -> one ExitEvidence per stopped container.

    Cause and cleanliness, per container, first rule that applies:
    1. ``reason`` starts with "OutOfMemoryError" (any case): OOM_KILLED, not clean.
    2. exit code 0: the process ended on its own terms (Celery exits 0 after a warm shutdown):
       clean, whatever the stop code.
    3. exit code 143 when ECS was stopping the task (a deliberate stop code, or
       EssentialContainerExited): the SIGTERM ECS sent did it; clean.
    4. exit code 137: KILLED, not clean, under any stop code; after a deliberate stop it means the
       warm shutdown outlived stopTimeout and the tasks still running were cut off.
    5. any other exit code: EXITED, not clean.
    6. no exit code: UNKNOWN; clean when the stop was deliberate or the task never started
       (TaskFailedToStart), not clean otherwise (an instance that vanished under its tasks).
    """
    detail = event.get("detail")
    if not isinstance(detail, Mapping):
        return MALFORMED
    if detail.get("lastStatus") != "STOPPED":
        return Parsed(Format.ECS)
    task_arn = short_str(detail.get("taskArn"), 400)
    if not task_arn:
        return Parsed(Format.ECS, skipped=1)
    task_id = task_arn.rsplit("/", 1)[-1]
    cluster = short_str(detail.get("clusterArn"), 400) or ""
    cluster_name = cluster.rsplit("/", 1)[-1] if cluster else ""
    stop_code = short_str(detail.get("stopCode"), 64) or ""
    stopped_reason = short_str(detail.get("stoppedReason"), 255) or ""
    at = bounded_time(
        first_time(detail.get("stoppedAt"), detail.get("executionStoppedAt"), event.get("time")),
        timestamp,
    )
    if at is None:
        return Parsed(Format.ECS, skipped=1)

    task_hosts = _ecs_task_hosts(detail)
    raw_containers = detail.get("containers")
    if not isinstance(raw_containers, list):
        return Parsed(Format.ECS, skipped=1)
    evidence: list[ExitEvidence] = []
    skipped = max(0, len(raw_containers) - MAX_CONTAINERS)
    for item in raw_containers[:MAX_CONTAINERS]:
        if not isinstance(item, Mapping):
            skipped += 1
            continue
        raw_name = short_str(item.get("name"), 255)
        name = clean_text(raw_name, 255) if raw_name else None
        if not name:
            skipped += 1
            continue
        if containers and not any(fnmatchcase(name, p) for p in containers):
            continue
        exit_code = int_or_none(item.get("exitCode"), low=-(2**31), high=2**31 - 1)
        if item.get("exitCode") is not None and exit_code is None:
            skipped += 1
            continue
        reason = short_str(item.get("reason"), 255)
        cause, clean = ecs_cause(exit_code, reason, stop_code)
        hosts = [*task_hosts, *_ecs_container_hosts(item)]
        hosts.append(task_id)
        # Without an exit code or reason, the same stop may be reported again by a later version
        # of the event with the code filled in: such an uninformative stop gets an id of its own
        # so that the informative one still counts. Versions repeat the same stop otherwise.
        informative = exit_code is not None or bool(reason)
        event_id = f"ecs:{cluster_name}/{task_id}/{name}" + ("" if informative else ":no-exit")
        code_text = f"exitCode {exit_code}" if exit_code is not None else "no exitCode"
        why = f"{stop_code}: {stopped_reason}" if stop_code and stopped_reason else stop_code
        text = " ".join(
            p
            for p in (
                code_text,
                reason or "",
                f"(task {task_id[:12]} container {name}" + (f", {why})" if why else ")"),
            )
            if p
        )
        evidence.append(
            ExitEvidence(
                source="ecs",
                event_id=event_id,
                at=at,
                cause=cause,
                exit_code=exit_code,
                text=clean_text(text),
                hosts=tuple(dict.fromkeys(h for h in hosts if h)),
                process=name,
                clean=clean,
            )
        )
    return Parsed(Format.ECS, tuple(evidence), skipped)


def ecs_cause(exit_code: int | None, reason: str | None, stop_code: str) -> tuple[Cause, bool]:
    """(cause, clean) of one stopped ECS container; the rules are in parse_ecs_event."""
    if reason and reason.strip().lower().startswith(OOM_REASON_PREFIX):
        return Cause.OOM_KILLED, False
    if exit_code == 0:
        return Cause.EXITED, True
    if exit_code == EXIT_SIGTERM and stop_code in _SIGTERM_STOP_CODES:
        return Cause.KILLED, True
    if exit_code == EXIT_SIGKILL:
        return Cause.KILLED, False
    if exit_code is not None:
        return Cause.EXITED, False
    return Cause.UNKNOWN, stop_code in DELIBERATE_STOP_CODES or stop_code == "TaskFailedToStart"


def _ecs_task_hosts(detail: Mapping[str, Any]) -> list[str]:
    """The task ENI's private IPv4 address and DNS name (awsvpc: Fargate, or EC2 awsvpc)."""
    hosts: list[str] = []
    attachments = detail.get("attachments")
    if not isinstance(attachments, list):
        return hosts
    for attachment in attachments[:8]:
        if not isinstance(attachment, Mapping) or attachment.get("type") not in (None, "eni"):
            continue
        details = attachment.get("details")
        if not isinstance(details, list):
            continue
        for pair in details[:32]:
            if not isinstance(pair, Mapping):
                continue
            if pair.get("name") in ("privateIPv4Address", "privateDnsName"):
                host = host_name(pair.get("value"))
                if host:
                    hosts.append(host)
    return hosts


def _ecs_container_hosts(container: Mapping[str, Any]) -> list[str]:
    """The container's ENI addresses, and under bridge networking on EC2 its Docker hostname:
    the first 12 hex digits of its runtime (container) id."""
    hosts: list[str] = []
    interfaces = container.get("networkInterfaces")
    if isinstance(interfaces, list):
        for interface in interfaces[:8]:
            if isinstance(interface, Mapping):
                host = host_name(interface.get("privateIpv4Address"))
                if host:
                    hosts.append(host)
    runtime_id = container.get("runtimeId")
    if isinstance(runtime_id, str) and _DOCKER_ID.fullmatch(runtime_id):
        hosts.append(runtime_id[:12])
    return hosts


_DOCKER_ID = re.compile(r"[0-9a-f]{64}")
