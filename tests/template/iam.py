"""Which IAM permissions an AWS API call needs, and whether a policy grants them.

The mapping is written out per operation, not derived: an operation the code starts calling
without an entry here fails the test that uses it, so the template and this table are updated
together. Policy evaluation covers what template.yaml uses (Allow statements, * and ? wildcards,
StringEquals / ForAllValues:StringEquals / ArnEquals / ArnLike / Bool conditions).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.template.cfn import ACCOUNT, PARTITION, REGION


@dataclass(frozen=True)
class Call:
    service: str  # botocore's service name: dynamodb, sns, ssm, logs...
    operation: str  # the API name: TransactWriteItems
    params: Mapping[str, Any]


@dataclass(frozen=True)
class Need:
    action: str
    resource: str
    context: tuple[tuple[str, tuple[str, ...]], ...] = ()
    because: str = ""

    def ctx(self) -> dict[str, tuple[str, ...]]:
        return dict(self.context)


@dataclass
class KeyInfo:
    """What the test knows about the stack's resources that a call does not say itself."""

    topic_keys: dict[str, str] = field(default_factory=dict)  # topic ARN -> CMK ARN
    parameter_keys: dict[str, str] = field(default_factory=dict)  # SSM name -> CMK ARN


def _arn(service: str, resource: str) -> str:
    return f"arn:{PARTITION}:{service}:{REGION}:{ACCOUNT}:{resource}"


def _table_arn(name: str) -> str:
    return name if name.startswith("arn:") else _arn("dynamodb", f"table/{name}")


def _pk(key: Mapping[str, Any] | None) -> str | None:
    if not key or "pk" not in key:
        return None
    return str(next(iter(key["pk"].values())))


def _query_pk(params: Mapping[str, Any]) -> str | None:
    match = re.search(r"\bpk\s*=\s*(:\w+)", params.get("KeyConditionExpression", ""))
    if not match:
        return None
    value = params.get("ExpressionAttributeValues", {}).get(match.group(1))
    return str(next(iter(value.values()))) if value else None


def _dynamo(action: str, table: str, pk: str | None, because: str) -> Need:
    context: list[tuple[str, tuple[str, ...]]] = [("aws:RequestedRegion", (REGION,))]
    if pk is not None:
        context.append(("dynamodb:LeadingKeys", (pk,)))
    return Need(f"dynamodb:{action}", _table_arn(table), tuple(context), because)


_UNMAPPED = (
    "the code called {op}, which tests/template/iam.py cannot map to IAM permissions: "
    "add it here and grant it in template.yaml"
)
_TRANSACT = {
    "ConditionCheck": "ConditionCheckItem",
    "Put": "PutItem",
    "Delete": "DeleteItem",
    "Update": "UpdateItem",
}


