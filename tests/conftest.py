"""Shared fixtures: dummy AWS credentials for the whole run, the real MariaDB, moto provisioned from
template.yaml, and the real handlers driven in-process.

MariaDB is required under CI (CI=true): if it cannot be reached the tests that need it fail loudly.
Elsewhere they are skipped with the reason shown.
"""

from __future__ import annotations

import os

# Before anything can create a boto3 client: no test may ever reach real AWS.
for _name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_DEFAULT_PROFILE"):
    os.environ.pop(_name, None)
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SECURITY_TOKEN": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_NAMESPACE": "PaymentOutbox",
    }
)

import json  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from sqlalchemy import Engine, create_engine, text  # noqa: E402

from payment_outbox.adapters.db.migration import upgrade  # noqa: E402
from payment_outbox_dev.checks.database_server import configured_test_url  # noqa: E402
from tests.support import ROOT, TEST_WEBHOOK_SECRET, LocalSystem  # noqa: E402

# Several runs may share one server: each run works in a database (and users) of its own.
RUN_SUFFIX = f"{os.getpid()}_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def mariadb_url() -> Iterator[str]:
    """A fresh database on the real server, unique to this run, migrated to head once, dropped at the end."""
    configured = configured_test_url()
    url = configured.set(database=f"{configured.database}_{RUN_SUFFIX}")
    server = create_engine(url.set(database=""))
    try:
        with server.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{url.database}`"))
            conn.execute(text(f"CREATE DATABASE `{url.database}` CHARACTER SET utf8mb4"))
    except Exception as exc:
        message = f"MariaDB/MySQL not reachable at {url.render_as_string()}: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI requires it: start the server)")
        pytest.skip(message)
    engine = create_engine(url)
    try:
        upgrade(engine)
        engine.dispose()
        yield url.render_as_string(hide_password=False)
    finally:
        engine.dispose()
        with server.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{url.database}`"))
        server.dispose()


@pytest.fixture
def db(mariadb_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    """The migrated test database, emptied, and configured as the application's DATABASE_URL."""
    engine = create_engine(mariadb_url)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM message_record"))
        conn.execute(text("DELETE FROM orders"))
    monkeypatch.setenv("DATABASE_URL", mariadb_url)
    yield engine
    engine.dispose()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """moto for the whole test; clients are only ever created after this starts."""
    from moto import mock_aws

    with mock_aws():
        yield


@pytest.fixture
def system(db: Engine, aws: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalSystem]:
    """The whole application: template resources in moto, MariaDB, every handler loadable (each in a
    container of its own, ended with the test)."""
    local = LocalSystem.start(db, monkeypatch)
    yield local
    local.functions.close()


@pytest.fixture(params=["sqlite", "mariadb"])
def any_system(
    request: pytest.FixtureRequest, aws: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LocalSystem]:
    """The whole application on the demo's SQLite file or on the MariaDB test database (its audit rows
    emptied too): a test taking it runs once on each."""
    if request.param == "sqlite":
        engine = create_engine(f"sqlite:///{tmp_path / 'demo.db'}")
        upgrade(engine)
    else:
        engine = request.getfixturevalue("db")
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM outbox_audit"))
    local = LocalSystem.start(engine, monkeypatch)
    yield local
    local.functions.close()
    if request.param == "sqlite":
        engine.dispose()


@pytest.fixture
def ordered_system(db: Engine, aws: None, monkeypatch: pytest.MonkeyPatch) -> LocalSystem:
    """The whole application deployed with OrderedDelivery=true: FIFO topic, queues and DLQs."""
    return LocalSystem.start(db, monkeypatch, parameters={"OrderedDelivery": "true"})


@pytest.fixture
def load_event():  # type: ignore[no-untyped-def]
    def load(name: str) -> dict[str, object]:
        loaded: dict[str, object] = json.loads((ROOT / "events" / name).read_text())
        return loaded

    return load


__all__ = ["TEST_WEBHOOK_SECRET", "Path"]
