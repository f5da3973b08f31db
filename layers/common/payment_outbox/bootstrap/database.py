"""The database engine and units of work."""

from __future__ import annotations

from sqlalchemy import URL, Engine
from sqlalchemy.orm import Session, sessionmaker

from payment_outbox.adapters.db.engine import make_engine, make_session_factory
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
    assert settings.db_secret_arn and settings.db_host and settings.db_name  # checked by the settings
    username, password = database_credentials(secret(settings.db_secret_arn).value())
    url = URL.create(
        "mysql+pymysql",
        username=username,
        password=password,
        host=settings.db_host,
        port=settings.db_port,
        database=settings.db_name,
        query={"charset": "utf8mb4"},
    )
    return make_engine(url.render_as_string(hide_password=False))


@once
def session_factory() -> sessionmaker[Session]:
    return make_session_factory(engine())


def unit_of_work() -> SqlUnitOfWork:
    return SqlUnitOfWork(session_factory())


def _dispose() -> None:
    if engine.cache_info().currsize:  # type: ignore[attr-defined]
        engine().dispose()


on_reset(_dispose)
