"""message_record: idx_status_sent_time, so the reconciler pages through the rows sent in its window
by (sent_time, id) with a range scan instead of reading every sent row

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # An added secondary index: MySQL 8 / MariaDB build it online (writes go on meanwhile).
    op.create_index("idx_status_sent_time", "message_record", ["status", "sent_time"])


def downgrade() -> None:
    op.drop_index("idx_status_sent_time", table_name="message_record")
