"""SchemaMigrator: the migrations, run on each deploy (a CloudFormation custom resource) or by hand."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from payment_outbox.adapters import cfn_response
from payment_outbox.adapters.aws import AwsClients
from payment_outbox.adapters.db.migration import AlembicSchemaMigrations
from payment_outbox.composition.database import connect_database
from payment_outbox.services.migration import migrate_schema
from payment_outbox.settings import DatabaseSettings


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
    database = connect_database(DatabaseSettings(), AwsClients())

    def migrate(lock_wait_seconds: int | None = None) -> str:
        return migrate_schema(AlembicSchemaMigrations(database.engine, lock_wait_seconds=lock_wait_seconds))

    return SchemaMigrator(
        migrate=migrate,
        answer_cloudformation=cfn_response.answer,
        answer_reserve_seconds=cfn_response.ANSWER_RESERVE_SECONDS,
    )
