"""The functions connect as the application's own user, which the migrator keeps with row access only."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError, ProgrammingError

from payment_outbox.adapters.db.users import MySqlApplicationUser
from payment_outbox.errors import ConfigurationError

pytestmark = pytest.mark.integration

# Unique to the run: two runs on one server must never share (or drop) each other's user.
USER = f"po_app_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def application_user(db: Engine) -> Iterator[str]:
    yield USER
    with db.begin() as conn:
        conn.execute(text(f"DROP USER IF EXISTS '{USER}'@'%'"))


def _as(db: Engine, user: str, password: str) -> Engine:
    return create_engine(db.url.set(username=user, password=password))


def test_the_migrator_creates_the_application_user_with_row_access_only(
    db: Engine, application_user: str
) -> None:
    # Given the master connection, when the migrator ensures the application user
    MySqlApplicationUser(db).ensure(application_user, "first 'quoted' password")
    app = _as(db, application_user, "first 'quoted' password")
    try:
        # Then the user reads and writes rows
        with app.begin() as conn:
            conn.execute(text("SELECT COUNT(*) FROM message_record")).scalar_one()
            conn.execute(text("DELETE FROM message_record WHERE id = -1"))
        # But cannot change the schema
        with pytest.raises((OperationalError, ProgrammingError)), app.begin() as conn:
            conn.execute(text("CREATE TABLE app_user_must_not_create (id INT)"))
    finally:
        app.dispose()


def test_running_it_again_takes_the_secrets_new_password(db: Engine, application_user: str) -> None:
    users = MySqlApplicationUser(db)
    users.ensure(application_user, "before")
    # When the secret's password changed and the migrator runs again (every deploy)
    users.ensure(application_user, "after")
    # Then the new password works and the old one no longer does
    app = _as(db, application_user, "after")
    with app.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar_one() == 1
    app.dispose()
    old = _as(db, application_user, "before")
    with pytest.raises(OperationalError), old.connect():
        pass
    old.dispose()


def test_a_name_that_is_not_a_plain_identifier_is_refused(db: Engine) -> None:
    with pytest.raises(ConfigurationError):
        MySqlApplicationUser(db).ensure("app'@'%'; DROP DATABASE x; --", "pw")
    with pytest.raises(ConfigurationError):
        MySqlApplicationUser(db).ensure("app", "")


def test_each_deploy_the_migrator_keeps_the_application_user_of_its_secret(
    db: Engine, aws: None, application_user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util
    import json
    from pathlib import Path

    import boto3

    # Given the application user's secret, as the stack generates it, and the migrator on the master user
    arn = boto3.client("secretsmanager").create_secret(
        Name="payment-outbox/app-user",
        SecretString=json.dumps({"username": application_user, "password": "generated-password"}),
    )["ARN"]
    monkeypatch.setenv("DB_APP_USER_SECRET_ARN", arn)
    path = Path(__file__).resolve().parents[2] / "functions" / "schema_migrator" / "app.py"
    spec = importlib.util.spec_from_file_location("schema_migrator_app_user_test", path)
    assert spec is not None and spec.loader is not None
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)

    class Context:
        function_name = "SchemaMigratorFunction"
        memory_limit_in_mb = 256
        invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:SchemaMigratorFunction"
        aws_request_id = "invocation-1"
        log_stream_name = "stream"

        def get_remaining_time_in_millis(self) -> int:
            return 300_000

    # When the migrator runs (here invoked by hand, as docs/deploy.md shows)
    result = app.lambda_handler({}, Context())
    # Then the schema is at head and the application user connects with the secret's password
    assert result["revision"] != "none"
    app_engine = _as(db, application_user, "generated-password")
    with app_engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM orders")).scalar_one() >= 0
    app_engine.dispose()
