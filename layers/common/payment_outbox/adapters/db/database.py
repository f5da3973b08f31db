"""One database, as a function sees it: its engine, and units of work on it."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import URL, Engine
from sqlalchemy.orm import Session, sessionmaker

from payment_outbox.adapters.db.engine import CredentialsProvider, make_engine, make_session_factory
from payment_outbox.adapters.db.operations import SqlOperationsUnitOfWork
from payment_outbox.adapters.db.unit_of_work import SqlUnitOfWork
from payment_outbox.timeouts import DatabaseTimeouts


@dataclass(frozen=True)
class Database:
    engine: Engine
    sessions: sessionmaker[Session]

    @classmethod
    def at_url(cls, url: str, timeouts: DatabaseTimeouts | None = None) -> Database:
        """A database named by a full SQLAlchemy URL (local runs, tests)."""
        return cls._on(make_engine(url) if timeouts is None else make_engine(url, timeouts=timeouts))

    @classmethod
    def on_mysql(
        cls,
        *,
        host: str | None,
        port: int,
        name: str | None,
        credentials: CredentialsProvider,
        tls: bool,
        ca_bundle: str | None = None,
        timeouts: DatabaseTimeouts,
    ) -> Database:
        """MySQL at ``host``, with no password in the URL: each new connection asks ``credentials``.
        With ``tls`` the server is verified against ``ca_bundle`` (PEM) or the system's authorities."""
        url = URL.create("mysql+pymysql", host=host, port=port, database=name, query={"charset": "utf8mb4"})
        return cls._on(
            make_engine(url.render_as_string(), credentials, tls=tls, ca_bundle=ca_bundle, timeouts=timeouts)
        )

    @classmethod
    def _on(cls, engine: Engine) -> Database:
        return cls(engine, make_session_factory(engine))

    def unit_of_work(self) -> SqlUnitOfWork:
        return SqlUnitOfWork(self.sessions)

    def operations_unit_of_work(self) -> SqlOperationsUnitOfWork:
        return SqlOperationsUnitOfWork(self.sessions)
