"""What an operator does with the outbox, without SQL: list messages, requeue what gave up (audited),
read the counts, trace one order to its consumer effects, and list stuck idempotency records."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from payment_outbox.clock import epoch_seconds
from payment_outbox.domain.envelope import TOPIC_SMS
from payment_outbox.domain.orders import Order
from payment_outbox.domain.outbox import OutboxMessage, OutboxStatus
from payment_outbox.errors import MessageNotFound, NotRequeueable, OrderNotFound
from payment_outbox.ports import (
    AuditEntry,
    Clock,
    IdempotencyRecords,
    MessageFilter,
    OperationsUnitOfWorkFactory,
    PointsLedgerReader,
    SmsDelivery,
    SmsDeliveryLookup,
    StatusCounts,
    StuckIdempotencyRecord,
)

logger = logging.getLogger(__name__)

#: A page of the message listing holds at most this many rows.
MAX_PAGE_SIZE = 200
#: A bulk requeue changes at most this many rows per call.
MAX_REQUEUE_ROWS = 1000
#: Message ids echoed back by a requeue (the count covers all of them).
SAMPLE_SIZE = 50


@dataclass(frozen=True)
class MessagePage:
    items: list[OutboxMessage]
    #: Id to continue after, or None on the last page.
    next_after_id: int | None


@dataclass(frozen=True)
class RequeueRequest:
    where: MessageFilter
    reason: str
    actor: str
    dry_run: bool = False
    include_sent: bool = False


@dataclass(frozen=True)
class RequeueResult:
    dry_run: bool
    #: Rows requeued (or, in a dry run, that would be).
    count: int
    #: The first ``SAMPLE_SIZE`` of their message ids.
    message_ids: list[str]
    max_rows: int
    #: More rows matched than one call may change: call again (after the relay has caught up).
    more: bool
    audit_id: int | None = None


@dataclass(frozen=True)
class OutboxStats:
    counts: StatusCounts
    now: datetime

    @property
    def oldest_due_age_seconds(self) -> float | None:
        if self.counts.oldest_due_at is None:
            return None
        return max(0.0, (self.now - self.counts.oldest_due_at).total_seconds())


@dataclass(frozen=True)
class OrderTrace:
    order: Order
    messages: list[OutboxMessage]
    points_entries: list[dict[str, object]]
    #: SMS delivery record per topic.sms message id (None: no SMS recorded for it).
    sms_deliveries: dict[str, SmsDelivery | None] = field(default_factory=dict)


class OutboxOperations:
    def __init__(
        self,
        uow: OperationsUnitOfWorkFactory,
        clock: Clock,
        *,
        points: PointsLedgerReader,
        sms: SmsDeliveryLookup,
        idempotency: IdempotencyRecords,
        requeue_max_rows: int = MAX_REQUEUE_ROWS,
        idempotency_scan_limit: int = 5000,
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._points = points
        self._sms = sms
        self._idempotency = idempotency
        self._requeue_max_rows = min(requeue_max_rows, MAX_REQUEUE_ROWS)
        self._idempotency_scan_limit = idempotency_scan_limit

    def list_messages(self, where: MessageFilter, *, after_id: int | None, limit: int) -> MessagePage:
        limit = max(1, min(limit, MAX_PAGE_SIZE))
        with self._uow() as tx:
            rows = tx.operations.list_messages(where, after_id=after_id, limit=limit + 1)
        if len(rows) > limit:
            rows = rows[:limit]
            return MessagePage(rows, rows[-1].id)
        return MessagePage(rows, None)

    def requeue(self, request: RequeueRequest) -> RequeueResult:
        """Requeue the rows the filter selects: FAILED ones, pending ones due later, SENT ones only
        with ``include_sent``. Bounded to ``requeue_max_rows``; a dry run changes nothing."""
        if OutboxStatus.SENT in request.where.statuses and not request.include_sent:
            raise NotRequeueable("requeueing sent messages needs includeSent: true")
        now = self._clock.now()
        with self._uow() as tx:
            candidates = tx.operations.requeue_candidates(
                request.where, now=now, include_sent=request.include_sent, limit=self._requeue_max_rows + 1
            )
            more = len(candidates) > self._requeue_max_rows
            candidates = candidates[: self._requeue_max_rows]
            sample = [c.message_id for c in candidates[:SAMPLE_SIZE]]
            if request.dry_run:
                return RequeueResult(True, len(candidates), sample, self._requeue_max_rows, more)
            changed = tx.operations.requeue(
                [c.id for c in candidates if c.id is not None], now=now, include_sent=request.include_sent
            )
            audit_id = tx.operations.record_audit(
                AuditEntry(
                    actor=request.actor,
                    action="requeue",
                    filters={
                        **request.where.to_dict(),
                        "includeSent": request.include_sent,
                        "maxRows": self._requeue_max_rows,
                    },
                    affected_count=changed,
                    reason=request.reason,
                    created_at=now,
                )
            )
            tx.commit()
        logger.warning(
            "outbox requeue by %s: %d row(s), more=%s, audit id %d", request.actor, changed, more, audit_id
        )
        return RequeueResult(False, changed, sample, self._requeue_max_rows, more, audit_id)

    def requeue_message(
        self, message_id: str, *, reason: str, actor: str, dry_run: bool = False, include_sent: bool = False
    ) -> RequeueResult:
        now = self._clock.now()
        with self._uow() as tx:
            message = tx.outbox.get(message_id)
            if message is None or message.id is None:
                raise MessageNotFound(f"message {message_id} not found")
            _check_requeueable(message, now=now, include_sent=include_sent)
            if dry_run:
                return RequeueResult(True, 1, [message_id], 1, False)
            changed = tx.operations.requeue([message.id], now=now, include_sent=include_sent)
            audit_id = tx.operations.record_audit(
                AuditEntry(
                    actor=actor,
                    action="requeue_message",
                    filters={"messageId": message_id, "includeSent": include_sent},
                    affected_count=changed,
                    reason=reason,
                    created_at=now,
                )
            )
            tx.commit()
        logger.warning("outbox message %s requeued by %s, audit id %d", message_id, actor, audit_id)
        return RequeueResult(False, changed, [message_id] if changed else [], 1, False, audit_id)

    def stats(self) -> OutboxStats:
        now = self._clock.now()
        with self._uow() as tx:
            counts = tx.operations.status_counts(now=now)
        return OutboxStats(counts, now)

    def trace(self, order_id: int) -> OrderTrace:
        """The order, its outbox rows, and what the consumers did with them."""
        with self._uow() as tx:
            order = tx.orders.get(order_id)
            if order is None or order.id is None:
                raise OrderNotFound(f"order {order_id} not found")
            messages = tx.outbox.list_for_business_key(order.order_no)
        entries: list[dict[str, object]] = list(self._points.entries_for_order(order.user_id, order.id))
        deliveries = {m.message_id: self._sms.find(m.message_id) for m in messages if m.topic == TOPIC_SMS}
        return OrderTrace(order, messages, entries, deliveries)

    def stuck_idempotency_records(self) -> list[StuckIdempotencyRecord]:
        return self._idempotency.stuck_in_progress(
            now_epoch_seconds=epoch_seconds(self._clock.now()), max_items=self._idempotency_scan_limit
        )


def _check_requeueable(message: OutboxMessage, *, now: datetime, include_sent: bool) -> None:
    if message.status is OutboxStatus.FAILED:
        return
    if message.status is OutboxStatus.SENT:
        if include_sent:
            return
        raise NotRequeueable(
            f"message {message.message_id} was sent; pass includeSent: true to publish it again"
        )
    if message.next_retry_at <= now:
        raise NotRequeueable(
            f"message {message.message_id} is pending and already due; the relay will send it"
        )
