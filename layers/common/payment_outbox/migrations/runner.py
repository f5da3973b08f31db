"""Run the Alembic migrations programmatically (no alembic.ini needed), idempotently."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

MIGRATIONS_DIR = Path(__file__).resolve().parent


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
