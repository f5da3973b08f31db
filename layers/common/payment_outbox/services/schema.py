"""``migrate_schema``: bring the database to the newest schema; safe to run any number of times."""

from __future__ import annotations

from sqlalchemy import Engine, inspect, text

from payment_outbox.migrations.runner import upgrade


def migrate_schema(engine: Engine) -> str:
    """Apply pending migrations and return the revision the database is now at."""
    upgrade(engine)
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return "none"
        return str(conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one())
