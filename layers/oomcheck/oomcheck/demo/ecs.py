"""ECS "Task State Change" events for the demo and the tests, written where EventBridge writes them.

moto cannot make ECS stop a task for running out of memory, so the demo's supervisor builds the
event that ECS would have sent when its worker died and writes it into a log group the way an
EventBridge rule with a CloudWatch Logs target does: the whole event as the message, one log
stream per event named after the event id, the event time as the log event's timestamp.
The shape follows the samples in events/ecs-task-stopped-*.json (Fargate, awsvpc).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from datetime import UTC, datetime
from typing import Any

# Fixed namespace: the same task and container always get the same derived ids, so an event
# built twice is the same event (EventBridge would give a duplicate delivery the same id too).
_NAMESPACE = uuid.UUID("5b0f3a52-8c1e-4d8a-9f0e-6c2b7d4a1e93")


def ecs_task_stopped_event(
    *,
    cluster: str,
    task_id: str,
    private_ip: str,
    container: str,
    exit_code: int | None,
    reason: str | None,
    stop_code: str,
    stopped_reason: str,
    at: float,
    region: str = "us-east-1",
    account: str = "123456789012",
    version: int = 3,
) -> dict[str, Any]:
    """An EventBridge "ECS Task State Change" event for a Fargate task that stopped at ``at``.

    ``exit_code`` None leaves ``exitCode`` out (a container that never ran); ``reason`` None
    leaves the container's ``reason`` out, as ECS does when it has none to give.
    """
    task_arn = f"arn:aws:ecs:{region}:{account}:task/{cluster}/{task_id}"
    attachment_id = str(uuid.uuid5(_NAMESPACE, f"{task_arn}/eni"))
    digest = hashlib.sha256(task_arn.encode()).hexdigest()
    mac = ":".join(["0a", *(digest[i : i + 2] for i in range(0, 10, 2))])
    dns_name = f"ip-{private_ip.replace('.', '-')}.{region}.compute.internal"
    started = at - 3600.0
    item: dict[str, Any] = {
        "containerArn": (
            f"arn:aws:ecs:{region}:{account}:container/{cluster}/{task_id}/"
            f"{uuid.uuid5(_NAMESPACE, f'{task_arn}/{container}')}"
        ),
        "lastStatus": "STOPPED",
        "name": container,
        "image": f"{account}.dkr.ecr.{region}.amazonaws.com/{container}:latest",
        "runtimeId": f"{task_id}-{int(digest[10:18], 16) % 10**10:010d}",
        "taskArn": task_arn,
        "networkInterfaces": [{"attachmentId": attachment_id, "privateIpv4Address": private_ip}],
        "cpu": "0",
        "memory": "1024",
    }
    if exit_code is not None:
        item["exitCode"] = exit_code
    if reason is not None:
        item["reason"] = reason
    detail: dict[str, Any] = {
        "attachments": [
            {
                "id": attachment_id,
                "type": "eni",
                "status": "DELETED",
                "details": [
                    {"name": "subnetId", "value": f"subnet-{digest[20:37]}"},
                    {"name": "networkInterfaceId", "value": f"eni-{digest[37:54]}"},
                    {"name": "macAddress", "value": mac},
                    {"name": "privateDnsName", "value": dns_name},
                    {"name": "privateIPv4Address", "value": private_ip},
                ],
            }
        ],
        "attributes": [{"name": "ecs.cpu-architecture", "value": "x86_64"}],
        "availabilityZone": f"{region}a",
        "capacityProviderName": "FARGATE",
        "clusterArn": f"arn:aws:ecs:{region}:{account}:cluster/{cluster}",
        "connectivity": "CONNECTED",
        "connectivityAt": _iso_ms(started - 40.0),
        "containers": [item],
        "cpu": "512",
        "createdAt": _iso_ms(started - 60.0),
        "desiredStatus": "STOPPED",
        "enableExecuteCommand": False,
        "ephemeralStorage": {"sizeInGiB": 20},
        "executionStoppedAt": _iso_ms(at - 1.0),
        "group": f"service:{container}",
        "launchType": "FARGATE",
        "lastStatus": "STOPPED",
        "memory": "1024",
        "overrides": {"containerOverrides": [{"name": container}]},
        "platformVersion": "1.4.0",
        "pullStartedAt": _iso_ms(started - 30.0),
        "pullStoppedAt": _iso_ms(started - 20.0),
        "startedAt": _iso_ms(started),
        "startedBy": f"ecs-svc/{int(digest[:15], 16)}",
        "stopCode": stop_code,
        "stoppedAt": _iso_ms(at),
        "stoppedReason": stopped_reason,
        "stoppingAt": _iso_ms(at - 0.5),
        "taskArn": task_arn,
        "taskDefinitionArn": f"arn:aws:ecs:{region}:{account}:task-definition/{container}:1",
        "updatedAt": _iso_ms(at),
        "version": version,
    }
    return {
        "version": "0",
        "id": str(uuid.uuid5(_NAMESPACE, f"{task_arn}#{version}")),
        "detail-type": "ECS Task State Change",
        "source": "aws.ecs",
        "account": account,
        "time": datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [task_arn],
        "detail": detail,
    }


def put_ecs_event(logs_client: Any, log_group: str, event: dict[str, Any]) -> None:
    """Write ``event`` into ``log_group`` as an EventBridge CloudWatch Logs target would,
    creating the group and the event's stream when they do not exist yet."""
    stream = str(event["id"])
    when = datetime.fromisoformat(str(event["time"]))
    timestamp_ms = round(when.timestamp() * 1000)
    _ensure_stream(logs_client, log_group, stream)
    logs_client.put_log_events(
        logGroupName=log_group,
        logStreamName=stream,
        logEvents=[
            {"timestamp": timestamp_ms, "message": json.dumps(event, separators=(",", ":"))}
        ],
    )


def _ensure_stream(logs_client: Any, log_group: str, stream: str) -> None:
    errors = logs_client.exceptions
    try:
        logs_client.create_log_stream(logGroupName=log_group, logStreamName=stream)
    except errors.ResourceAlreadyExistsException:
        return
    except errors.ResourceNotFoundException:
        # Another writer may have created it meanwhile.
        with contextlib.suppress(errors.ResourceAlreadyExistsException):
            logs_client.create_log_group(logGroupName=log_group)
        logs_client.create_log_stream(logGroupName=log_group, logStreamName=stream)


def _iso_ms(at: float) -> str:
    """ECS's own timestamp format: UTC with milliseconds, 2025-11-24T13:50:30.612Z."""
    moment = datetime.fromtimestamp(at, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
