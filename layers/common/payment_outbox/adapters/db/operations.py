"""SQL for operators: listing and requeueing outbox rows, counts, reconciliation and retention queries,
and the audit trail. Every statement is bounded (a LIMIT, or an id list built from one)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Self

from sqlalchemy import ColumnElement, and_, delete, exists, func, or_, select, update
from sqlalchemy.orm import Session

from payment_outbox.adapters.db.repositories import message_from_row, order_from_row
from payment_outbox.adapters.db.schema import MessageRecordRow, OrderRow, OutboxAuditRow
from payment_outbox.adapters.db.unit_of_work import SqlUnitOfWork
from payment_outbox.domain.orders import Order, OrderStatus
from payment_outbox.domain.outbox import OutboxMessage, OutboxStatus
from payment_outbox.ports import AuditEntry, ErrorRow, MessageFilter, SentCursor, StatusCounts

_PENDING, _SENT, _FAILED = int(OutboxStatus.PENDING), int(OutboxStatus.SENT), int(OutboxStatus.FAILED)


class SqlOperationsRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    # --- admin API ------------------------------------------------------------------------------

    def list_messages(self, where: MessageFilter, *, after_id: int | None, limit: int) -> list[OutboxMessage]:
        """Keyset page in id order: rows after ``after_id`` matching the filter."""
        query = select(MessageRecordRow).where(*_conditions(where))
        if after_id is not None:
            query = query.where(MessageRecordRow.id > after_id)
        rows = self._session.scalars(query.order_by(MessageRecordRow.id).limit(limit)).all()
        return [message_from_row(r) for r in rows]

    def requeue_candidates(
        self, where: MessageFilter, *, now: datetime, include_sent: bool, limit: int
    ) -> list[OutboxMessage]:
        rows = self._session.scalars(
            select(MessageRecordRow)
            .where(*_conditions(where), _requeueable(include_sent))
            .order_by(MessageRecordRow.id)
            .limit(limit)
        ).all()
        return [message_from_row(r) for r in rows]

    def requeue(
        self, ids: Sequence[int], *, now: datetime, include_sent: bool, reset_attempts: bool = False
    ) -> int:
        """Make the rows due now; ``retry_count`` and ``last_error`` stay (history) unless
        ``reset_attempts`` gives a fresh attempt budget.

        The eligibility test is repeated here, so a row that changed since it was selected (sent by
        the relay meanwhile, say) is left alone.
        """
        if not ids:
            return 0
        values: dict[str, Any] = {
            "status": _PENDING,
            "next_retry_at": now,
            "update_time": now,
            # A new delivery: on a FIFO topic it goes out under a new deduplication id.
            "requeue_count": MessageRecordRow.requeue_count + 1,
            "resolved_at": None,
        }
        if reset_attempts:
            values["retry_count"] = 0
        result = self._session.execute(
            update(MessageRecordRow)
            .where(MessageRecordRow.id.in_(list(ids)), _requeueable(include_sent))
            .values(**values),
            execution_options={"synchronize_session": False},
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    def status_counts(self, *, now: datetime) -> StatusCounts:
        by_status: dict[int, int] = {
            int(status): int(count)
            for status, count in self._session.execute(
                select(MessageRecordRow.status, func.count()).group_by(MessageRecordRow.status)
            ).all()
        }
        due, oldest = self._session.execute(
            select(func.count(), func.min(MessageRecordRow.next_retry_at)).where(
                MessageRecordRow.status == _PENDING, MessageRecordRow.next_retry_at <= now
            )
        ).one()
        return StatusCounts(
            pending=by_status.get(_PENDING, 0),
            sent=by_status.get(_SENT, 0),
            failed=by_status.get(_FAILED, 0),
            due=int(due),
            oldest_due_at=oldest,
        )

    def error_rows(self, *, limit: int) -> list[ErrorRow]:
        """What triage groups, oldest first: FAILED rows no operator resolved, and pending rows retrying
        after a failure. Only the columns triage reads (never the content)."""
        rows = self._session.execute(
            select(
                MessageRecordRow.id,
                MessageRecordRow.message_id,
                MessageRecordRow.topic,
                MessageRecordRow.status,
                MessageRecordRow.retry_count,
                MessageRecordRow.last_error,
                MessageRecordRow.update_time,
            )
            .where(
                or_(
                    and_(MessageRecordRow.status == _FAILED, MessageRecordRow.resolved_at.is_(None)),
                    and_(
                        MessageRecordRow.status == _PENDING,
                        MessageRecordRow.retry_count > 0,
                        MessageRecordRow.last_error.is_not(None),
                    ),
                )
            )
            .order_by(MessageRecordRow.id)
            .limit(limit)
        ).all()
        return [
            ErrorRow(
                id=int(r.id),
                message_id=r.message_id,
                topic=r.topic,
                status=OutboxStatus(r.status),
                attempts=int(r.retry_count),
                last_error=r.last_error,
                seen_at=r.update_time,
            )
            for r in rows
        ]

    def mark_resolved(self, ids: Sequence[int], *, now: datetime) -> int:
        """Mark these FAILED rows resolved (they stay FAILED); a row requeued or resolved meanwhile is
        left alone."""
        if not ids:
            return 0
        result = self._session.execute(
            update(MessageRecordRow)
            .where(
                MessageRecordRow.id.in_(list(ids)),
                MessageRecordRow.status == _FAILED,
                MessageRecordRow.resolved_at.is_(None),
            )
            .values(resolved_at=now, update_time=now),
            execution_options={"synchronize_session": False},
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    def record_audit(self, entry: AuditEntry) -> int:
        row = OutboxAuditRow(
            actor=entry.actor[:512],
            action=entry.action,
            filters=json.dumps(entry.filters, sort_keys=True, default=str),
            affected_count=entry.affected_count,
            reason=entry.reason[:500],
            created_at=entry.created_at,
        )
        self._session.add(row)
        self._session.flush()
        return row.id

    # --- reconciliation ---------------------------------------------------------------------------

    def paid_orders_without_messages(self, *, paid_since: datetime, limit: int) -> list[Order]:
        """PAID orders (paid since ``paid_since``, by our clock) with no outbox row at all."""
        rows = self._session.scalars(
            select(OrderRow)
            .where(
                OrderRow.status == OrderStatus.PAID.value,
                OrderRow.updated_at >= paid_since,
                ~exists().where(MessageRecordRow.business_key == OrderRow.order_no),
            )
            .order_by(OrderRow.id)
            .limit(limit)
        ).all()
        return [order_from_row(r) for r in rows]

    def failed_messages(self, *, limit: int) -> tuple[int, list[OutboxMessage]]:
        total = self._session.scalar(
            select(func.count()).select_from(MessageRecordRow).where(MessageRecordRow.status == _FAILED)
        )
        rows = self._session.scalars(
            select(MessageRecordRow)
            .where(MessageRecordRow.status == _FAILED)
            .order_by(MessageRecordRow.id)
            .limit(limit)
        ).all()
        return int(total or 0), [message_from_row(r) for r in rows]

    def failed_since(self, since: datetime, *, limit: int) -> list[OutboxMessage]:
        """FAILED rows that became FAILED after ``since`` (their last update is the give-up)."""
        rows = self._session.scalars(
            select(MessageRecordRow)
            .where(MessageRecordRow.status == _FAILED, MessageRecordRow.update_time > since)
            .order_by(MessageRecordRow.id)
            .limit(limit)
        ).all()
        return [message_from_row(r) for r in rows]

    def sent_between(
        self,
        *,
        sent_from: datetime,
        sent_to: datetime,
        topics: Sequence[str],
        after: SentCursor | None,
        limit: int,
    ) -> list[OutboxMessage]:
        """One page of the rows of ``topics`` sent in [sent_from, sent_to], in (sent_time, id) order,
        from just past ``after``: a keyset page (idx_status_sent_time), so rows written or deleted
        between pages never make a later page skip or repeat one."""
        query = select(MessageRecordRow).where(
            MessageRecordRow.status == _SENT,
            MessageRecordRow.sent_time >= sent_from,
            MessageRecordRow.sent_time <= sent_to,
            MessageRecordRow.topic.in_(list(topics)),
        )
        if after is not None:
            query = query.where(
                or_(
                    MessageRecordRow.sent_time > after.sent_time,
                    and_(MessageRecordRow.sent_time == after.sent_time, MessageRecordRow.id > after.id),
                )
            )
        rows = self._session.scalars(
            query.order_by(MessageRecordRow.sent_time, MessageRecordRow.id).limit(limit)
        ).all()
        return [message_from_row(r) for r in rows]

    # --- retention --------------------------------------------------------------------------------

    def sent_ids_before(self, cutoff: datetime, *, limit: int) -> list[int]:
        """Ids of rows sent (and created) before ``cutoff``, oldest first; (status, create_time) index."""
        return [
            int(i)
            for i in self._session.scalars(
                select(MessageRecordRow.id)
                .where(
                    MessageRecordRow.status == _SENT,
                    MessageRecordRow.create_time < cutoff,
                    MessageRecordRow.sent_time < cutoff,
                )
                .order_by(MessageRecordRow.id)
                .limit(limit)
            ).all()
        ]

    def messages_by_ids(self, ids: Sequence[int]) -> list[OutboxMessage]:
        if not ids:
            return []
        rows = self._session.scalars(
            select(MessageRecordRow).where(MessageRecordRow.id.in_(list(ids))).order_by(MessageRecordRow.id)
        ).all()
        return [message_from_row(r) for r in rows]

    def delete_sent(self, ids: Sequence[int], *, sent_before: datetime) -> int:
        """Delete these rows by primary key, only while they are still SENT before the cutoff."""
        if not ids:
            return 0
        result = self._session.execute(
            delete(MessageRecordRow).where(
                MessageRecordRow.id.in_(list(ids)),
                MessageRecordRow.status == _SENT,
                MessageRecordRow.sent_time < sent_before,
            ),
            execution_options={"synchronize_session": False},
        )
        return int(result.rowcount)  # type: ignore[attr-defined]


class SqlOperationsUnitOfWork(SqlUnitOfWork):
    """The ordinary unit of work plus the operators' repository, on the same transaction."""

    operations: SqlOperationsRepository

    def __enter__(self) -> Self:
        super().__enter__()
        self.operations = SqlOperationsRepository(self._session)
        return self


def _conditions(where: MessageFilter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if where.statuses:
        conditions.append(MessageRecordRow.status.in_(list(where.statuses)))
    if where.topic is not None:
        conditions.append(MessageRecordRow.topic == where.topic)
    if where.business_key is not None:
        conditions.append(MessageRecordRow.business_key == where.business_key)
    if where.created_from is not None:
        conditions.append(MessageRecordRow.create_time >= where.created_from)
    if where.created_to is not None:
        conditions.append(MessageRecordRow.create_time < where.created_to)
    return conditions


def _requeueable(include_sent: bool) -> ColumnElement[bool]:
    """FAILED rows, and SENT rows only when asked for. Never a pending row: it is either in flight
    (leased to a relay or the after-commit publish) or waiting for a retry the relay will make."""
    eligible: list[Any] = [MessageRecordRow.status == _FAILED]
    if include_sent:
        eligible.append(MessageRecordRow.status == _SENT)
    return or_(*eligible)
