"""The function's SQS and ECS permissions are exactly what the SQS source and the ECS lookup
use: the calls they make on moto (and on an ECS stand-in) are granted by the role template.yaml
gives with SqsQueueArns, SqsDeadLetterQueueArns and EcsServices set; a receive from a live queue
is not; and nothing is granted that no call needed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from oomcheck.sources.ecs import EcsTasks
from oomcheck.sources.sqs import SqsQueues
from tests.template import cfn, iam
from tests.unit.test_ecs_source import ARN, FakeEcs, fargate_task

SIDS = ("ReadCeleryQueues", "LookAtDeadLetters", "ListWorkerTasks", "DescribeWorkerTasks")


class _AnyAttribute(dict[str, str]):
    """A stand-in resource answering every GetAtt: these statements do not depend on them."""

    def __init__(self, logical: str) -> None:
        super().__init__()
        self.logical = logical

    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: str) -> str:
        return f"arn:aws:stand-in:{cfn.REGION}:{cfn.ACCOUNT}:{self.logical}/{key}"


def _queue_arn(name: str) -> str:
    return f"arn:aws:sqs:{cfn.REGION}:{cfn.ACCOUNT}:{name}"


def _statements() -> list[dict[str, Any]]:
    template = cfn.load()
    physical = {
        logical: cfn.Physical(f"{logical}-ref", _AnyAttribute(logical))
        for logical in template["Resources"]
    }
    stack = cfn.Stack(
        template,
        {
            "BrokerUrlParameter": "/oomcheck/broker-url",
            "SqsQueueArns": _queue_arn("prod-celery"),
            "SqsDeadLetterQueueArns": _queue_arn("prod-celery-dlq"),
            "EcsServices": "celery-prod/celery-worker",
        },
        physical,
    )
    [policy] = stack.properties("CheckerRole", "Policies")["Policies"]
    return [s for s in iam.statements([policy["PolicyDocument"]]) if s.get("Sid") in SIDS]


@pytest.fixture
def sqs() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("sqs", region_name=cfn.REGION)


def _needs(calls: list[tuple[str, dict[str, Any]]]) -> list[iam.Need]:
    out = []
    for op, params in calls:
        if op in ("sqs:GetQueueUrl",):
            out.append(iam.Need(op, _queue_arn(params["QueueName"]), because=op))
        elif op.startswith("sqs:"):
            out.append(iam.Need(op, _queue_arn(params["QueueUrl"].rsplit("/", 1)[-1]), because=op))
        elif op == "ecs:ListTasks":
            out.append(iam.Need(op, "*", (("aws:RequestedRegion", (cfn.REGION,)),), op))
        else:
            for task in params["tasks"]:
                out.append(iam.Need(op, task, because=op))
    return out


def test_the_sqs_and_ecs_statements_grant_exactly_what_the_code_calls(sqs: Any) -> None:
    dlq = sqs.create_queue(QueueName="prod-celery-dlq")["QueueUrl"]
    sqs.create_queue(
        QueueName="prod-celery",
        Attributes={
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": _queue_arn("prod-celery-dlq"), "maxReceiveCount": "3"}
            )
        },
    )
    sqs.send_message(QueueUrl=dlq, MessageBody="{}")
    calls: list[tuple[str, dict[str, Any]]] = []

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        calls.append((f"sqs:{model.name}", dict(params)))

    sqs.meta.events.register("provide-client-params.sqs.*", record)
    SqsQueues(sqs, ("celery",), prefix="prod-").read()
    ecs = FakeEcs([fargate_task(ARN, "10.0.1.5")])
    EcsTasks(ecs, (("celery-prod", "celery-worker"),)).running()
    calls += [(f"ecs:{name}", params) for name, params in ecs.calls]
    # DescribeTasks is granted on this account's tasks, as ECS names them
    calls = [
        (op, {**p, "tasks": [ARN.replace("eu-west-1", cfn.REGION)]})
        if op == "ecs:DescribeTasks"
        else (op, p)
        for op, p in calls
    ]
    needs = _needs(calls)
    statements = _statements()
    assert {s["Sid"] for s in statements} == set(SIDS)
    missing = [(n.action, n.resource) for n in needs if not iam.allowed(statements, n)]
    assert not missing
    # never a receive from the live queue
    live = iam.Need("sqs:ReceiveMessage", _queue_arn("prod-celery"))
    assert not iam.allowed(statements, live)
    unused = [
        (s["Sid"], action)
        for s in statements
        for action in iam._as_list(s["Action"])
        if not any(iam.grants(dict(s, Action=action), n) for n in needs)
    ]
    assert not unused
