"""Engine and session factory, shaped for Lambda: one connection per container, checked before use."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from payment_outbox.errors import ConfigurationError
from payment_outbox.timeouts import DatabaseTimeouts

#: Timeouts when none are given (tooling, tests): generous, but never unbounded.
DEFAULT_TIMEOUTS = DatabaseTimeouts(connect_seconds=5, read_seconds=30, write_seconds=30)

#: MySQL's "Access denied": the password we hold was rotated away.
ER_ACCESS_DENIED = 1045

#: Returns (username, password); ``refresh=True`` asks for the newest secret, not a cached one.
CredentialsProvider = Callable[[bool], tuple[str, str]]


def make_engine(
    url: str,
    credentials: CredentialsProvider | None = None,
    *,
    tls: bool = False,
    ca_bundle: str | None = None,
    timeouts: DatabaseTimeouts = DEFAULT_TIMEOUTS,
) -> Engine:
    """An engine for ``url``. With ``credentials``, every new connection asks for the current
    username and password, and one refused with "access denied" is retried once with a refreshed
    secret — so a rotated database password is picked up without a cold start. With ``tls`` the
    connection is encrypted and the server's certificate and host name are verified (see
    ``tls_context``). ``timeouts`` bound every connect, read and write on the socket.

    Statement parameters never appear in an error's text (``hide_parameters``): they hold phone
    numbers, and ``ALTER USER … IDENTIFIED BY`` holds a password."""
    if ca_bundle and not tls:
        raise ConfigurationError("a database CA bundle is given but TLS is off (DB_TLS=false)")
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, hide_parameters=True)
        # SQLite ignores foreign keys and serialises writers; the demo needs neither tuned further,
        # but it must not hold a write lock between statements of different units of work.
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    engine = create_engine(
        url,
        # A Lambda container serves one request at a time: one pooled connection, no overflow.
        pool_size=1,
        max_overflow=0,
        # Containers sleep between invocations; the server may have closed the connection meanwhile.
        pool_pre_ping=True,
        pool_recycle=300,
        isolation_level="READ COMMITTED",
        hide_parameters=True,
        connect_args={
            "connect_timeout": timeouts.connect_seconds,
            "read_timeout": timeouts.read_seconds,
            "write_timeout": timeouts.write_seconds,
            **({"ssl": tls_context(ca_bundle)} if tls else {}),
        },
    )
    if credentials is not None:
        event.listen(engine, "do_connect", _connect_with(credentials))
    return engine


def tls_context(ca_bundle: str | None = None) -> ssl.SSLContext:
    """Verification of the server's certificate and host name, never switched off: against
    ``ca_bundle`` (PEM) when given, else against the system's trusted authorities. The RDS Proxy
    presents a publicly trusted certificate; an RDS or Aurora endpoint reached directly presents one
    signed by the RDS CA, which no system store holds — it needs the bundle."""
    try:
        context = ssl.create_default_context(cadata=ca_bundle) if ca_bundle else ssl.create_default_context()
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigurationError("the database CA bundle is not a PEM certificate bundle") from exc
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def _connect_with(credentials: CredentialsProvider) -> Callable[..., Any]:
    def connect(dialect: Any, _record: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
        cparams["user"], cparams["password"] = credentials(False)
        try:
            return dialect.loaded_dbapi.connect(*cargs, **cparams)
        except dialect.loaded_dbapi.OperationalError as exc:
            if not exc.args or exc.args[0] != ER_ACCESS_DENIED:
                raise
            cparams["user"], cparams["password"] = credentials(True)
            return dialect.loaded_dbapi.connect(*cargs, **cparams)

    return connect


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=False)


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()
