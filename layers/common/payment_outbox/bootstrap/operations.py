"""The operations side: the reconciler, the outbox janitor, and the pieces the admin API shares."""

from __future__ import annotations

from datetime import timedelta

from payment_outbox.adapters import aws
from payment_outbox.adapters.db.operations import SqlOperationsUnitOfWork
from payment_outbox.adapters.idempotency_records import DynamoDbIdempotencyRecords
from payment_outbox.adapters.s3_archive import S3MessageArchive
from payment_outbox.bootstrap import clock, once
from payment_outbox.bootstrap.database import session_factory
from payment_outbox.bootstrap.dynamodb import dynamodb, points_ledger, sms_deliveries
from payment_outbox.services.janitor import OutboxJanitor
from payment_outbox.services.reconcile import ReconcileLimits, Reconciler
from payment_outbox.settings import (
    IdempotencySettings,
    ReconcileSettings,
    RetentionSettings,
)


def operations_unit_of_work() -> SqlOperationsUnitOfWork:
    return SqlOperationsUnitOfWork(session_factory())


@once
def idempotency_records() -> DynamoDbIdempotencyRecords:
    return DynamoDbIdempotencyRecords(dynamodb, IdempotencySettings().idempotency_table_name)


@once
def reconcile_settings() -> ReconcileSettings:
    return ReconcileSettings()


@once
def reconciler() -> Reconciler:
    settings = reconcile_settings()
    return Reconciler(
        operations_unit_of_work,
        clock,
        points=points_ledger(),
        sms=sms_deliveries(),
        idempotency=idempotency_records(),
        limits=ReconcileLimits(
            effect_grace=timedelta(minutes=settings.reconcile_effect_grace_minutes),
            effect_window=timedelta(hours=settings.reconcile_effect_window_hours),
            max_sent_checks=settings.reconcile_max_sent_checks,
            orders_lookback=timedelta(hours=settings.reconcile_orders_lookback_hours),
            idempotency_scan_limit=settings.reconcile_idempotency_scan_limit,
        ),
    )


@once
def outbox_janitor() -> OutboxJanitor:
    settings = RetentionSettings()
    archive = (
        S3MessageArchive(lambda: aws.client("s3"), settings.archive_bucket_name)
        if settings.archive_bucket_name
        else None
    )
    return OutboxJanitor(
        operations_unit_of_work,
        clock,
        retention=timedelta(days=settings.outbox_retention_days),
        archive=archive,
        batch_size=settings.outbox_retention_batch_size,
    )
