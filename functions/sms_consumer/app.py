"""SmsConsumer: send the payment SMS for each paid-order message, once, and record the delivery."""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    SqsFifoPartialProcessor,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.typing import LambdaContext

from payment_outbox.adapters.sqs_batch import TracedRecords, from_fifo_queue
from payment_outbox.composition.consumers import build_sms_consumer

logger = Logger()
tracer = Tracer()
metrics = Metrics()
#: Built on the first invocation, then kept for the container's life.
sms_consumer = cache(build_sms_consumer)
processor = BatchProcessor(event_type=EventType.SQS)
# Ordered delivery (a FIFO queue): a failed record fails the rest of its message group (its stream) in
# the batch, so nothing overtakes it; the other groups go on.
fifo_processor = SqsFifoPartialProcessor(skip_group_on_error=True)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    consumer = sms_consumer()
    consumer.register(context)
    # Failed records are reported back, so only they return to the queue (and, in the end, its DLQ).
    # Each record is handled inside the trace it carries: the payment request's correlation id.
    return process_partial_response(
        event=event,
        record_handler=TracedRecords(consumer, logger=logger, tracer=tracer, name="sms"),
        processor=fifo_processor if from_fifo_queue(event) else processor,
        context=context,
    )
