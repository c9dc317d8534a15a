"""`oomcheck setup` (provision.py) makes the table and the topic that template.yaml declares:
the table identically; the topic encrypted with a customer managed KMS key of the same policy
and rotation, and published to over TLS only, as the template's alert topic."""

from __future__ import annotations

import json
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
        kms = boto3.client("kms", region_name=cfn.REGION)
        sts = boto3.client("sts", region_name=cfn.REGION)
        provision.ensure_table(dynamodb, "oomcheck-parity")
        key_arn = provision.ensure_key(kms, sts, "oomcheck-parity")
        arn = provision.ensure_topic(sns, "oomcheck-parity", key_arn)
        yield {
            "table": dynamodb.describe_table(TableName="oomcheck-parity")["Table"],
            "ttl": dynamodb.describe_time_to_live(TableName="oomcheck-parity")[
                "TimeToLiveDescription"
            ],
            "backups": dynamodb.describe_continuous_backups(TableName="oomcheck-parity")[
                "ContinuousBackupsDescription"
            ],
            "topic": sns.get_topic_attributes(TopicArn=arn)["Attributes"],
            "topic_arn": arn,
            "key": kms.describe_key(KeyId=key_arn)["KeyMetadata"],
            "key_policy": json.loads(
                kms.get_key_policy(KeyId=key_arn, PolicyName="default")["Policy"]
            ),
            "rotation": kms.get_key_rotation_status(KeyId=key_arn)["KeyRotationEnabled"],
        }


def _stack(template: dict[str, Any], topic_arn: str) -> cfn.Stack:
    return cfn.Stack(
        template,
        {"BrokerUrlParameter": "/oomcheck/broker-url"},
        physical={"AlertsTopic": cfn.Physical(topic_arn)},
    )


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
    assert provisioned["topic"].get("KmsMasterKeyId") == provisioned["key"]["Arn"]


def test_topic_key_is_a_customer_key_as_in_the_template(
    template: dict[str, Any], provisioned: Any
) -> None:
    """Same key choice: the alert topic's key is the stack's own, not aws/sns, with the same
    policy (the account's IAM, and CloudWatch alarms) and rotation."""
    resources = template["Resources"]
    key_ref = resources["AlertsTopic"]["Properties"]["KmsMasterKeyId"]
    declared = resources[key_ref["Fn::GetAtt"][0]]["Properties"]
    assert provisioned["key"]["KeyManager"] == "CUSTOMER"
    assert provisioned["key"]["KeyState"] == "Enabled"
    assert provisioned["rotation"] is declared["EnableKeyRotation"] is True
    stack = _stack(template, provisioned["topic_arn"])
    assert provisioned["key_policy"] == stack.resolve(declared["KeyPolicy"])


def test_topic_policy_is_tls_only_as_in_the_template(
    template: dict[str, Any], provisioned: Any
) -> None:
    resources = template["Resources"]
    [declared] = [
        r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::SNS::TopicPolicy"
        and r["Properties"]["Topics"] == [{"Ref": "AlertsTopic"}]
    ]
    stack = _stack(template, provisioned["topic_arn"])
    made = json.loads(provisioned["topic"]["Policy"])
    assert made == stack.resolve(declared["PolicyDocument"])
    [deny] = made["Statement"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {
        "Bool": {"aws:SecureTransport": "false"}
    }


def test_setup_twice_keeps_one_key_and_brings_an_old_topic_to_the_template() -> None:
    """Idempotent: a second setup finds the key by its alias; a topic made earlier under aws/sns
    (as setup once made it) gets the customer key and the TLS-only policy."""
    with mock_aws():
        sns = boto3.client("sns", region_name=cfn.REGION)
        kms = boto3.client("kms", region_name=cfn.REGION)
        sts = boto3.client("sts", region_name=cfn.REGION)
        old = sns.create_topic(Name="t", Attributes={"KmsMasterKeyId": "alias/aws/sns"})
        first = provision.ensure_key(kms, sts, "t")
        second = provision.ensure_key(kms, sts, "t")
        arn = provision.ensure_topic(sns, "t", second)
        attributes = sns.get_topic_attributes(TopicArn=arn)["Attributes"]
        customer = [
            k
            for k in kms.list_keys()["Keys"]
            if kms.describe_key(KeyId=k["KeyId"])["KeyMetadata"]["KeyManager"] == "CUSTOMER"
        ]
    assert first == second and len(customer) == 1
    assert arn == old["TopicArn"]
    assert attributes["KmsMasterKeyId"] == first
    assert json.loads(attributes["Policy"])["Statement"][0]["Sid"] == "TlsOnly"


def test_topic_key_admits_the_alarms(template: dict[str, Any]) -> None:
    """The template's alarms publish to their topic, and CloudWatch cannot use the AWS managed
    key aws/sns (its key policy, which nobody can edit, does not admit cloudwatch.amazonaws.com):
    the template's topic therefore uses its own key, whose policy admits CloudWatch (and so does
    `oomcheck setup`'s, see test_topic_key_is_a_customer_key_as_in_the_template)."""
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
