"""OutboxJanitor: every hour, delete SENT outbox rows past their retention in bounded batches,
archiving each batch to S3 first when an archive bucket is configured."""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from payment_outbox.composition.operations import build_outbox_janitor

logger = Logger()
tracer = Tracer()
metrics = Metrics()
#: Built on the first invocation, then kept for the container's life.
outbox_janitor = cache(build_outbox_janitor)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    report = outbox_janitor().purge_sent_messages(context.get_remaining_time_in_millis)
    metrics.add_metric(name="MessagesPurged", unit=MetricUnit.Count, value=report.purged)
    metrics.add_metric(name="MessagesArchived", unit=MetricUnit.Count, value=report.archived)
    return {
        "purged": report.purged,
        "archived": report.archived,
        "batches": report.batches,
        "archiveObjects": report.archive_objects,
        "outOfTime": report.out_of_time,
    }
