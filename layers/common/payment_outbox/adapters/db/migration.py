"""The schema's history in the database: Alembic brings it to head, ``alembic_version`` says where it is."""

from __future__ import annotations

from sqlalchemy import Engine, inspect, text

from payment_outbox.migrations.runner import upgrade


class AlembicSchemaMigrations:
    """With ``lock_wait_seconds``, a DDL that waits longer for a table's lock fails instead of waiting."""

    def __init__(self, engine: Engine, *, lock_wait_seconds: int | None = None) -> None:
        self._engine = engine
        self._lock_wait_seconds = lock_wait_seconds

    def upgrade_to_head(self) -> None:
        upgrade(self._engine, lock_wait_seconds=self._lock_wait_seconds)

    def current_revision(self) -> str | None:
        with self._engine.connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                return None
            return str(conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one())