def _via(service: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return (
        ("kms:ViaService", (f"{service}.{REGION}.amazonaws.com",)),
        ("aws:RequestedRegion", (REGION,)),
    )


def _dynamodb_needs(call: Call, op: str) -> list[Need]:
    p = call.params
    if call.operation in ("GetItem", "PutItem", "UpdateItem", "DeleteItem"):
        return [_dynamo(call.operation, p["TableName"], _pk(p.get("Key") or p.get("Item")), op)]
    if op == "dynamodb:Query":
        return [_dynamo("Query", p["TableName"], _query_pk(p), op)]
    if op == "dynamodb:TransactWriteItems":
        out = []
        for item in p["TransactItems"]:
            ((kind, body),) = item.items()
            key = body.get("Key") or body.get("Item")
            out.append(_dynamo(_TRANSACT[kind], body["TableName"], _pk(key), f"{op} {kind}"))
        return out
    raise AssertionError(_UNMAPPED.format(op=op))


def _publish_needs(p: Mapping[str, Any], keys: KeyInfo, op: str) -> list[Need]:
    arn = p["TopicArn"]
    out = [Need("sns:Publish", arn, (("aws:RequestedRegion", (REGION,)),), op)]
    key = keys.topic_keys.get(arn)
    if key:
        why = f"{op} to a topic encrypted with a customer managed key"
        out += [
            Need("kms:GenerateDataKey", key, _via("sns"), why),
            Need("kms:Decrypt", key, _via("sns"), why),
        ]
    return out


def _parameter_needs(call: Call, keys: KeyInfo, op: str) -> list[Need]:
    p = call.params
    region = (("aws:RequestedRegion", (REGION,)),)
    names = [p["Name"]] if "Name" in p else list(p["Names"])
    out = []
    for name in names:
        path = name if name.startswith("/") else "/" + name
        out.append(Need(f"ssm:{call.operation}", _arn("ssm", f"parameter{path}"), region, op))
        key = keys.parameter_keys.get(name)
        if key and p.get("WithDecryption"):
            why = f"{op} of a SecureString encrypted with a customer managed key"
            out.append(Need("kms:Decrypt", key, _via("ssm"), why))
    return out


def needs(call: Call, keys: KeyInfo) -> list[Need]:
    """The permissions one call is authorized against."""
    p = call.params
    op = f"{call.service}:{call.operation}"
    region = (("aws:RequestedRegion", (REGION,)),)
    if call.service == "dynamodb":
        return _dynamodb_needs(call, op)
    if op == "sns:Publish":
        return _publish_needs(p, keys, op)
    if op in ("ssm:GetParameter", "ssm:GetParameters"):
        return _parameter_needs(call, keys, op)
    if op == "secretsmanager:GetSecretValue":
        secret = p["SecretId"]
        arn = secret if secret.startswith("arn:") else _arn("secretsmanager", f"secret:{secret}")
        return [Need(op, arn, region, op)]
    if op == "events:PutEvents":
        out = []
        for entry in p["Entries"]:
            bus = entry.get("EventBusName") or "default"
            arn = bus if bus.startswith("arn:") else _arn("events", f"event-bus/{bus}")
            out.append(Need(op, arn, region, op))
        return out
    if op == "logs:FilterLogEvents":
        group = p.get("logGroupName") or p["logGroupIdentifier"]
        arn = group if group.startswith("arn:") else _arn("logs", f"log-group:{group}")
        return [Need(op, arn.removesuffix(":*"), region, op)]
    if call.service == "sqs":
        return [Need(op, _queue_arn(p), region, f"{op} {p.get('QueueName') or p['QueueUrl']}")]
    raise AssertionError(_UNMAPPED.format(op=op))


def _queue_arn(params: Mapping[str, Any]) -> str:
    """An SQS call's queue: by name (GetQueueUrl, in this account or QueueOwnerAWSAccountId's),
    or by URL (https://sqs.<region>.amazonaws.com/<account>/<name>, as moto's too)."""
    if "QueueName" in params:
        owner = params.get("QueueOwnerAWSAccountId") or ACCOUNT
        return f"arn:{PARTITION}:sqs:{REGION}:{owner}:{params['QueueName']}"
    account, name = str(params["QueueUrl"]).rstrip("/").split("/")[-2:]
    return f"arn:{PARTITION}:sqs:{REGION}:{account}:{name}"


# ---------------------------------------------------------------------- policy evaluation


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _match(pattern: str, value: str) -> bool:
    # IAM: * is any run of characters (slashes and colons too), ? one character.
    return fnmatch.fnmatchcase(value, pattern)


def _conditions_hold(block: Mapping[str, Any], context: Mapping[str, tuple[str, ...]]) -> bool:
    for operator, tests in block.items():
        for key, expected in tests.items():
            wanted = [str(v).lower() if isinstance(v, bool) else str(v) for v in _as_list(expected)]
            present = context.get(key)
            if operator == "ForAllValues:StringEquals":
                if present is not None and not all(v in wanted for v in present):
                    return False
                continue
            if present is None:
                return False
            if operator in ("StringEquals", "ArnEquals"):
                ok = any(v in wanted for v in present)
            elif operator in ("ArnLike", "StringLike"):
                ok = any(_match(w, v) for w in wanted for v in present)
            elif operator == "Bool":
                ok = any(v.lower() in (w.lower() for w in wanted) for v in present)
            else:
                raise AssertionError(f"condition operator {operator} not supported here")
            if not ok:
                return False
    return True


def statements(policy_documents: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [dict(s) for doc in policy_documents for s in _as_list(doc["Statement"])]


def grants(statement: Mapping[str, Any], need: Need) -> bool:
    if statement.get("Effect") != "Allow":
        return False
    if not any(_match(a.lower(), need.action.lower()) for a in _as_list(statement["Action"])):
        return False
    if not any(_match(r, need.resource) for r in _as_list(statement["Resource"])):
        return False
    return _conditions_hold(statement.get("Condition", {}), need.ctx())


def denied(statement_list: Iterable[Mapping[str, Any]], need: Need) -> bool:
    for s in statement_list:
        if s.get("Effect") != "Deny":
            continue
        deny = dict(s, Effect="Allow")
        if grants(deny, need):
            return True
    return False


def allowed(statement_list: list[dict[str, Any]], need: Need) -> bool:
    return not denied(statement_list, need) and any(grants(s, need) for s in statement_list)
