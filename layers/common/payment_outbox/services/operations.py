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
    #: Give the rows a fresh attempt budget (retry_count back to 0). Only when the operator says so:
    #: by default a requeued row keeps its attempt count and gets one more attempt.
    reset_attempts: bool = False


@dataclass(frozen=True)
class RequeueChange:
    """What a requeue does (or, in a dry run, would do) to one row."""

    message_id: str
    status_from: OutboxStatus
    attempts_from: int
    attempts_to: int
    due_at_from: datetime
    due_at_to: datetime


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
    #: The first ``SAMPLE_SIZE`` rows' changes, before → after.
    changes: list[RequeueChange] = field(default_factory=list)


def planned_changes(
    messages: list[OutboxMessage], *, now: datetime, reset_attempts: bool
) -> list[RequeueChange]:
    return [
        RequeueChange(
            message_id=m.message_id,
            status_from=m.status,
            attempts_from=m.attempts,
            attempts_to=0 if reset_attempts else m.attempts,
            due_at_from=m.due_at,
            due_at_to=now,
        )
        for m in messages
    ]


def _history(messages: list[OutboxMessage]) -> dict[str, list[str]]:
    """Each row's state before the requeue, kept in the audit row so attempts are never lost:
    message ids grouped by "<status>:<retryCount>" (compact: 1,000 ids fit the audit's TEXT column).
    ``last_error`` is not copied: a requeue leaves it on the row."""
    groups: dict[str, list[str]] = {}
    for m in messages:
        groups.setdefault(f"{m.status.name}:{m.attempts}", []).append(m.message_id)
    return groups


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
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._points = points
        self._sms = sms
        self._idempotency = idempotency
        self._requeue_max_rows = min(requeue_max_rows, MAX_REQUEUE_ROWS)

    def list_messages(self, where: MessageFilter, *, after_id: int | None, limit: int) -> MessagePage:
        limit = max(1, min(limit, MAX_PAGE_SIZE))
        with self._uow() as tx:
            rows = tx.operations.list_messages(where, after_id=after_id, limit=limit + 1)
        if len(rows) > limit:
            rows = rows[:limit]
            return MessagePage(rows, rows[-1].id)
        return MessagePage(rows, None)

    def requeue(self, request: RequeueRequest) -> RequeueResult:
        """Requeue the rows the filter selects: FAILED ones, and SENT ones only with ``include_sent``.

        Pending rows are the relay's: in flight under a lease or waiting for their retry, which the
        relay honours without help. A requeued row keeps its attempt count (one more attempt) unless
        ``reset_attempts`` asks for a fresh budget; its prior state is kept in the audit row. Bounded
        to ``requeue_max_rows``; a dry run changes nothing and shows the same changes.
        """
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
            changes = planned_changes(
                candidates[:SAMPLE_SIZE], now=now, reset_attempts=request.reset_attempts
            )
            if request.dry_run:
                return RequeueResult(
                    True, len(candidates), sample, self._requeue_max_rows, more, changes=changes
                )
            changed = tx.operations.requeue(
                [c.id for c in candidates if c.id is not None],
                now=now,
                include_sent=request.include_sent,
                reset_attempts=request.reset_attempts,
            )
            audit_id = tx.operations.record_audit(
                AuditEntry(
                    actor=request.actor,
                    action="requeue",
                    filters={
                        **request.where.to_dict(),
                        "includeSent": request.include_sent,
                        "resetAttempts": request.reset_attempts,
                        "maxRows": self._requeue_max_rows,
                        "before": _history(candidates),
                    },
                    affected_count=changed,
                    reason=request.reason,
                    created_at=now,
                )
            )
            tx.commit()
        logger.warning(
            "outbox requeue by %s: %d row(s), resetAttempts=%s, more=%s, audit id %d",
            request.actor,
            changed,
            request.reset_attempts,
            more,
            audit_id,
        )
        return RequeueResult(False, changed, sample, self._requeue_max_rows, more, audit_id, changes)

    def requeue_message(
        self,
        message_id: str,
        *,
        reason: str,
        actor: str,
        dry_run: bool = False,
        include_sent: bool = False,
        reset_attempts: bool = False,
    ) -> RequeueResult:
        now = self._clock.now()
        with self._uow() as tx:
            message = tx.outbox.get(message_id)
            if message is None or message.id is None:
                raise MessageNotFound(f"message {message_id} not found")
            _check_requeueable(message, include_sent=include_sent)
            changes = planned_changes([message], now=now, reset_attempts=reset_attempts)
            if dry_run:
                return RequeueResult(True, 1, [message_id], 1, False, changes=changes)
            changed = tx.operations.requeue(
                [message.id], now=now, include_sent=include_sent, reset_attempts=reset_attempts
            )
            audit_id = tx.operations.record_audit(
                AuditEntry(
                    actor=actor,
                    action="requeue_message",
                    filters={
                        "messageId": message_id,
                        "includeSent": include_sent,
                        "resetAttempts": reset_attempts,
                        "before": _history([message]),
                    },
                    affected_count=changed,
                    reason=reason,
                    created_at=now,
                )
            )
            tx.commit()
        logger.warning(
            "outbox message %s requeued by %s (resetAttempts=%s), audit id %d",
            message_id,
            actor,
            reset_attempts,
            audit_id,
        )
        return RequeueResult(
            False, changed, [message_id] if changed else [], 1, False, audit_id, changes if changed else []
        )

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
        return self._idempotency.stuck_in_progress(now_epoch_seconds=epoch_seconds(self._clock.now()))


def _check_requeueable(message: OutboxMessage, *, include_sent: bool) -> None:
    if message.status is OutboxStatus.FAILED:
        return
    if message.status is OutboxStatus.SENT:
        if include_sent:
            return
        raise NotRequeueable(
            f"message {message.message_id} was sent; pass includeSent: true to publish it again"
        )
    raise NotRequeueable(
        f"message {message.message_id} is pending: in flight or waiting for its retry, the relay sends it"
    )
