"""Table definitions. Migrations in ``payment_outbox/migrations`` create exactly these."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    DateTime,
    Index,
    Integer,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    Text,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Microsecond precision on MySQL: due times and leases are compared, and ordered, within a second.
Timestamp = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
# SQLite only autoincrements INTEGER PRIMARY KEY.
Id = BigInteger().with_variant(Integer(), "sqlite")
# The seed stores content as TEXT (64 KiB); SNS accepts 256 KiB, so MySQL gets MEDIUMTEXT.
Content = Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "idx_%(column_0_label)s",
            "uq": "uk_%(table_name)s_%(column_0_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class OrderRow(Base):
    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    order_no: Mapped[str] = mapped_column(String(32), nullable=False, unique=True)
    user_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    user_phone: Mapped[str] = mapped_column(String(16), nullable=False)
    amount: Mapped[Decimal] = mapped_column(Numeric(12, 2), nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    pay_time: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    # Unique: a transaction can pay one order only, and a replayed callback is recognised.
    payment_txn_id: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    created_at: Mapped[datetime] = mapped_column(Timestamp, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(Timestamp, nullable=False)

    __table_args__ = (Index("idx_orders_user_id", "user_id"),)


class MessageRecordRow(Base):
    """The seed's local message table, kept column for column, plus due time, last error and sent time."""

    __tablename__ = "message_record"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(String(64), nullable=False)
    topic: Mapped[str] = mapped_column(String(100), nullable=False)
    content: Mapped[str] = mapped_column(Content, nullable=False)
    status: Mapped[int] = mapped_column(SmallInteger, nullable=False, default=0)
    retry_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    create_time: Mapped[datetime] = mapped_column(Timestamp, nullable=False)
    update_time: Mapped[datetime] = mapped_column(Timestamp, nullable=False)
    business_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    business_type: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # Due time of the next attempt; while a relay holds a claim it is the end of that lease.
    next_retry_at: Mapped[datetime] = mapped_column(Timestamp, nullable=False)
    last_error: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    sent_time: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    # The trace context of the request that wrote the row (traceparent, correlation id, X-Ray header),
    # as compact JSON; the relay sends it as message attributes.
    trace_context: Mapped[str | None] = mapped_column(String(512), nullable=True)
    # Operator requeues so far: on a FIFO topic each requeue publishes under a new deduplication id.
    requeue_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    # When an operator marked this FAILED row resolved (triage); a requeue clears it.
    resolved_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)

    __table_args__ = (
        Index("uk_message_id", "message_id", unique=True),
        Index("idx_status_create_time", "status", "create_time"),
        Index("idx_business_key", "business_key"),
        # The claim reads (status = 0, next_retry_at <= now) in due order: this index serves it
        # without touching sent rows, however many there are.
        Index("idx_status_next_retry_at", "status", "next_retry_at"),
        # The reconciler pages through the rows sent in its window by (sent_time, id).
        Index("idx_status_sent_time", "status", "sent_time"),
    )


class OutboxAuditRow(Base):
    """One row per operator action on the outbox (requeues): who, what, on which rows, and why."""

    __tablename__ = "outbox_audit"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    actor: Mapped[str] = mapped_column(String(512), nullable=False)
    action: Mapped[str] = mapped_column(String(64), nullable=False)
    # The filters (or message id) the action was given, as JSON.
    filters: Mapped[str] = mapped_column(Text, nullable=False)
    affected_count: Mapped[int] = mapped_column(Integer, nullable=False)
    reason: Mapped[str] = mapped_column(String(500), nullable=False)
    created_at: Mapped[datetime] = mapped_column(Timestamp, nullable=False)

    __table_args__ = (Index("idx_outbox_audit_created_at", "created_at"),)
