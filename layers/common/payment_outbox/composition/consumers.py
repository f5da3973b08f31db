"""PointsConsumer and SmsConsumer: each SQS record handled once per envelope messageId.

No SQLAlchemy here: the consumers' cold start never pays for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from payment_outbox.adapters.aws import AwsClients
from payment_outbox.adapters.dynamodb_points import DynamoDbPointsLedger
from payment_outbox.adapters.idempotent_record_handler import IdempotentEnvelopeHandler
from payment_outbox.adapters.sms import DynamoDbSmsDeliveryLog, SnsSmsSender
from payment_outbox.clock import SystemClock
from payment_outbox.domain.envelope import Envelope
from payment_outbox.services.points import credit_points
from payment_outbox.services.sms import send_sms
from payment_outbox.settings import IdempotencySettings, PointsSettings, SmsSettings


def build_points_consumer() -> IdempotentEnvelopeHandler:
    clients, clock = AwsClients(), SystemClock()
    ledger = DynamoDbPointsLedger(clients.factory("dynamodb"), PointsSettings().points_table_name)
    return _once_per_message(
        lambda envelope: credit_points(envelope, ledger, clock).to_dict(), "points", clients
    )


def build_sms_consumer() -> IdempotentEnvelopeHandler:
    clients, clock = AwsClients(), SystemClock()
    sender = SnsSmsSender(clients.factory("sns"))
    deliveries = DynamoDbSmsDeliveryLog(clients.factory("dynamodb"), SmsSettings().sms_deliveries_table_name)
    return _once_per_message(
        lambda envelope: send_sms(envelope, sender, deliveries, clock).to_dict(), "sms", clients
    )


def _once_per_message(
    handle: Callable[[Envelope], dict[str, Any]], key_prefix: str, clients: AwsClients
) -> IdempotentEnvelopeHandler:
    settings = IdempotencySettings()
    return IdempotentEnvelopeHandler(
        handle,
        table_name=settings.idempotency_table_name,
        ttl_seconds=settings.idempotency_ttl_seconds,
        dynamodb_client=clients.factory("dynamodb")(),
        key_prefix=key_prefix,
    )
