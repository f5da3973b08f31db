"""PaymentApi: orders, the payment callback and its signature check, and the after-commit publish.

No idempotency layer here: the API's cold start never pays for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit

from payment_outbox import timeouts
from payment_outbox.adapters.aws import AwsClients
from payment_outbox.adapters.secrets import (
    CachedSecret,
    ConfiguredWebhookSecret,
    SecretsManagerWebhookSecrets,
)
from payment_outbox.api.payments import CallerIdentification
from payment_outbox.clock import SystemClock
from payment_outbox.composition.database import connect_database
from payment_outbox.composition.relay import outbox_relay, relay_publisher
from payment_outbox.ports import WebhookSecrets
from payment_outbox.services.payments import CallbackSignatures, PaymentService
from payment_outbox.services.relay import RelayAfterCommitPublisher, RelayReport
from payment_outbox.settings import (
    CallerSettings,
    DatabaseSettings,
    MoneySettings,
    OutboxSettings,
    WebhookSettings,
)


@dataclass(frozen=True)
class PaymentApi:
    payments: PaymentService
    signatures: CallbackSignatures
    #: Who calls the order routes, from the request context (CALLER_IDENTITY).
    callers: CallerIdentification


def build_payment_api() -> PaymentApi:
    clients, clock = AwsClients(), SystemClock()
    database = connect_database(DatabaseSettings(), clients, timeouts.SECRETS_ON_HOT_PATH)
    outbox = OutboxSettings()
    webhook = WebhookSettings()
    callers = CallerSettings()
    money = MoneySettings()

    # The after-commit publish: one attempt with short timeouts, so the callback answers quickly.
    after_commit_relay = outbox_relay(
        outbox, database, relay_publisher(outbox, clients, after_commit=True), clock=clock
    )
    payments = PaymentService(
        database.unit_of_work,
        clock,
        after_commit_lease=timedelta(seconds=outbox.outbox_lease_seconds),
        after_commit=RelayAfterCommitPublisher(
            lambda: after_commit_relay, on_report=count_after_commit_publish
        ),
        money=money.rules(),
    )
    signatures = CallbackSignatures(
        _webhook_secrets(webhook, clients), clock, tolerance_seconds=webhook.webhook_tolerance_seconds
    )
    return PaymentApi(
        payments,
        signatures,
        CallerIdentification(callers.caller_identity, callers.caller_user_claim),
    )


def count_after_commit_publish(report: RelayReport) -> None:
    """The after-commit path's share of MessagesPublished / MessagesRetried (service=payment-api).

    Powertools' Metrics instances share one metric set: the handler's ``log_metrics`` flushes these.
    """
    metrics = Metrics()
    metrics.add_metric(name="MessagesPublished", unit=MetricUnit.Count, value=report.published)
    metrics.add_metric(name="MessagesRetried", unit=MetricUnit.Count, value=report.retried)


def _webhook_secrets(settings: WebhookSettings, clients: AwsClients) -> WebhookSecrets:
    if settings.webhook_secret is not None:
        return ConfiguredWebhookSecret(settings.webhook_secret.get_secret_value())
    arn = settings.webhook_secret_arn or ""  # the settings model insists on one of the two
    return SecretsManagerWebhookSecrets(
        CachedSecret(arn, clients.factory("secretsmanager", timeouts.SECRETS_ON_HOT_PATH))
    )
