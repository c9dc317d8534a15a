"""`oomcheck setup` (provision.py) makes the table and the topic that template.yaml declares:
the table identically; the topic encrypted with KMS in both, with the one difference the alarms
force (see test_topic_key_admits_the_alarms)."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from moto import mock_aws

from oomcheck import provision
from oomcheck.store.dynamodb import TTL_ATTRIBUTE, table_definition
from tests.template import cfn


@pytest.fixture
def provisioned() -> Any:
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name=cfn.REGION)
        sns = boto3.client("sns", region_name=cfn.REGION)
        provision.ensure_table(dynamodb, "oomcheck-parity")
        arn = provision.ensure_topic(sns, "oomcheck-parity")
        yield {
            "table": dynamodb.describe_table(TableName="oomcheck-parity")["Table"],
            "ttl": dynamodb.describe_time_to_live(TableName="oomcheck-parity")[
                "TimeToLiveDescription"
            ],
            "backups": dynamodb.describe_continuous_backups(TableName="oomcheck-parity")[
                "ContinuousBackupsDescription"
            ],
            "topic": sns.get_topic_attributes(TopicArn=arn)["Attributes"],
        }


def _table(template: dict[str, Any]) -> dict[str, Any]:
    [table] = [r for r in template["Resources"].values() if r["Type"] == "AWS::DynamoDB::Table"]
    return dict(table["Properties"])


def test_table_keys_and_billing_match(template: dict[str, Any], provisioned: Any) -> None:
    declared = _table(template)
    made = provisioned["table"]
    definition = table_definition("x")
    assert sorted(declared["KeySchema"], key=str) == sorted(made["KeySchema"], key=str)
    assert sorted(declared["KeySchema"], key=str) == sorted(definition["KeySchema"], key=str)
    assert sorted(declared["AttributeDefinitions"], key=str) == sorted(
        made["AttributeDefinitions"], key=str
    )
    assert declared["BillingMode"] == definition["BillingMode"] == "PAY_PER_REQUEST"
    assert made["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert not declared.get("GlobalSecondaryIndexes") and not made.get("GlobalSecondaryIndexes")


def test_table_ttl_attribute_matches(template: dict[str, Any], provisioned: Any) -> None:
    declared = _table(template)["TimeToLiveSpecification"]
    assert declared == {"AttributeName": TTL_ATTRIBUTE, "Enabled": True}
    assert provisioned["ttl"]["AttributeName"] == TTL_ATTRIBUTE
    assert provisioned["ttl"]["TimeToLiveStatus"] in ("ENABLED", "ENABLING")


def test_table_point_in_time_recovery_matches(template: dict[str, Any], provisioned: Any) -> None:
    declared = _table(template)["PointInTimeRecoverySpecification"]
    assert declared == {"PointInTimeRecoveryEnabled": True}
    pitr = provisioned["backups"]["PointInTimeRecoveryDescription"]
    assert pitr["PointInTimeRecoveryStatus"] == "ENABLED"


def test_topic_is_kms_encrypted_in_both(template: dict[str, Any], provisioned: Any) -> None:
    topics = [r for r in template["Resources"].values() if r["Type"] == "AWS::SNS::Topic"]
    assert len(topics) == 3  # alerts, chat, alarms
    for topic in topics:
        assert topic["Properties"].get("KmsMasterKeyId"), "a template topic is not encrypted"
    assert (
        provisioned["topic"].get("KmsMasterKeyId") == provision.TOPIC_ATTRIBUTES["KmsMasterKeyId"]
    )


def test_topic_key_admits_the_alarms(template: dict[str, Any]) -> None:
    """The template's alarms publish to their topic, and CloudWatch cannot use the AWS managed
    key aws/sns (its key policy, which nobody can edit, does not admit cloudwatch.amazonaws.com):
    the template's topic therefore uses its own key, whose policy admits CloudWatch. `oomcheck
    setup` creates no alarms and keeps aws/sns."""
    resources = template["Resources"]
    key_ref = resources["AlarmsTopic"]["Properties"]["KmsMasterKeyId"]
    assert key_ref != "alias/aws/sns"
    key = resources[key_ref["Fn::GetAtt"][0]]
    assert key["Type"] == "AWS::KMS::Key" and key["Properties"]["EnableKeyRotation"] is True
    admitted = [
        s
        for s in key["Properties"]["KeyPolicy"]["Statement"]
        if s.get("Principal", {}).get("Service") == "cloudwatch.amazonaws.com"
    ]
    assert admitted and {"kms:Decrypt", "kms:GenerateDataKey*"} <= set(admitted[0]["Action"])
    alarms = [r for r in resources.values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    assert alarms and all({"Ref": "AlarmsTopic"} in r["Properties"]["AlarmActions"] for r in alarms)
