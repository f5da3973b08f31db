"""SchemaMigrator: the migrations, run on each deploy (a CloudFormation custom resource) or by hand."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from payment_outbox import timeouts
from payment_outbox.adapters import cfn_response
from payment_outbox.adapters.aws import AwsClients
from payment_outbox.adapters.db.migration import AlembicSchemaMigrations
from payment_outbox.adapters.db.users import MySqlApplicationUser
from payment_outbox.adapters.secrets import CachedSecret, database_credentials
from payment_outbox.composition.database import connect_database
from payment_outbox.services.migration import migrate_schema
from payment_outbox.settings import DatabaseSettings, MigrationSettings


@dataclass(frozen=True)
class SchemaMigrator:
    #: Brings the database to the newest schema and returns its revision; a DDL waits at most the
    #: given seconds for a lock (None: the server's default).
    migrate: Callable[[int | None], str]
    #: Runs work for a custom resource request and answers CloudFormation in time (``cfn_response.answer``).
    answer_cloudformation: Callable[..., cfn_response.Outcome]
    #: Seconds kept back from the function's deadline to deliver the answer.
    answer_reserve_seconds: float


def build_schema_migrator() -> SchemaMigrator:
    clients = AwsClients()
    database = connect_database(DatabaseSettings(), clients)
    # The user the other functions connect as (only when the stack made the database): kept in step
    # with its secret on every run, with row access only.
    app_user_secret = MigrationSettings().db_app_user_secret_arn
    application_user = (
        (
            MySqlApplicationUser(database.engine),
            database_credentials(
                CachedSecret(app_user_secret, clients.factory("secretsmanager", timeouts.SECRETS)).value()
            ),
        )
        if app_user_secret
        else None
    )

    def migrate(lock_wait_seconds: int | None = None) -> str:
        schema = AlembicSchemaMigrations(database.engine, lock_wait_seconds=lock_wait_seconds)
        return migrate_schema(schema, application_user)

    return SchemaMigrator(
        migrate=migrate,
        answer_cloudformation=cfn_response.answer,
        answer_reserve_seconds=cfn_response.ANSWER_RESERVE_SECONDS,
    )
