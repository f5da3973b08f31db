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
        return {"revision": schema_migrator().migrate()}
    revision, success, reason = "", True, "schema is at head"
    try:
        # Deleting the stack leaves the data alone: the schema outlives the stack on purpose.
        if event["RequestType"] in ("Create", "Update"):
            revision = schema_migrator().migrate()
    except Exception:
        logger.exception("schema migration failed")
        success, reason = False, "schema migration failed; see the function's log"
    schema_migrator().answer_cloudformation(
        event,
        success=success,
        reason=reason,
        physical_resource_id=PHYSICAL_ID,
        data={"Revision": revision},
        log_stream_name=context.log_stream_name,
    )
    return {"revision": revision}
