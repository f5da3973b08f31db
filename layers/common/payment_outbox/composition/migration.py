"""SchemaMigrator: the migrations, run on each deploy (a CloudFormation custom resource) or by hand."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from payment_outbox.adapters import cfn_response
from payment_outbox.adapters.aws import AwsClients
from payment_outbox.adapters.db.migration import AlembicSchemaMigrations
from payment_outbox.composition.database import connect_database
from payment_outbox.services.migration import migrate_schema
from payment_outbox.settings import DatabaseSettings


@dataclass(frozen=True)
class SchemaMigrator:
    #: Brings the database to the newest schema and returns its revision.
    migrate: Callable[[], str]
    #: Answers CloudFormation's custom resource request (``cfn_response.send``).
    answer_cloudformation: Callable[..., None]


def build_schema_migrator() -> SchemaMigrator:
    database = connect_database(DatabaseSettings(), AwsClients())
    return SchemaMigrator(
        migrate=partial(migrate_schema, AlembicSchemaMigrations(database.engine)),
        answer_cloudformation=cfn_response.send,
    )
