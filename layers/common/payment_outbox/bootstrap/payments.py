"""The payment API's use cases and the callback signature check."""

from __future__ import annotations

import time
from datetime import timedelta

from payment_outbox.adapters.secrets import webhook_secrets
from payment_outbox.bootstrap import clock, once
from payment_outbox.bootstrap.database import unit_of_work
from payment_outbox.bootstrap.outbox import immediate_relay, outbox_settings
from payment_outbox.bootstrap.secrets import secret
from payment_outbox.domain import signature
from payment_outbox.errors import ConfigurationError
from payment_outbox.services.payments import PaymentService
from payment_outbox.services.relay import ImmediatePublisher
from payment_outbox.settings import WebhookSettings


@once
def payments() -> PaymentService:
    return PaymentService(
        unit_of_work,
        clock,
        handoff_lease=timedelta(seconds=outbox_settings().outbox_lease_seconds),
        after_commit=ImmediatePublisher(immediate_relay),
    )


@once
def webhook_settings() -> WebhookSettings:
    return WebhookSettings()


def verify_payment_signature(header: str | None, raw_body: bytes) -> None:
    """Raise ``SignatureRejected`` unless the callback is signed with the current (or previous) secret."""
    settings = webhook_settings()
    if settings.webhook_secret is not None:
        secrets = [settings.webhook_secret.get_secret_value()]
    elif settings.webhook_secret_arn:
        secrets = webhook_secrets(secret(settings.webhook_secret_arn).value())
    else:
        raise ConfigurationError("no webhook secret configured")
    signature.verify(
        header, raw_body, secrets, now=time.time(), tolerance_seconds=settings.webhook_tolerance_seconds
    )
