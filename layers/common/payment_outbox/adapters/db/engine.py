"""Engine and session factory, shaped for Lambda: one connection per container, checked before use."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url)
        # SQLite ignores foreign keys and serialises writers; the demo needs neither tuned further,
        # but it must not hold a write lock between statements of different units of work.
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(
        url,
        # A Lambda container serves one request at a time: one pooled connection, no overflow.
        pool_size=1,
        max_overflow=0,
        # Containers sleep between invocations; the server may have closed the connection meanwhile.
        pool_pre_ping=True,
        pool_recycle=300,
        isolation_level="READ COMMITTED",
        connect_args={"connect_timeout": 5},
    )


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=False)


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()
