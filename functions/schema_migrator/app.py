"""SchemaMigrator: runs the database migrations during each deploy (a CloudFormation custom resource),
or when invoked by hand (`aws lambda invoke --function-name <SchemaMigratorFunction> out.json`)."""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from payment_outbox.composition.migration import build_schema_migrator

logger = Logger()
PHYSICAL_ID = "payment-outbox-schema"
#: Built on the first invocation, then kept for the container's life.
schema_migrator = cache(build_schema_migrator)


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, str]:
    if "ResponseURL" not in event:  # invoked by hand
        return {"revision": schema_migrator().migrate(None)}

    def remaining_seconds() -> float:
        return context.get_remaining_time_in_millis() / 1000

    def migrate() -> dict[str, str]:
        # A DDL waiting on a lock gives up before the answer's deadline instead of running on.
        budget = int(remaining_seconds() - schema_migrator().answer_reserve_seconds)
        return {"Revision": schema_migrator().migrate(budget)}

    # Deleting the stack leaves the data alone: the schema outlives the stack on purpose. The answer
    # always goes out, before the function's deadline, whatever the migration does.
    outcome = schema_migrator().answer_cloudformation(
        event,
        work=migrate,
        remaining_seconds=remaining_seconds,
        physical_resource_id=PHYSICAL_ID,
        log_stream_name=context.log_stream_name,
        reserve_seconds=schema_migrator().answer_reserve_seconds,
    )
    return {"revision": outcome.data.get("Revision", "")}
