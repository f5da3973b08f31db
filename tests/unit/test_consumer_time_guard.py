"""A consumer never starts a record it may not finish before the invocation's timeout (an SMS send cut
short by the timeout is an uncertain SMS): the record is failed untouched and comes back later. And
the uncertain-SMS alarm watches the metric the consumer emits."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyPersistenceLayerError
from botocore.stub import Stubber

from payment_outbox.adapters.idempotent_record_handler import IdempotentEnvelopeHandler
from payment_outbox.composition.consumers import UNCERTAIN_SMS_METRIC
from payment_outbox.errors import NotEnoughTimeLeft
from payment_outbox_dev.checks.template import load_template
from tests.support import ROOT

pytestmark = pytest.mark.unit


class Context:
    """A Lambda context whose remaining time is read from a list, one value per call."""

    function_name = "SmsConsumerFunction"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:SmsConsumerFunction"
    aws_request_id = "request-1"

    def __init__(self, *remaining_seconds: float) -> None:
        self._remaining = list(remaining_seconds)

    def get_remaining_time_in_millis(self) -> int:
        seconds = self._remaining.pop(0) if len(self._remaining) > 1 else self._remaining[0]
        return int(seconds * 1000)


def no_dynamodb() -> Any:
    """A DynamoDB client that answers no call at all (each raises ``UnStubbedResponseError``)."""
    client = boto3.client("dynamodb", region_name="us-east-1")
    Stubber(client).activate()
    return client


def record() -> SQSRecord:
    envelope = {
        "messageId": "m-1",
        "topic": "topic.sms",
        "businessKey": "PO1",
        "businessType": "ORDER_PAID",
        "occurredAt": "2026-12-06T10:00:00",
        "payload": {"phone": "+8613812345678", "templateId": "ORDER_PAY_SUCCESS", "params": ["PO1", "1.00"]},
    }
    return SQSRecord({"messageId": "sqs-1", "body": json.dumps(envelope), "attributes": {}})


def handler(handled: list[str]) -> IdempotentEnvelopeHandler:
    return IdempotentEnvelopeHandler(
        lambda envelope: handled.append(envelope.message_id) or {},
        table_name="idempotency",
        ttl_seconds=3600,
        dynamodb_client=no_dynamodb(),
        key_prefix="sms",
        record_seconds=49,
    )


def test_a_record_is_not_started_with_less_time_left_than_its_worst_case() -> None:
    # Given an invocation of 60 s with 30 s left when the record comes up
    handled: list[str] = []
    consumer = handler(handled)
    consumer.register(Context(60, 30))  # type: ignore[arg-type]
    # When the record is handled / Then it fails untouched (no DynamoDB call: it would raise another
    # error; nothing handled)
    with pytest.raises(NotEnoughTimeLeft):
        consumer(record())
    assert handled == []


def test_a_function_shorter_than_one_record_is_not_held_to_the_rule() -> None:
    # Given an invocation whose whole timeout is under one record's worst case (a time-scaled local run)
    consumer = handler([])
    consumer.register(Context(4, 3))  # type: ignore[arg-type]
    # When the record is handled / Then it starts: it reaches the idempotency record's put
    with pytest.raises(IdempotencyPersistenceLayerError, match="PutItem"):
        consumer(record())


def test_the_uncertain_sms_alarm_watches_the_consumers_metric() -> None:
    alarm = load_template(ROOT / "template.yaml")["Resources"]["SmsDeliveriesUncertainAlarm"]["Properties"]
    assert alarm["MetricName"] == UNCERTAIN_SMS_METRIC
    assert alarm["Dimensions"] == [{"Name": "service", "Value": "sms-consumer"}]
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (1, "GreaterThanOrEqualToThreshold")
    assert alarm["AlarmActions"] == [{"Ref": "OpsTopic"}]
