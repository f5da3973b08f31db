"""The database every SQL-backed function uses, from its settings: one engine per container.

Only the functions that touch the database import this module (through it, SQLAlchemy).
"""

from __future__ import annotations

from payment_outbox import timeouts
from payment_outbox.adapters.aws import AwsClients
from payment_outbox.adapters.db.database import Database
from payment_outbox.adapters.db.engine import CredentialsProvider
from payment_outbox.adapters.secrets import CachedSecret, database_credentials
from payment_outbox.settings import DatabaseSettings
from payment_outbox.timeouts import CallBudget


def connect_database(
    settings: DatabaseSettings, clients: AwsClients, secrets_budget: CallBudget = timeouts.SECRETS
) -> Database:
    """``DATABASE_URL`` when set (local runs, tests); in AWS the host and name, with the credentials
    taken from Secrets Manager for each new connection (re-read once after "access denied")."""
    if settings.database_url is not None:
        return Database.at_url(settings.database_url.get_secret_value(), settings.timeouts())
    secret = CachedSecret(settings.required_secret_arn(), clients.factory("secretsmanager", secrets_budget))
    # The CA bundle an RDS or Aurora endpoint needs (no system store holds the RDS CA).
    ca_bundle = (
        CachedSecret(settings.db_tls_ca_secret_arn, clients.factory("secretsmanager", secrets_budget)).value()
        if settings.db_tls_ca_secret_arn
        else None
    )
    return Database.on_mysql(
        host=settings.db_host,
        port=settings.db_port,
        name=settings.db_name,
        credentials=_credentials_from(secret),
        tls=settings.db_tls,
        ca_bundle=ca_bundle,
        timeouts=settings.timeouts(),
    )


def _credentials_from(secret: CachedSecret) -> CredentialsProvider:
    def current_credentials(refresh: bool) -> tuple[str, str]:
        if refresh:
            secret.invalidate()
        return database_credentials(secret.value())

    return current_credentials
