"""The operator's side: AdminApi (the operations use cases), Reconciler and OutboxJanitor."""

from __future__ import annotations

from datetime import timedelta

from payment_outbox import timeouts
from payment_outbox.adapters.aws import AwsClients
from payment_outbox.adapters.dynamodb_points import DynamoDbPointsLedger
from payment_outbox.adapters.idempotency_records import DynamoDbIdempotencyRecords
from payment_outbox.adapters.s3_archive import S3MessageArchive
from payment_outbox.adapters.sms import DynamoDbSmsDeliveryLog
from payment_outbox.adapters.sqs_dead_letters import SqsDeadLetterQueues
from payment_outbox.clock import SystemClock
from payment_outbox.composition.consumers import sms_sender
from payment_outbox.composition.database import connect_database
from payment_outbox.services.dead_letters import DeadLetterRedrive
from payment_outbox.services.janitor import OutboxJanitor
from payment_outbox.services.operations import OutboxOperations
from payment_outbox.services.reconcile import ReconcileLimits, Reconciler
from payment_outbox.services.sms import SmsOperations
from payment_outbox.services.triage import FailureTriage
from payment_outbox.settings import (
    AdminSettings,
    DatabaseSettings,
    IdempotencySettings,
    PointsSettings,
    ReconcileSettings,
    RetentionSettings,
    SmsSettings,
)


def build_outbox_operations() -> OutboxOperations:
    """What the admin API does: list, requeue, count, trace, and find stuck idempotency records."""
    clients = AwsClients()
    database = connect_database(DatabaseSettings(), clients)
    dynamodb = clients.factory("dynamodb", timeouts.DYNAMODB)
    return OutboxOperations(
        database.operations_unit_of_work,
        SystemClock(),
        points=DynamoDbPointsLedger(dynamodb, PointsSettings().points_table_name),
        sms=DynamoDbSmsDeliveryLog(dynamodb, SmsSettings().sms_deliveries_table_name),
        idempotency=DynamoDbIdempotencyRecords(dynamodb, IdempotencySettings().idempotency_table_name),
        requeue_max_rows=AdminSettings().admin_requeue_max_rows,
    )


def build_failure_triage() -> FailureTriage:
    """The admin API's failure triage: groups by error fingerprint, requeue or resolve by group."""
    clients = AwsClients()
    database = connect_database(DatabaseSettings(), clients)
    return FailureTriage(
        database.operations_unit_of_work,
        SystemClock(),
        max_rows=AdminSettings().admin_requeue_max_rows,
    )


def build_dead_letter_redrive() -> DeadLetterRedrive:
    """The admin API's DLQ redrive: every DLQ the template lists (DEAD_LETTER_SOURCES), each named
    after its queue (without a ".fifo" suffix), with the queue its messages go back to; every move
    audited."""
    clients = AwsClients()
    database = connect_database(DatabaseSettings(), clients)
    sources = AdminSettings().dead_letter_sources
    pairs = [
        (dlq.rstrip("/").rsplit("/", 1)[-1].removesuffix(".fifo"), dlq, target)
        for dlq, target in sorted(sources.items())
    ]
    return DeadLetterRedrive(
        SqsDeadLetterQueues(clients.factory("sqs", timeouts.SQS_REDRIVE), pairs),
        database.operations_unit_of_work,
        SystemClock(),
    )


def build_sms_operations() -> SmsOperations:
    """The operator's answer to an SMS parked as uncertain: resend it, or mark it delivered."""
    clients = AwsClients()
    database = connect_database(DatabaseSettings(), clients)
    return SmsOperations(
        database.operations_unit_of_work,
        sms_sender(clients),
        DynamoDbSmsDeliveryLog(
            clients.factory("dynamodb", timeouts.DYNAMODB), SmsSettings().sms_deliveries_table_name
        ),
        SystemClock(),
    )


def build_reconciler() -> Reconciler:
    clients = AwsClients()
    database = connect_database(DatabaseSettings(), clients)
    dynamodb = clients.factory("dynamodb", timeouts.DYNAMODB)
    settings = ReconcileSettings()
    return Reconciler(
        database.operations_unit_of_work,
        SystemClock(),
        points=DynamoDbPointsLedger(dynamodb, PointsSettings().points_table_name),
        sms=DynamoDbSmsDeliveryLog(dynamodb, SmsSettings().sms_deliveries_table_name),
        idempotency=DynamoDbIdempotencyRecords(dynamodb, IdempotencySettings().idempotency_table_name),
        limits=ReconcileLimits(
            effect_grace=timedelta(minutes=settings.reconcile_effect_grace_minutes),
            effect_window=timedelta(hours=settings.reconcile_effect_window_hours),
            sent_page_size=settings.reconcile_sent_page_size,
            orders_lookback=timedelta(hours=settings.reconcile_orders_lookback_hours),
        ),
    )


def build_outbox_janitor() -> OutboxJanitor:
    clients = AwsClients()
    database = connect_database(DatabaseSettings(), clients)
    settings = RetentionSettings()
    archive = (
        S3MessageArchive(clients.factory("s3", timeouts.S3_ARCHIVE), settings.archive_bucket_name)
        if settings.archive_bucket_name
        else None
    )
    return OutboxJanitor(
        database.operations_unit_of_work,
        SystemClock(),
        retention=timedelta(days=settings.outbox_retention_days),
        archive=archive,
        batch_size=settings.outbox_retention_batch_size,
    )
