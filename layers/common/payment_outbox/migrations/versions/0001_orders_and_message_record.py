"""orders and message_record (the seed's local message table plus due time, last error, sent time)

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ts = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "orders",
        sa.Column("id", _id, primary_key=True, autoincrement=True),
        sa.Column("order_no", sa.String(32), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("user_phone", sa.String(16), nullable=False),
        sa.Column("amount", sa.Numeric(12, 2), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("pay_time", _ts, nullable=True),
        sa.Column("payment_txn_id", sa.String(64), nullable=True),
        sa.Column("created_at", _ts, nullable=False),
        sa.Column("updated_at", _ts, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_orders"),
        sa.UniqueConstraint("order_no", name="uk_orders_order_no"),
        sa.UniqueConstraint("payment_txn_id", name="uk_orders_payment_txn_id"),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )
    op.create_index("idx_orders_user_id", "orders", ["user_id"])

    op.create_table(
        "message_record",
        sa.Column("id", _id, primary_key=True, autoincrement=True),
        sa.Column("message_id", sa.String(64), nullable=False),
        sa.Column("topic", sa.String(100), nullable=False),
        sa.Column("content", sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb"), nullable=False),
        sa.Column("status", sa.SmallInteger(), nullable=False, server_default="0"),
        sa.Column("retry_count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("create_time", _ts, nullable=False),
        sa.Column("update_time", _ts, nullable=False),
        sa.Column("business_key", sa.String(64), nullable=True),
        sa.Column("business_type", sa.String(32), nullable=True),
        sa.Column("next_retry_at", _ts, nullable=False),
        sa.Column("last_error", sa.String(1000), nullable=True),
        sa.Column("sent_time", _ts, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_message_record"),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )
    op.create_index("uk_message_id", "message_record", ["message_id"], unique=True)
    op.create_index("idx_status_create_time", "message_record", ["status", "create_time"])
    op.create_index("idx_business_key", "message_record", ["business_key"])
    op.create_index("idx_status_next_retry_at", "message_record", ["status", "next_retry_at"])


def downgrade() -> None:
    op.drop_table("message_record")
    op.drop_table("orders")
