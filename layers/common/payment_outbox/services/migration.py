"""``migrate_schema``: bring the database to the newest schema; safe to run any number of times."""

from __future__ import annotations

from payment_outbox.ports import SchemaMigrations


def migrate_schema(schema: SchemaMigrations) -> str:
    """Apply pending migrations and return the revision the database is now at ("none" without one)."""
    schema.upgrade_to_head()
    return schema.current_revision() or "none"
