"""The consumers: points and SMS, each behind Powertools idempotency. No SQLAlchemy here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from payment_outbox.adapters import aws
from payment_outbox.adapters.idempotent_record_handler import IdempotentEnvelopeHandler
from payment_outbox.adapters.sms import SnsSmsSender
from payment_outbox.bootstrap import clock, once
from payment_outbox.bootstrap.dynamodb import dynamodb, points_ledger, sms_deliveries
from payment_outbox.domain.envelope import Envelope
from payment_outbox.services.points import credit_points
from payment_outbox.services.sms import send_sms
from payment_outbox.settings import IdempotencySettings


@once
def points_consumer() -> IdempotentEnvelopeHandler:
    ledger = points_ledger()
    return _idempotent(lambda envelope: credit_points(envelope, ledger, clock).to_dict(), "points")


@once
def sms_consumer() -> IdempotentEnvelopeHandler:
    sender, deliveries = SnsSmsSender(lambda: aws.client("sns")), sms_deliveries()
    return _idempotent(lambda envelope: send_sms(envelope, sender, deliveries, clock).to_dict(), "sms")


def _idempotent(handle: Callable[[Envelope], dict[str, Any]], key_prefix: str) -> IdempotentEnvelopeHandler:
    settings = IdempotencySettings()
    return IdempotentEnvelopeHandler(
        handle,
        table_name=settings.idempotency_table_name,
        ttl_seconds=settings.idempotency_ttl_seconds,
        dynamodb_client=dynamodb(),
        key_prefix=key_prefix,
    )
