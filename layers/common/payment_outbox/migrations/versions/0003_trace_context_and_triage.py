"""message_record: trace_context (the writing request's trace), requeue_count (a fresh FIFO
deduplication id per requeue) and resolved_at (triage: a FAILED row an operator resolved)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ts = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    # Nullable or defaulted columns: on MySQL 8 / MariaDB an instant (metadata-only) change, so the
    # deploy does not rewrite the table; rows written before it have no trace and no requeues.
    with op.batch_alter_table("message_record") as batch:
        batch.add_column(sa.Column("trace_context", sa.String(512), nullable=True))
        batch.add_column(sa.Column("requeue_count", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("resolved_at", _ts, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("message_record") as batch:
        batch.drop_column("resolved_at")
        batch.drop_column("requeue_count")
        batch.drop_column("trace_context")
