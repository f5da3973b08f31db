"""The DynamoDB-backed adapters shared by the consumers and the operations functions."""

from __future__ import annotations

from typing import Any

from payment_outbox.adapters import aws
from payment_outbox.adapters.dynamodb_points import DynamoDbPointsLedger
from payment_outbox.adapters.sms import DynamoDbSmsDeliveryLog
from payment_outbox.bootstrap import once
from payment_outbox.settings import PointsSettings, SmsSettings


def dynamodb() -> Any:
    return aws.client("dynamodb")


@once
def points_ledger() -> DynamoDbPointsLedger:
    return DynamoDbPointsLedger(dynamodb, PointsSettings().points_table_name)


@once
def sms_deliveries() -> DynamoDbSmsDeliveryLog:
    return DynamoDbSmsDeliveryLog(dynamodb, SmsSettings().sms_deliveries_table_name)
