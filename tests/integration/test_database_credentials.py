"""The AWS path to the database: credentials from Secrets Manager, and a rotated password picked up."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import boto3
import pytest
from sqlalchemy import Engine, text

from payment_outbox.adapters.aws import AwsClients
from payment_outbox.composition.database import connect_database
from payment_outbox.settings import DatabaseSettings

pytestmark = pytest.mark.integration

# Unique to the run: two runs on one server must never share (or drop) each other's user.
USER = f"po_rot_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def rotating_user(db: Engine) -> Iterator[str]:
    with db.begin() as conn:
        conn.execute(text(f"DROP USER IF EXISTS '{USER}'@'%'"))
        conn.execute(text(f"CREATE USER '{USER}'@'%' IDENTIFIED BY 'first-password'"))
        conn.execute(text(f"GRANT SELECT ON `{db.url.database}`.* TO '{USER}'@'%'"))
    yield str(db.url.database)
    with db.begin() as conn:
        conn.execute(text(f"DROP USER IF EXISTS '{USER}'@'%'"))


def test_engine_takes_credentials_from_the_secret_and_follows_a_rotation(
    rotating_user: str, db: Engine, aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the database password only in a Secrets Manager secret (no DATABASE_URL, no password in env)
    secrets = boto3.client("secretsmanager")
    arn = secrets.create_secret(
        Name="payment-outbox/db", SecretString=json.dumps({"username": USER, "password": "first-password"})
    )["ARN"]
    monkeypatch.delenv("DATABASE_URL")
    monkeypatch.setenv("DB_HOST", str(db.url.host))
    monkeypatch.setenv("DB_PORT", str(db.url.port or 3306))
    monkeypatch.setenv("DB_NAME", rotating_user)
    monkeypatch.setenv("DB_SECRET_ARN", arn)
    engine = connect_database(DatabaseSettings(), AwsClients()).engine
    assert engine.url.password is None
    with engine.connect() as conn:
        assert conn.execute(text("SELECT CURRENT_USER()")).scalar_one().startswith(USER)

    # When the password is rotated in the database and in the secret, and the pooled connection is gone
    with db.begin() as conn:
        conn.execute(text(f"ALTER USER '{USER}'@'%' IDENTIFIED BY 'second-password'"))
    secrets.put_secret_value(
        SecretId=arn, SecretString=json.dumps({"username": USER, "password": "second-password"})
    )
    engine.dispose()

    # Then the next connection is refused with the cached password, refreshes the secret, and succeeds
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar_one() == 1
