"""SmsConsumer: send the payment SMS for each paid-order message, once, and record the delivery."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.typing import LambdaContext

from payment_outbox.composition.consumers import SqsConsumer, build_sms_consumer

logger = Logger()
tracer = Tracer()
metrics = Metrics()
consume = SqsConsumer("sms", build_sms_consumer, logger=logger, tracer=tracer)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return consume(event, context)
