"""``reconcile``: look for what slipped through — PAID orders without outbox rows, rows that gave up,
rows sent long ago whose consumer effect never appeared, and idempotency records stuck INPROGRESS.

It only reports (metrics, logs); repairing is an operator's decision (see docs/operations.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from payment_outbox.clock import epoch_seconds
from payment_outbox.domain.envelope import TOPIC_POINTS, TOPIC_SMS, Envelope, PointsPayload, parse_payload
from payment_outbox.domain.outbox import OutboxMessage
from payment_outbox.errors import InvalidEnvelope
from payment_outbox.ports import (
    Clock,
    IdempotencyRecords,
    OperationsUnitOfWorkFactory,
    PointsLedgerReader,
    SmsDeliveryLookup,
    StuckIdempotencyRecord,
)

logger = logging.getLogger(__name__)

#: Orders and failed messages named in one report at most (the metrics carry the full counts
#: of failed messages; orders are checked this many per run).
MAX_ORDERS_CHECKED = 500
SAMPLE_SIZE = 50


@dataclass
class ReconcileReport:
    orders_missing_outbox: list[str] = field(default_factory=list)
    failed_total: int = 0
    failed_sample: list[str] = field(default_factory=list)
    sent_checked: int = 0
    without_effect: list[str] = field(default_factory=list)
    stuck_idempotency: list[StuckIdempotencyRecord] = field(default_factory=list)


@dataclass(frozen=True)
class ReconcileLimits:
    effect_grace: timedelta = timedelta(minutes=30)
    effect_window: timedelta = timedelta(hours=24)
    max_sent_checks: int = 500
    orders_lookback: timedelta = timedelta(hours=24)
    idempotency_scan_limit: int = 5000


class Reconciler:
    def __init__(
        self,
        uow: OperationsUnitOfWorkFactory,
        clock: Clock,
        *,
        points: PointsLedgerReader,
        sms: SmsDeliveryLookup,
        idempotency: IdempotencyRecords,
        limits: ReconcileLimits | None = None,
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._points = points
        self._sms = sms
        self._idempotency = idempotency
        self._limits = limits or ReconcileLimits()

    def reconcile(self) -> ReconcileReport:
        now = self._clock.now()
        limits = self._limits
        report = ReconcileReport()
        with self._uow() as tx:
            missing = tx.operations.paid_orders_without_messages(
                paid_since=now - limits.orders_lookback, limit=MAX_ORDERS_CHECKED
            )
            report.failed_total, failed = tx.operations.failed_messages(limit=SAMPLE_SIZE)
            # Sent at least the grace period ago, at most grace + window ago: newest first, bounded.
            sent = tx.operations.sent_between(
                sent_from=now - limits.effect_grace - limits.effect_window,
                sent_to=now - limits.effect_grace,
                topics=[TOPIC_POINTS, TOPIC_SMS],
                limit=limits.max_sent_checks,
            )
        report.orders_missing_outbox = [o.order_no for o in missing]
        report.failed_sample = [m.message_id for m in failed]
        report.sent_checked = len(sent)
        report.without_effect = [m.message_id for m in sent if not self._has_effect(m)]
        report.stuck_idempotency = self._idempotency.stuck_in_progress(
            now_epoch_seconds=epoch_seconds(now), max_items=limits.idempotency_scan_limit
        )
        for order_no in report.orders_missing_outbox:
            logger.error("PAID order has no outbox rows: orderNo=%s", order_no)
        for message_id in report.without_effect:
            logger.error("sent outbox message has no consumer effect: messageId=%s", message_id)
        for record in report.stuck_idempotency:
            logger.error("idempotency record stuck INPROGRESS: id=%s", record.key)
        return report

    def _has_effect(self, message: OutboxMessage) -> bool:
        try:
            envelope = Envelope.parse(message.content)
            if message.topic == TOPIC_POINTS:
                payload = parse_payload(envelope, PointsPayload)
                entries = self._points.entries_for_order(payload.user_id, payload.order_id)
                return any(e.get("messageId") == message.message_id for e in entries)
            return self._sms.find(message.message_id) is not None
        except InvalidEnvelope:
            logger.error("sent outbox message is not a valid envelope: messageId=%s", message.message_id)
            return False
