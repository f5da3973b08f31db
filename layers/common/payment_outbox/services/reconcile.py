"""``reconcile``: look for what slipped through — PAID orders without outbox rows, rows that gave up,
rows sent long ago whose consumer effect never appeared, and idempotency records stuck INPROGRESS.

It only reports (metrics, logs); repairing is an operator's decision (see docs/operations.md).
Metrics carry the full counts every run (the alarms read them); the logs name each anomaly once,
in the first run that can see it, so a FAILED row left for a day does not write a line every run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from payment_outbox.clock import epoch_seconds
from payment_outbox.domain.envelope import TOPIC_POINTS, TOPIC_SMS, Envelope, PointsPayload, parse_payload
from payment_outbox.domain.orders import Order
from payment_outbox.domain.outbox import OutboxMessage
from payment_outbox.errors import InvalidEnvelope
from payment_outbox.ports import (
    Clock,
    IdempotencyRecords,
    OperationsUnitOfWorkFactory,
    PointsLedgerReader,
    SentCursor,
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
    #: False when the run ran out of time before the end of its window of sent rows.
    sent_complete: bool = True
    without_effect: list[str] = field(default_factory=list)
    stuck_idempotency: list[StuckIdempotencyRecord] = field(default_factory=list)
    #: What the previous run could not have seen (each is logged once, in this run).
    new_findings: list[str] = field(default_factory=list)


#: A run stops starting pages of sent rows when less than this is left of its Lambda's time.
SAFETY_MARGIN_MS = 10_000

#: The reconciler's schedule (template.yaml: rate(15 minutes)); a finding newer than one interval is
#: one the previous run could not have seen.
RUN_INTERVAL = timedelta(minutes=15)


@dataclass(frozen=True)
class ReconcileLimits:
    run_interval: timedelta = RUN_INTERVAL
    effect_grace: timedelta = timedelta(minutes=30)
    effect_window: timedelta = timedelta(hours=24)
    #: Sent rows read per page (the window is read whole, page after page).
    sent_page_size: int = 500
    orders_lookback: timedelta = timedelta(hours=24)


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

    def reconcile(self, remaining_ms: Callable[[], int] | None = None) -> ReconcileReport:
        now = self._clock.now()
        limits = self._limits
        report = ReconcileReport()
        with self._uow() as tx:
            missing = tx.operations.paid_orders_without_messages(
                paid_since=now - limits.orders_lookback, limit=MAX_ORDERS_CHECKED
            )
            report.failed_total, failed = tx.operations.failed_messages(limit=SAMPLE_SIZE)
            newly_failed = tx.operations.failed_since(now - limits.run_interval, limit=SAMPLE_SIZE)
        report.orders_missing_outbox = [o.order_no for o in missing]
        report.failed_sample = [m.message_id for m in failed]
        sent = self._check_sent_window(report, now=now, remaining_ms=remaining_ms)
        report.stuck_idempotency = self._idempotency.stuck_in_progress(now_epoch_seconds=epoch_seconds(now))
        self._log_new_findings(report, now=now, missing=missing, newly_failed=newly_failed, sent=sent)
        return report

    def _check_sent_window(
        self, report: ReconcileReport, *, now: datetime, remaining_ms: Callable[[], int] | None
    ) -> list[OutboxMessage]:
        """Every row sent at least the grace period ago and at most grace + window ago, page after
        page in (sent_time, id) order: each page starts just past the last row of the one before, so
        rows written or deleted meanwhile never make it skip or repeat one. Returns those without
        their effect."""
        limits = self._limits
        missing: list[OutboxMessage] = []
        cursor: SentCursor | None = None
        while True:
            if remaining_ms is not None and remaining_ms() < SAFETY_MARGIN_MS:
                report.sent_complete = False
                logger.error(
                    "reconciler ran out of time after %d sent row(s): the rest of its window was not checked",
                    report.sent_checked,
                )
                break
            with self._uow() as tx:
                page = tx.operations.sent_between(
                    sent_from=now - limits.effect_grace - limits.effect_window,
                    sent_to=now - limits.effect_grace,
                    topics=[TOPIC_POINTS, TOPIC_SMS],
                    after=cursor,
                    limit=limits.sent_page_size,
                )
            report.sent_checked += len(page)
            missing += [m for m in page if not self._has_effect(m)]
            if len(page) < limits.sent_page_size:
                break
            last = page[-1]
            if last.sent_time is None or last.id is None:  # a sent row always has both
                raise ValueError(f"sent row without sent time or id: {last.message_id}")
            cursor = SentCursor(last.sent_time, last.id)
        report.without_effect = [m.message_id for m in missing]
        return missing

    def _log_new_findings(
        self,
        report: ReconcileReport,
        *,
        now: datetime,
        missing: list[Order],
        newly_failed: list[OutboxMessage],
        sent: list[OutboxMessage],
    ) -> None:
        """Log what became true since the previous run, judged by the rows' own times."""
        since = now - self._limits.run_interval
        for order in missing:
            if order.updated_at > since:
                report.new_findings.append(f"PAID order has no outbox rows: orderNo={order.order_no}")
        for message in newly_failed:
            report.new_findings.append(
                f"outbox message FAILED since the last run: messageId={message.message_id}"
            )
        # A sent row crosses the grace period once: in the run right after it does.
        crossed_after = since - self._limits.effect_grace
        without = set(report.without_effect)
        for message in sent:
            if message.message_id in without and message.sent_time and message.sent_time > crossed_after:
                report.new_findings.append(
                    f"sent outbox message has no consumer effect: messageId={message.message_id}"
                )
        since_epoch = epoch_seconds(since)
        for record in report.stuck_idempotency:
            stuck_at = (
                record.in_progress_expiration / 1000
                if record.in_progress_expiration is not None
                else record.expiration
            )
            if stuck_at is None or stuck_at > since_epoch:
                report.new_findings.append(f"idempotency record stuck INPROGRESS: id={record.key}")
        for line in report.new_findings:
            logger.error(line)

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
