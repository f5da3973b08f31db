"""SQLAlchemy implementations of the order and outbox repositories."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Exists, Row, exists, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from payment_outbox.adapters.db.schema import MessageRecordRow, OrderRow
from payment_outbox.domain.orders import Order, OrderStatus
from payment_outbox.domain.outbox import OutboxMessage, OutboxStatus, truncate_error
from payment_outbox.domain.tracing import TraceContext
from payment_outbox.errors import OrderNumberTaken, TransactionAlreadyUsed


class SqlOrderRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, order: Order) -> Order:
        row = OrderRow(
            order_no=order.order_no,
            user_id=order.user_id,
            user_phone=order.user_phone,
            amount=order.amount,
            currency=order.currency,
            status=order.status.value,
            pay_time=order.pay_time,
            payment_txn_id=order.payment_txn_id,
            created_at=order.created_at,
            updated_at=order.updated_at,
        )
        self._session.add(row)
        try:
            self._session.flush()
        except IntegrityError as exc:
            # order_no is the only unique key a new order can break (its id is the database's own).
            raise OrderNumberTaken(f"order number {order.order_no} is taken") from exc
        return order_from_row(row)

    def get(self, order_id: int) -> Order | None:
        row = self._session.get(OrderRow, order_id)
        return order_from_row(row) if row else None

    def get_by_order_no_for_update(self, order_no: str) -> Order | None:
        # The row lock serialises concurrent callbacks for one order until the transaction ends.
        row = self._session.scalars(
            select(OrderRow).where(OrderRow.order_no == order_no).with_for_update()
        ).one_or_none()
        return order_from_row(row) if row else None

    def save_payment(self, order: Order) -> None:
        try:
            self._session.execute(
                update(OrderRow)
                .where(OrderRow.id == order.id)
                .values(
                    status=order.status.value,
                    pay_time=order.pay_time,
                    payment_txn_id=order.payment_txn_id,
                    updated_at=order.updated_at,
                )
            )
        except IntegrityError as exc:
            # Two orders raced to claim one transaction id: the unique key let only one through.
            raise TransactionAlreadyUsed(
                f"transaction {order.payment_txn_id} already paid another order"
            ) from exc


class SqlOutboxRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def add_all(self, messages: Sequence[OutboxMessage]) -> None:
        if not messages:
            return
        self._session.execute(insert(MessageRecordRow), [message_record_values(m) for m in messages])

    def claim_due(
        self, *, now: datetime, limit: int, lease_until: datetime, ordered_by_key: bool = False
    ) -> list[OutboxMessage]:
        """Lock up to ``limit`` due rows, skipping rows another relay holds, and lease them.

        The lease (``next_retry_at = lease_until``) is what keeps other relays away after this short
        transaction commits; a relay that dies simply lets the lease run out. With ``ordered_by_key``
        only the head of each stream is claimed: a row waits while an earlier row of its stream (same
        business key and topic) is still pending — due, retrying or held by a relay — so a stream
        never has two rows in flight and its rows go out in the order they were written.
        """
        # Plain columns, not ORM entities, and not the three the claim itself decides (status, due
        # time, update time): parsing rows is most of a claim's CPU, which the relay spends under the
        # same interpreter lock as its publish requests (docs/benchmarks.md).
        query = select(*_CLAIMED_COLUMNS).where(
            MessageRecordRow.status == int(OutboxStatus.PENDING),
            MessageRecordRow.next_retry_at <= now,
        )
        if ordered_by_key:
            query = query.where(~_earlier_pending_in_stream(MessageRecordRow))
        rows = self._session.execute(
            query.order_by(MessageRecordRow.next_retry_at, MessageRecordRow.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        if not rows:
            return []
        self._session.execute(
            update(MessageRecordRow)
            .where(MessageRecordRow.id.in_([r.id for r in rows]))
            .values(next_retry_at=lease_until, update_time=now),
            execution_options={"synchronize_session": False},
        )
        return [_claimed_message(r, now=now, lease_until=lease_until) for r in rows]

    def release_waiting(self, message_ids: Sequence[str], *, now: datetime) -> set[str]:
        """Of these pending rows, those behind an earlier pending row of their stream: made due now and
        returned, so that whoever holds them leaves them to the relay, which claims each in its turn."""
        if not message_ids:
            return set()
        waiting = set(
            self._session.scalars(
                select(MessageRecordRow.message_id).where(
                    MessageRecordRow.message_id.in_(list(message_ids)),
                    MessageRecordRow.status == int(OutboxStatus.PENDING),
                    _earlier_pending_in_stream(MessageRecordRow),
                )
            )
        )
        if waiting:
            self._session.execute(
                update(MessageRecordRow)
                .where(
                    MessageRecordRow.message_id.in_(sorted(waiting)),
                    MessageRecordRow.status == int(OutboxStatus.PENDING),
                )
                .values(next_retry_at=now, update_time=now),
                execution_options={"synchronize_session": False},
            )
        return waiting

    def mark_sent(self, message_ids: Sequence[str], *, now: datetime) -> int:
        if not message_ids:
            return 0
        result = self._session.execute(
            update(MessageRecordRow)
            .where(
                MessageRecordRow.message_id.in_(list(message_ids)),
                MessageRecordRow.status == int(OutboxStatus.PENDING),
            )
            .values(status=int(OutboxStatus.SENT), sent_time=now, update_time=now, last_error=None),
            execution_options={"synchronize_session": False},
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    def schedule_retry(
        self, message_id: str, *, attempts: int, due_at: datetime, error: str, now: datetime
    ) -> bool:
        return self._update_pending(
            message_id,
            retry_count=attempts,
            next_retry_at=due_at,
            last_error=truncate_error(error),
            update_time=now,
        )

    def mark_failed(self, message_id: str, *, attempts: int, error: str, now: datetime) -> bool:
        return self._update_pending(
            message_id,
            status=int(OutboxStatus.FAILED),
            retry_count=attempts,
            last_error=truncate_error(error),
            update_time=now,
        )

    def oldest_due_at(self, now: datetime) -> datetime | None:
        """Due time of the longest-waiting pending row (an index lookup on (status, next_retry_at))."""
        oldest: datetime | None = self._session.scalar(
            select(func.min(MessageRecordRow.next_retry_at)).where(
                MessageRecordRow.status == int(OutboxStatus.PENDING),
                MessageRecordRow.next_retry_at <= now,
            )
        )
        return oldest

    def next_due_at(self, *, after: datetime) -> datetime | None:
        """When the next pending row falls due (leases and retries included), for a polling relay."""
        upcoming: datetime | None = self._session.scalar(
            select(func.min(MessageRecordRow.next_retry_at)).where(
                MessageRecordRow.status == int(OutboxStatus.PENDING),
                MessageRecordRow.next_retry_at > after,
            )
        )
        return upcoming

    def count_due(self, now: datetime, *, limit: int) -> int:
        """Due rows, counted up to ``limit``: the index range scan stops there, so a backlog of
        millions costs no more than the limit."""
        due = (
            select(MessageRecordRow.id)
            .where(
                MessageRecordRow.status == int(OutboxStatus.PENDING),
                MessageRecordRow.next_retry_at <= now,
            )
            .limit(limit)
            .subquery()
        )
        return int(self._session.scalar(select(func.count()).select_from(due)) or 0)

    def get(self, message_id: str) -> OutboxMessage | None:
        row = self._session.scalars(
            select(MessageRecordRow).where(MessageRecordRow.message_id == message_id)
        ).one_or_none()
        return message_from_row(row) if row else None

    def list_for_business_key(self, business_key: str) -> list[OutboxMessage]:
        rows = self._session.scalars(
            select(MessageRecordRow)
            .where(MessageRecordRow.business_key == business_key)
            .order_by(MessageRecordRow.id)
        ).all()
        return [message_from_row(r) for r in rows]

    def _update_pending(self, message_id: str, **values: object) -> bool:
        # Only a row still pending changes: if another relay already sent it, that outcome stands.
        result = self._session.execute(
            update(MessageRecordRow)
            .where(
                MessageRecordRow.message_id == message_id,
                MessageRecordRow.status == int(OutboxStatus.PENDING),
            )
            .values(**values),
            execution_options={"synchronize_session": False},
        )
        return int(result.rowcount) == 1  # type: ignore[attr-defined]


def _earlier_pending_in_stream(row: type[MessageRecordRow]) -> Exists:
    """True when an earlier row of ``row``'s stream (business key x topic) is still pending.

    Rows without a business key belong to no stream and never wait. Served by idx_business_key: a
    stream holds a handful of rows. A plain (non-locking) read, so it sees committed state only: a
    row another relay has claimed is still pending there until that relay marks it sent.
    """
    earlier = aliased(MessageRecordRow)
    return exists().where(
        row.business_key != "",
        earlier.business_key == row.business_key,
        earlier.topic == row.topic,
        earlier.status == int(OutboxStatus.PENDING),
        earlier.id < row.id,
    )


def message_record_values(message: OutboxMessage) -> dict[str, Any]:
    """The columns of a new ``message_record`` row (for single and bulk inserts alike)."""
    return {
        "message_id": message.message_id,
        "topic": message.topic,
        "content": message.content,
        "status": int(message.status),
        "retry_count": message.attempts,
        "create_time": message.create_time,
        "update_time": message.update_time,
        "business_key": message.business_key,
        "business_type": message.business_type,
        "next_retry_at": message.due_at,
        "trace_context": message.trace.to_column() if message.trace else None,
        "requeue_count": message.requeue_count,
    }


def order_from_row(row: OrderRow) -> Order:
    return Order(
        id=row.id,
        order_no=row.order_no,
        user_id=row.user_id,
        user_phone=row.user_phone,
        amount=row.amount,
        currency=row.currency,
        status=OrderStatus(row.status),
        pay_time=row.pay_time,
        payment_txn_id=row.payment_txn_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


_CLAIMED_COLUMNS = (
    MessageRecordRow.id,
    MessageRecordRow.message_id,
    MessageRecordRow.topic,
    MessageRecordRow.content,
    MessageRecordRow.business_key,
    MessageRecordRow.business_type,
    MessageRecordRow.retry_count,
    MessageRecordRow.create_time,
    MessageRecordRow.last_error,
    MessageRecordRow.sent_time,
    MessageRecordRow.trace_context,
    MessageRecordRow.requeue_count,
    MessageRecordRow.resolved_at,
)


def _claimed_message(row: Sequence[Any], *, now: datetime, lease_until: datetime) -> OutboxMessage:
    """A claimed row (``_CLAIMED_COLUMNS``, unpacked by position: a Row's attribute lookups cost more
    than the rest of this), as the claim left it: pending, due when its lease ends, updated now."""
    (
        id_,
        message_id,
        topic,
        content,
        key,
        type_,
        attempts,
        created,
        error,
        sent,
        trace,
        requeues,
        resolved,
    ) = row
    return OutboxMessage(
        id=id_,
        message_id=message_id,
        topic=topic,
        content=content,
        business_key=key or "",
        business_type=type_ or "",
        status=OutboxStatus.PENDING,
        attempts=attempts,
        due_at=lease_until,
        create_time=created,
        update_time=now,
        last_error=error,
        sent_time=sent,
        trace=TraceContext.from_column(trace),
        requeue_count=requeues or 0,
        resolved_at=resolved,
    )


def message_from_row(row: MessageRecordRow | Row[Any]) -> OutboxMessage:
    return OutboxMessage(
        id=row.id,
        message_id=row.message_id,
        topic=row.topic,
        content=row.content,
        business_key=row.business_key or "",
        business_type=row.business_type or "",
        status=OutboxStatus(row.status),
        attempts=row.retry_count,
        due_at=row.next_retry_at,
        create_time=row.create_time,
        update_time=row.update_time,
        last_error=row.last_error,
        sent_time=row.sent_time,
        trace=TraceContext.from_column(row.trace_context),
        requeue_count=row.requeue_count or 0,
        resolved_at=row.resolved_at,
    )
