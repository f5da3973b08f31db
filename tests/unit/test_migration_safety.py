"""The ``make lint`` check on migrations: a drop or rename in ``upgrade()`` is refused unless the
migration is marked as a contract step; expanding migrations (and drops in ``downgrade()``) pass."""

from __future__ import annotations

from pathlib import Path

import pytest

from payment_outbox_dev.checks import migration_safety

pytestmark = pytest.mark.unit

HEADER = """from alembic import op
import sqlalchemy as sa

revision = "0099"
down_revision = "0002"
"""


def write(tmp_path: Path, body: str, name: str = "0099_change.py") -> Path:
    (tmp_path / name).write_text(HEADER + body)
    return tmp_path


@pytest.mark.parametrize(
    "upgrade",
    [
        'op.drop_column("orders", "user_phone")',
        'op.drop_table("outbox_audit")',
        'op.rename_table("orders", "customer_orders")',
        'op.alter_column("orders", "user_phone", new_column_name="phone")',
        'op.execute("ALTER TABLE orders DROP COLUMN user_phone")',
        'op.execute("ALTER TABLE orders CHANGE user_phone phone VARCHAR(20)")',
        'op.execute("ALTER TABLE orders RENAME TO customer_orders")',
        'with op.batch_alter_table("orders") as batch:\n        batch.drop_column("user_phone")',
    ],
)
def test_a_drop_or_rename_in_upgrade_is_refused(tmp_path: Path, upgrade: str) -> None:
    versions = write(tmp_path, f"\n\ndef upgrade() -> None:\n    {upgrade}\n")
    findings = migration_safety.check(versions)
    assert len(findings) == 1 and "contract step" in str(findings[0])
    assert migration_safety.main([str(versions)]) == 1


def test_the_same_drop_marked_as_a_contract_step_passes(tmp_path: Path) -> None:
    versions = write(
        tmp_path,
        'CONTRACT_STEP = "release 14 stopped reading user_phone"\n\n'
        'def upgrade() -> None:\n    op.drop_column("orders", "user_phone")\n',
    )
    assert migration_safety.check(versions) == []
    assert migration_safety.main([str(versions)]) == 0


def test_an_empty_marker_is_no_marker(tmp_path: Path) -> None:
    versions = write(tmp_path, 'CONTRACT_STEP = " "\n\ndef upgrade() -> None:\n    op.drop_table("x")\n')
    assert len(migration_safety.check(versions)) == 1


def test_expanding_migrations_and_drops_in_downgrade_pass(tmp_path: Path) -> None:
    versions = write(
        tmp_path,
        '\n\ndef upgrade() -> None:\n    op.add_column("orders", sa.Column("note", sa.String(20)))\n'
        '    op.create_index("ix_note", "orders", ["note"])\n\n\n'
        'def downgrade() -> None:\n    op.drop_column("orders", "note")\n',
    )
    assert migration_safety.check(versions) == []


def test_the_projects_migrations_pass() -> None:
    assert migration_safety.check(migration_safety.VERSIONS_DIR) == []
