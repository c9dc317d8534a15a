"""`oomcheck setup`: the DynamoDB table and SNS topic (with its KMS key and TLS-only policy) as
template.yaml defines them, and with ``--queue`` an SQS queue subscribed to the topic, whose
policy admits that topic's deliveries.

For moto, a sandbox account, or a CLI deployment without SAM. Idempotent: existing resources
are kept and brought to the same settings.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from oomcheck.store.dynamodb import TTL_ATTRIBUTE, table_definition

# As template.yaml's AlertsKey: a customer managed key, not aws/sns, whose policy admits
# CloudWatch (alarms cannot publish to a topic under aws/sns, whose policy nobody can edit), so
# that alarms added later can use the topic; rotated yearly. tests/template/
# test_provision_parity.py holds these and the topic policy equal to the template's.
KEY_DESCRIPTION = "Encrypts the oomcheck alert topic"


def key_policy(partition: str, account: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AccountAdministersKeyThroughIam",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:{partition}:iam::{account}:root"},
                "Action": "kms:*",
                "Resource": "*",
            },
            {
                "Sid": "CloudWatchAlarmsPublish",
                "Effect": "Allow",
                "Principal": {"Service": "cloudwatch.amazonaws.com"},
                "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
                "Resource": "*",
            },
        ],
    }


def topic_policy(topic_arn: str) -> dict[str, Any]:
    """Publishing only over TLS, as template.yaml's AlertsTopicPolicy."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "TlsOnly",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "sns:Publish",
                "Resource": topic_arn,
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }


@dataclass(frozen=True, slots=True)
class Provisioned:
    table: str
    topic_arn: str
    queue_url: str | None = None


def ensure_table(dynamodb: Any, table: str) -> None:
    try:
        dynamodb.describe_table(TableName=table)
    except dynamodb.exceptions.ResourceNotFoundException:
        dynamodb.create_table(**table_definition(table))
        dynamodb.get_waiter("table_exists").wait(
            TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
        )
    if _ttl_off(dynamodb, table):
        dynamodb.update_time_to_live(
            TableName=table,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
        )
    dynamodb.update_continuous_backups(
        TableName=table,
        PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
    )


def _ttl_off(dynamodb: Any, table: str) -> bool:
    status = dynamodb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    return status.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING")


def ensure_key(kms: Any, sts: Any, topic: str) -> str:
    """The ARN of the topic's key, ``alias/<topic>``; made (rotation on) if the alias is new."""
    alias = f"alias/{topic}"
    try:
        key_arn = str(kms.describe_key(KeyId=alias)["KeyMetadata"]["Arn"])
    except kms.exceptions.NotFoundException:
        caller = sts.get_caller_identity()
        partition = str(caller["Arn"]).split(":")[1]
        created = kms.create_key(
            Description=KEY_DESCRIPTION,
            Policy=json.dumps(key_policy(partition, str(caller["Account"]))),
        )
        key_arn = str(created["KeyMetadata"]["Arn"])
        kms.create_alias(AliasName=alias, TargetKeyId=key_arn)
    kms.enable_key_rotation(KeyId=key_arn)
    return key_arn


def ensure_topic(sns: Any, name: str, key_arn: str) -> str:
    """The topic, encrypted with ``key_arn`` and TLS-only; an existing topic is brought to both."""
    arn = str(sns.create_topic(Name=name)["TopicArn"])
    sns.set_topic_attributes(TopicArn=arn, AttributeName="KmsMasterKeyId", AttributeValue=key_arn)
    sns.set_topic_attributes(
        TopicArn=arn, AttributeName="Policy", AttributeValue=json.dumps(topic_policy(arn))
    )
    return arn


def subscribe_email(sns: Any, topic_arn: str, email: str) -> None:
    sns.subscribe(TopicArn=topic_arn, Protocol="email", Endpoint=email)


def queue_statement(queue_arn: str, topic_arn: str) -> dict[str, Any]:
    """SNS may send to the queue on behalf of ``topic_arn`` alone: the statement AWS documents
    for an SNS-to-SQS subscription (without one the queue refuses SNS's deliveries)."""
    return {
        # Sids are unique within a policy: one statement per topic
        "Sid": "SnsTopic" + re.sub(r"[^A-Za-z0-9]", "", topic_arn.rsplit(":", 1)[-1]),
        "Effect": "Allow",
        "Principal": {"Service": "sns.amazonaws.com"},
        "Action": "sqs:SendMessage",
        "Resource": queue_arn,
        "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
    }


def _admit_topic(sqs: Any, url: str, topic_arn: str) -> str:
    """Puts the topic's statement in the queue's policy, the queue owner's other statements
    kept and the topic's own replaced (so setup twice does not add it twice); the queue's ARN."""
    current = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn", "Policy"])[
        "Attributes"
    ]
    policy = json.loads(current.get("Policy") or '{"Version": "2012-10-17", "Statement": []}')
    statements = policy["Statement"]
    ours = queue_statement(str(current["QueueArn"]), topic_arn)
    policy["Statement"] = [
        s
        for s in ([statements] if isinstance(statements, dict) else statements)
        if _source(s) != topic_arn
    ] + [ours]
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(policy)})
    return str(current["QueueArn"])


def _source(statement: dict[str, Any]) -> object:
    return statement.get("Condition", {}).get("ArnEquals", {}).get("aws:SourceArn")


def subscribe_queue(sns: Any, sqs: Any, topic_arn: str, queue: str) -> str:
    """An SQS queue subscribed to the topic: how the demo and the tests read alerts back. The
    queue admits the topic before the subscription exists, so no first alert is refused."""
    url = str(sqs.create_queue(QueueName=queue)["QueueUrl"])
    arn = _admit_topic(sqs, url, topic_arn)
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn)
    return url


def setup(
    table: str, topic: str, *, email: str | None = None, queue: str | None = None
) -> Provisioned:
    from oomcheck.aws import client

    ensure_table(client("dynamodb"), table)
    sns = client("sns")
    topic_arn = ensure_topic(sns, topic, ensure_key(client("kms"), client("sts"), topic))
    if email:
        subscribe_email(sns, topic_arn, email)
    queue_url = subscribe_queue(sns, client("sqs"), topic_arn, queue) if queue else None
    return Provisioned(table=table, topic_arn=topic_arn, queue_url=queue_url)
