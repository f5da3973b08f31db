"""OutboxRelay: every minute, claim due outbox rows and publish them to SNS, several PublishBatch
requests at a time; poll within the minute while rows fall due; fan out under a backlog."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from payment_outbox import timeouts
from payment_outbox.adapters.aws import AwsClients
from payment_outbox.adapters.db.database import Database
from payment_outbox.adapters.relay_launcher import LambdaRelayLauncher, fan_out_remaining_ms
from payment_outbox.adapters.sns_publisher import MAX_BATCH_ENTRIES, SnsPublisher
from payment_outbox.clock import SystemClock
from payment_outbox.composition.database import connect_database
from payment_outbox.ports import Clock, MessagePublisher
from payment_outbox.services.relay import FanOut, OutboxRelay, Polling, RelayReport
from payment_outbox.settings import DatabaseSettings, OutboxSettings, RelaySettings


@dataclass(frozen=True)
class ScheduledRelay:
    """The relay and how a scheduled run uses it (a fanned-out run uses the relay alone)."""

    relay: OutboxRelay
    polling: Polling
    clients: AwsClients
    max_relays: int

    def run(self, event: dict[str, Any], remaining_ms: Callable[[], int], function_name: str) -> RelayReport:
        """A scheduled run polls within its minute and may fan out; a run started by fan-out (its
        event says so) drains until its starter's deadline, and no further."""
        until_starter_stops = fan_out_remaining_ms(event)
        if until_starter_stops is None:
            return self.relay.relay_due_messages(
                remaining_ms, polling=self.polling, fan_out=self.fan_out(function_name)
            )
        return self.relay.relay_due_messages(lambda: min(remaining_ms(), until_starter_stops()))

    def fan_out(self, function_name: str) -> FanOut | None:
        """Fan-out invokes ``function_name``, the running relay's own (from its Lambda context);
        None when it is off (MAX_RELAY_CONCURRENCY of 1)."""
        if self.max_relays <= 1:
            return None
        return FanOut(
            LambdaRelayLauncher(self.clients.factory("lambda", timeouts.LAMBDA_INVOKE), function_name),
            self.max_relays,
        )


def build_scheduled_relay() -> ScheduledRelay:
    clients = AwsClients()
    settings, relay_settings = OutboxSettings(), RelaySettings()
    database = connect_database(DatabaseSettings(), clients, timeouts.SECRETS_ON_HOT_PATH)
    in_flight = relay_settings.relay_max_in_flight
    return ScheduledRelay(
        relay=outbox_relay(
            settings,
            database,
            relay_publisher(settings, clients, max_in_flight=in_flight),
            max_in_flight=in_flight,
        ),
        polling=Polling(relay_settings.relay_poll_interval_seconds, relay_settings.relay_idle_cutoff_seconds),
        clients=clients,
        max_relays=relay_settings.max_relay_concurrency,
    )


def relay_publisher(
    settings: OutboxSettings, clients: AwsClients, *, after_commit: bool = False, max_in_flight: int = 1
) -> SnsPublisher:
    """The topic's publisher for a relay. The scheduled run has a whole minute: a few attempts, each
    bounded (``timeouts.SNS_RELAY``), and one pooled connection per concurrent request (the client
    itself is shared by the publish threads). The after-commit publish answers a callback: one
    attempt with short timeouts."""
    if after_commit:
        sns = clients.factory(
            "sns", timeouts.after_commit_publish(settings.outbox_immediate_publish_timeout_seconds)
        )
    else:
        sns = clients.factory("sns", timeouts.SNS_RELAY, max_pool_connections=max_in_flight)
    return SnsPublisher(sns, settings.order_events_topic_arn)


def outbox_relay(
    settings: OutboxSettings,
    database: Database,
    publisher: MessagePublisher,
    *,
    max_in_flight: int = 1,
    clock: Clock | None = None,
) -> OutboxRelay:
    """Every relay, as configured: the scheduled run's (``build_scheduled_relay``), the after-commit
    publish's (``composition.payment_api``) and the benchmarks', publishing through ``publisher``
    (``relay_publisher``). The after-commit publish only ever delivers the rows just written
    (``publish_after_commit``), which never gives up: a failure is rescheduled with the backoff, and
    claiming and giving up are left to the scheduled relay."""
    return OutboxRelay(
        database.unit_of_work,
        publisher,
        clock or SystemClock(),
        policy=settings.retry_policy(),
        claim_size=settings.outbox_batch_size,
        lease=timedelta(seconds=settings.outbox_lease_seconds),
        # In stream order, a row behind an earlier pending one of its stream is left to the relay.
        ordered_by_key=settings.outbox_ordered_by_key,
        max_in_flight=max_in_flight,
        request_size=MAX_BATCH_ENTRIES,
    )
