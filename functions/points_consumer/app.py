"""PointsConsumer: credit the user's points for each paid-order message, once."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.typing import LambdaContext

from payment_outbox.bootstrap.consumers import points_consumer

logger = Logger()
tracer = Tracer()
metrics = Metrics()
processor = BatchProcessor(event_type=EventType.SQS)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    consumer = points_consumer()
    consumer.register(context)
    # Failed records are reported back, so only they return to the queue (and, in the end, its DLQ).
    return process_partial_response(
        event=event, record_handler=consumer, processor=processor, context=context
    )
