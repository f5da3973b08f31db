"""The schema's history in the database: Alembic brings it to head (the scripts in
``payment_outbox/migrations``, run programmatically, no alembic.ini needed), ``alembic_version`` says
where it is."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, inspect, text

#: Alembic's script location: the ``payment_outbox.migrations`` package (found by path, never
#: imported: its environment imports this package's schema).
MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation: a literal % in a URL-encoded password must be doubled.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(engine: Engine, revision: str = "head", *, lock_wait_seconds: int | None = None) -> None:
    """Bring the schema to ``revision``; a no-op when it is already there. With ``lock_wait_seconds``
    a DDL that waits longer for a table's metadata lock fails instead of waiting (MySQL/MariaDB)."""
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        if lock_wait_seconds is not None and engine.dialect.name in ("mysql", "mariadb"):
            connection.exec_driver_sql(f"SET SESSION lock_wait_timeout = {max(int(lock_wait_seconds), 1)}")
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


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


def known_revisions() -> list[str]:
    """The revisions this code's migrations know, oldest first."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory(str(MIGRATIONS_DIR))
    return [script.revision for script in reversed(list(scripts.walk_revisions()))]
