"""`oomcheck setup`: the DynamoDB table and SNS topic as template.yaml defines them.

For moto, a sandbox account, or a CLI deployment without SAM. Idempotent: existing resources
are kept and brought to the same settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from oomcheck.store.dynamodb import TTL_ATTRIBUTE, table_definition

# Encrypted with the AWS-managed key. template.yaml uses a key of its own instead, because its
# CloudWatch alarms publish to the topic and aws/sns's key policy cannot admit CloudWatch; setup
# makes no alarms (tests/template/test_provision_parity.py holds the rest equal).
TOPIC_ATTRIBUTES = {"KmsMasterKeyId": "alias/aws/sns"}


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


def ensure_topic(sns: Any, name: str) -> str:
    return str(sns.create_topic(Name=name, Attributes=TOPIC_ATTRIBUTES)["TopicArn"])


def subscribe_email(sns: Any, topic_arn: str, email: str) -> None:
    sns.subscribe(TopicArn=topic_arn, Protocol="email", Endpoint=email)


def subscribe_queue(sns: Any, sqs: Any, topic_arn: str, queue: str) -> str:
    """An SQS queue subscribed to the topic: how the demo and the tests read alerts back."""
    url = str(sqs.create_queue(QueueName=queue)["QueueUrl"])
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn)
    return url


def setup(
    table: str, topic: str, *, email: str | None = None, queue: str | None = None
) -> Provisioned:
    from oomcheck.aws import client

    ensure_table(client("dynamodb"), table)
    sns = client("sns")
    topic_arn = ensure_topic(sns, topic)
    if email:
        subscribe_email(sns, topic_arn, email)
    queue_url = subscribe_queue(sns, client("sqs"), topic_arn, queue) if queue else None
    return Provisioned(table=table, topic_arn=topic_arn, queue_url=queue_url)
