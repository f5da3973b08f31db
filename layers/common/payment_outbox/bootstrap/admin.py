"""The admin API's use cases."""

from __future__ import annotations

from payment_outbox.bootstrap import clock, once
from payment_outbox.bootstrap.dynamodb import points_ledger, sms_deliveries
from payment_outbox.bootstrap.operations import idempotency_records, operations_unit_of_work
from payment_outbox.services.operations import OutboxOperations
from payment_outbox.settings import AdminSettings


@once
def outbox_operations() -> OutboxOperations:
    return OutboxOperations(
        operations_unit_of_work,
        clock,
        points=points_ledger(),
        sms=sms_deliveries(),
        idempotency=idempotency_records(),
        requeue_max_rows=AdminSettings().admin_requeue_max_rows,
    )
