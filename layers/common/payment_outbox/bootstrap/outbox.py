"""The outbox relays: the scheduled one and the after-commit one."""

from __future__ import annotations

from datetime import timedelta

from payment_outbox.adapters import aws
from payment_outbox.adapters.sns_publisher import SnsPublisher
from payment_outbox.bootstrap import clock, once
from payment_outbox.bootstrap.database import unit_of_work
from payment_outbox.ports import MessagePublisher
from payment_outbox.services.relay import OutboxRelay
from payment_outbox.settings import OutboxSettings


@once
def outbox_settings() -> OutboxSettings:
    return OutboxSettings()


@once
def outbox_relay() -> OutboxRelay:
    """The scheduled relay: botocore's standard retries, since it has a whole minute."""
    settings = outbox_settings()
    publisher = SnsPublisher(lambda: aws.client("sns"), settings.order_events_topic_arn)
    return relay_publishing_to(settings, publisher)


@once
def immediate_relay() -> OutboxRelay:
    """The after-commit path: one attempt with short timeouts, so the callback answers quickly."""
    settings = outbox_settings()
    timeout = settings.outbox_immediate_publish_timeout_seconds

    def client() -> object:
        return aws.client("sns", timeout_seconds=timeout, max_attempts=1)

    return relay_publishing_to(settings, SnsPublisher(client, settings.order_events_topic_arn))


def relay_publishing_to(settings: OutboxSettings, publisher: MessagePublisher) -> OutboxRelay:
    """The relay as configured, publishing through ``publisher`` (the two relays here; benchmarks)."""
    return OutboxRelay(
        unit_of_work,
        publisher,
        clock,
        policy=settings.retry_policy(),
        batch_size=settings.outbox_batch_size,
        lease=timedelta(seconds=settings.outbox_lease_seconds),
        ordered_by_key=settings.outbox_ordered_by_key,
    )
