"""OutboxRelay: every minute, claim due outbox rows and publish them to SNS."""

from __future__ import annotations

from datetime import timedelta

from payment_outbox.adapters.aws import AwsClients
from payment_outbox.adapters.db.database import Database
from payment_outbox.adapters.sns_publisher import SnsPublisher
from payment_outbox.clock import SystemClock
from payment_outbox.composition.database import connect_database
from payment_outbox.ports import MessagePublisher
from payment_outbox.services.relay import OutboxRelay
from payment_outbox.settings import DatabaseSettings, OutboxSettings


def build_outbox_relay() -> OutboxRelay:
    clients = AwsClients()
    settings = OutboxSettings()
    database = connect_database(DatabaseSettings(), clients)
    # botocore's standard retries: the scheduled run has a whole minute.
    publisher = SnsPublisher(clients.factory("sns"), settings.order_events_topic_arn)
    return outbox_relay(settings, database, publisher)


def outbox_relay(settings: OutboxSettings, database: Database, publisher: MessagePublisher) -> OutboxRelay:
    """The scheduled relay as configured, publishing through ``publisher`` (here; the benchmarks)."""
    return OutboxRelay(
        database.unit_of_work,
        publisher,
        SystemClock(),
        policy=settings.retry_policy(),
        batch_size=settings.outbox_batch_size,
        lease=timedelta(seconds=settings.outbox_lease_seconds),
        ordered_by_key=settings.outbox_ordered_by_key,
    )
