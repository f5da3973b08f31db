"""SchemaMigrator: the migrations, run on each deploy (a CloudFormation custom resource) or by hand.

CloudFormation waits for an answer; it always gets one, with a reason, before the function's
deadline. Building the migrator (reading the master user's, the application user's and the CA
bundle's secrets, each within ``timeouts.SECRETS``) is part of the answered work: a missing secret,
an AccessDenied or an unreachable Secrets Manager is answered FAILED with its reason, at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from payment_outbox import timeouts
from payment_outbox.adapters import cfn_response
from payment_outbox.adapters.aws import AwsClients
from payment_outbox.adapters.db.migration import AlembicSchemaMigrations, known_revisions
from payment_outbox.adapters.db.users import MySqlApplicationUser
from payment_outbox.adapters.secrets import CachedSecret, database_credentials
from payment_outbox.composition.database import connect_database
from payment_outbox.services.migration import is_rollback, migrate_schema
from payment_outbox.settings import DatabaseSettings, MigrationSettings

#: Seconds kept back from the function's deadline to deliver the answer.
ANSWER_RESERVE_SECONDS = cfn_response.ANSWER_RESERVE_SECONDS


@dataclass(frozen=True)
class SchemaMigrator:
    #: Brings the database to the newest schema and returns its revision; a DDL waits at most the
    #: given seconds for a lock (None: the server's default).
    migrate: Callable[[int | None], str]


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

    return SchemaMigrator(migrate=migrate)


def answer_schema_request(
    event: dict[str, Any],
    *,
    migrator: Callable[[], SchemaMigrator],
    remaining_seconds: Callable[[], float],
    physical_resource_id: str,
    log_stream_name: str = "",
    reserve_seconds: float = ANSWER_RESERVE_SECONDS,
) -> cfn_response.Outcome:
    """Answer CloudFormation's request for the schema: Delete leaves the data; a rollback (an Update to
    an older SchemaRevision) leaves the newer schema and touches nothing; otherwise the migrator is
    built and run within the time left before the answer's reserve."""
    new = _revision(event.get("ResourceProperties"))
    old = _revision(event.get("OldResourceProperties"))

    def work() -> cfn_response.Done:
        if event.get("RequestType") == "Update" and is_rollback(old, new, known_revisions()):
            return cfn_response.Done(
                f"rollback from schema revision {old} to {new}: the database keeps {old}, which the "
                "older code runs on (migrations only expand); nothing was changed",
                {"Revision": str(old)},
            )
        built = migrator()
        # A DDL waiting on a lock gives up before the answer's deadline instead of running on.
        revision = built.migrate(max(int(remaining_seconds() - reserve_seconds), 1))
        return cfn_response.Done(f"schema at revision {revision}", {"Revision": revision})

    return cfn_response.answer(
        event,
        work=work,
        remaining_seconds=remaining_seconds,
        physical_resource_id=physical_resource_id,
        log_stream_name=log_stream_name,
        reserve_seconds=reserve_seconds,
    )


def _revision(properties: object) -> str | None:
    if not isinstance(properties, dict):
        return None
    value = properties.get("SchemaRevision")
    return str(value) if value is not None else None
