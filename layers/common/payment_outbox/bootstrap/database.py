"""The database engine and units of work."""

from __future__ import annotations

from sqlalchemy import URL, Engine
from sqlalchemy.orm import Session, sessionmaker

from payment_outbox.adapters.db.engine import make_engine, make_session_factory
from payment_outbox.adapters.db.migration import AlembicSchemaMigrations
from payment_outbox.adapters.db.unit_of_work import SqlUnitOfWork
from payment_outbox.adapters.secrets import database_credentials
from payment_outbox.bootstrap import on_reset, once
from payment_outbox.bootstrap.secrets import secret
from payment_outbox.settings import DatabaseSettings


@once
def engine() -> Engine:
    settings = DatabaseSettings()
    if settings.database_url is not None:
        return make_engine(settings.database_url.get_secret_value())
    credentials = secret(settings.required_secret_arn())

    def current_credentials(refresh: bool) -> tuple[str, str]:
        if refresh:
            credentials.invalidate()
        return database_credentials(credentials.value())

    # No password in the URL: each new connection takes it from the (cached) secret.
    url = URL.create(
        "mysql+pymysql",
        host=settings.db_host,
        port=settings.db_port,
        database=settings.db_name,
        query={"charset": "utf8mb4"},
    )
    return make_engine(url.render_as_string(), current_credentials, tls=settings.db_tls)


@once
def session_factory() -> sessionmaker[Session]:
    return make_session_factory(engine())


def unit_of_work() -> SqlUnitOfWork:
    return SqlUnitOfWork(session_factory())


def schema_migrations() -> AlembicSchemaMigrations:
    return AlembicSchemaMigrations(engine())


def _dispose() -> None:
    if engine.cache_info().currsize:  # type: ignore[attr-defined]
        engine().dispose()


on_reset(_dispose)
