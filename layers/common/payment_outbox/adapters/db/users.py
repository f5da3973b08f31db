"""The application's own database user: the functions connect with it, never as the master user.

The schema migrator (which connects as the master user) creates it, sets its password from its secret
and grants it data access only — no DDL, no GRANT, no other schema — on every deploy, idempotently.
"""

from __future__ import annotations

import re

from sqlalchemy import Engine, text

from payment_outbox.errors import ConfigurationError

#: Row access only: the application never changes the schema (the migrator does) nor grants anything.
APPLICATION_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"

_USERNAME = re.compile(r"^[A-Za-z0-9_]{1,32}$")
_DATABASE = re.compile(r"^[A-Za-z0-9_]{1,64}$")


class MySqlApplicationUser:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def ensure(self, username: str, password: str) -> None:
        """Create the user if missing, set its password, and grant it row access to this database."""
        database = self._engine.url.database or ""
        if not _USERNAME.match(username):
            raise ConfigurationError("the application user's name must be 1-32 letters, digits or _")
        if not _DATABASE.match(database):
            raise ConfigurationError("the database name must be 1-64 letters, digits or _")
        if not password:
            raise ConfigurationError("the application user's secret has an empty password")
        account = f"'{username}'@'%'"
        with self._engine.begin() as conn:
            # The password is a bound parameter (escaped by the driver), never part of the SQL text.
            conn.execute(
                text(f"CREATE USER IF NOT EXISTS {account} IDENTIFIED BY :password"), {"password": password}
            )
            conn.execute(text(f"ALTER USER {account} IDENTIFIED BY :password"), {"password": password})
            conn.execute(text(f"GRANT {APPLICATION_PRIVILEGES} ON `{database}`.* TO {account}"))
