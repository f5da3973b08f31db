"""SchemaMigrator: runs the database migrations during each deploy (a CloudFormation custom resource),
or when invoked by hand (`aws lambda invoke --function-name <SchemaMigratorFunction> out.json`)."""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from payment_outbox.composition.migration import (
    ANSWER_RESERVE_SECONDS,
    answer_schema_request,
    build_schema_migrator,
)

logger = Logger()
PHYSICAL_ID = "payment-outbox-schema"
#: Built on first use, then kept for the container's life (for a custom resource request: inside the
#: answered work, so a failure to build it is answered too).
schema_migrator = cache(build_schema_migrator)


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, str]:
    if "ResponseURL" not in event:  # invoked by hand
        return {"revision": schema_migrator().migrate(None)}

    def remaining_seconds() -> float:
        return context.get_remaining_time_in_millis() / 1000

    # Deleting the stack leaves the data alone: the schema outlives the stack on purpose. The answer
    # always goes out, with a reason, before the function's deadline, whatever the migration does.
    outcome = answer_schema_request(
        event,
        migrator=lambda: schema_migrator(),
        remaining_seconds=remaining_seconds,
        physical_resource_id=PHYSICAL_ID,
        log_stream_name=context.log_stream_name,
        reserve_seconds=ANSWER_RESERVE_SECONDS,
    )
    return {"revision": outcome.data.get("Revision", "")}
