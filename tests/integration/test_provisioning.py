"""The emulator is provisioned to the template's settings, all of them.

Every attribute the template sets on each queue (retention, encryption, redrive, the queue policy),
topic, subscription and table (billing, key schema, encryption, TTL, point-in-time recovery) is read
back from the emulator and compared with the template — derived from the template, so a property
added there is checked here without a change. The one deliberate difference, the local stack's
time-scaled visibility timeouts, is checked against ``payment_outbox_dev.local.timing``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from payment_outbox_dev.checks.template import load_template, resources_of_type
from payment_outbox_dev.local.provision import (
    Provisioned,
    provision,
    queue_attributes,
    resolve_deep,
    subscription_attributes,
    topic_attributes,
)
from payment_outbox_dev.local.timing import scaled_timing
from tests.support import ROOT

pytestmark = pytest.mark.integration

TEMPLATE = load_template(ROOT / "template.yaml")
REGION = "us-east-1"


#: Attributes the template sets that moto accepts but does not report back (checked nowhere else).
EMULATOR_DOES_NOT_REPORT = frozenset({"FifoThroughputScope"})


@pytest.fixture(params=["false", "true"], ids=["standard", "ordered-delivery"])
def provisioned(request: pytest.FixtureRequest) -> Iterator[Provisioned]:
    """Both shapes of the template: standard, and OrderedDelivery=true (FIFO topic and queues)."""
    with mock_aws():
        yield provision(TEMPLATE, region=REGION, parameters={"OrderedDelivery": request.param})


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def _same(expected: str, reported: str) -> bool:
    return bool(_json_or_text(expected) == _json_or_text(reported))


def test_every_queue_attribute_the_template_sets_is_what_the_emulator_reports(
    provisioned: Provisioned,
) -> None:
    sqs = boto3.client("sqs", region_name=REGION)
    queues = resources_of_type(TEMPLATE, "AWS::SQS::Queue")
    assert queues
    for logical_id, resource in queues.items():
        # Given what the template sets on the queue
        expected = queue_attributes(provisioned, resource.get("Properties", {}))
        assert expected, logical_id

        # When the emulator is asked for the queue's attributes
        reported = sqs.get_queue_attributes(QueueUrl=provisioned.refs[logical_id], AttributeNames=["All"])[
            "Attributes"
        ]

        # Then each one is the template's
        for name, value in expected.items():
            assert name in reported, (logical_id, name)
            assert _same(value, reported[name]), (logical_id, name, value, reported[name])


def test_dead_letter_queues_keep_messages_the_templates_14_days(provisioned: Provisioned) -> None:
    sqs = boto3.client("sqs", region_name=REGION)
    for logical_id in ("PointsDeadLetterQueue", "SmsDeadLetterQueue"):
        retention = TEMPLATE["Resources"][logical_id]["Properties"]["MessageRetentionPeriod"]
        assert retention == 14 * 24 * 3600
        reported = sqs.get_queue_attributes(
            QueueUrl=provisioned.refs[logical_id], AttributeNames=["MessageRetentionPeriod"]
        )["Attributes"]
        assert reported["MessageRetentionPeriod"] == str(retention)


def test_every_queue_policy_of_the_template_is_set_on_its_queues(provisioned: Provisioned) -> None:
    sqs = boto3.client("sqs", region_name=REGION)
    policies = resources_of_type(TEMPLATE, "AWS::SQS::QueuePolicy")
    assert policies
    for logical_id, resource in policies.items():
        # Given the policy document, resolved against what was provisioned
        props = resource["Properties"]
        expected = resolve_deep(provisioned, props["PolicyDocument"])
        for queue in props["Queues"]:
            # Then each queue it names reports exactly that policy
            url = provisioned.resolve(queue)
            reported = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"])["Attributes"]
            assert json.loads(reported["Policy"]) == expected, logical_id


def test_every_topic_and_subscription_attribute_is_the_templates(provisioned: Provisioned) -> None:
    sns = boto3.client("sns", region_name=REGION)
    for logical_id, resource in resources_of_type(TEMPLATE, "AWS::SNS::Topic").items():
        expected = topic_attributes(provisioned, resource.get("Properties", {}))
        reported = sns.get_topic_attributes(TopicArn=provisioned.refs[logical_id])["Attributes"]
        for name, value in expected.items():
            if name in EMULATOR_DOES_NOT_REPORT:
                continue
            assert _same(value, reported.get(name, "")), (logical_id, name, value, reported.get(name))

    subscriptions = [
        sub
        for topic in resources_of_type(TEMPLATE, "AWS::SNS::Topic")
        for page in sns.get_paginator("list_subscriptions_by_topic").paginate(
            TopicArn=provisioned.refs[topic]
        )
        for sub in page["Subscriptions"]
    ]
    for logical_id, resource in resources_of_type(TEMPLATE, "AWS::SNS::Subscription").items():
        props = resource["Properties"]
        if props.get("Protocol") != "sqs":
            continue
        endpoint = provisioned.resolve(props["Endpoint"])
        found = [s for s in subscriptions if s["Endpoint"] == endpoint]
        assert len(found) == 1, logical_id
        reported = sns.get_subscription_attributes(SubscriptionArn=found[0]["SubscriptionArn"])["Attributes"]
        for name, value in subscription_attributes(provisioned, props).items():
            assert _same(value, reported.get(name, "")), (logical_id, name, value, reported.get(name))


def test_every_table_setting_of_the_template_is_the_emulators(provisioned: Provisioned) -> None:
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    tables = resources_of_type(TEMPLATE, "AWS::DynamoDB::Table")
    assert tables
    for logical_id, resource in tables.items():
        props = resource["Properties"]
        name = provisioned.refs[logical_id]
        table = dynamodb.describe_table(TableName=name)["Table"]
        assert table["KeySchema"] == props["KeySchema"], logical_id
        assert sorted(table["AttributeDefinitions"], key=str) == sorted(
            props["AttributeDefinitions"], key=str
        )
        if "BillingMode" in props:
            assert table["BillingModeSummary"]["BillingMode"] == props["BillingMode"], logical_id
        if props.get("SSESpecification", {}).get("SSEEnabled"):
            assert table["SSEDescription"]["Status"] == "ENABLED", logical_id
        ttl = props.get("TimeToLiveSpecification")
        if ttl:
            reported = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
            assert reported["AttributeName"] == ttl["AttributeName"], logical_id
            assert (reported["TimeToLiveStatus"] == "ENABLED") is bool(ttl["Enabled"]), logical_id
        recovery = props.get("PointInTimeRecoverySpecification")
        if recovery:
            reported = dynamodb.describe_continuous_backups(TableName=name)["ContinuousBackupsDescription"]
            status = reported["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"]
            assert (status == "ENABLED") is bool(recovery["PointInTimeRecoveryEnabled"]), logical_id


def test_the_local_stacks_shortened_visibility_is_the_one_difference() -> None:
    # Given the visibility timeouts of the local stack's time scale
    timing = scaled_timing(TEMPLATE, 1 / 15)
    with mock_aws():
        # When the emulator is provisioned with them
        out = provision(TEMPLATE, region=REGION, visibility_timeouts=timing.visibilities)
        sqs = boto3.client("sqs", region_name=REGION)
        for logical_id, resource in resources_of_type(TEMPLATE, "AWS::SQS::Queue").items():
            reported = sqs.get_queue_attributes(QueueUrl=out.refs[logical_id], AttributeNames=["All"])[
                "Attributes"
            ]
            # Then the polled queues have the shortened visibility, every other attribute the template's
            for name, value in queue_attributes(out, resource.get("Properties", {})).items():
                if name == "VisibilityTimeout":
                    assert reported[name] == str(timing.visibilities[logical_id])
                else:
                    assert _same(value, reported[name]), (logical_id, name)
