"""OutboxRelay: every minute, publish due outbox rows to SNS while rows are due and time is left;
keep polling within the minute while rows fall due; start more relays under a backlog. A relay
started that way (its event carries ``relayFanOut``) drains until its starter's deadline, no more."""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from payment_outbox.composition.relay import build_scheduled_relay

logger = Logger()
tracer = Tracer()
metrics = Metrics()
#: Built on the first invocation, then kept for the container's life.
scheduled_relay = cache(build_scheduled_relay)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    report = scheduled_relay().run(event, context.get_remaining_time_in_millis, context.function_name)
    metrics.add_metric(name="RelaysStarted", unit=MetricUnit.Count, value=report.relays_started)
    metrics.add_metric(name="MessagesPublished", unit=MetricUnit.Count, value=report.published)
    metrics.add_metric(name="MessagesRetried", unit=MetricUnit.Count, value=report.retried)
    # Of those, the ones SNS refused as a whole request (an outage): retried with no attempt charged.
    metrics.add_metric(name="MessagesHeldByOutage", unit=MetricUnit.Count, value=report.held_by_outage)
    # The alarm watches this: each message here has used up its attempts and needs an operator.
    metrics.add_metric(name="MessagesFailed", unit=MetricUnit.Count, value=len(report.gave_up))
    metrics.add_metric(
        name="OldestDueMessageAgeSeconds", unit=MetricUnit.Seconds, value=report.oldest_due_age_seconds
    )
    for message_id in report.gave_up:
        logger.error("outbox message FAILED after its last attempt", extra={"messageId": message_id})
    logger.info(
        "relay run finished",
        extra={
            "claimed": report.claimed,
            "published": report.published,
            "retried": report.retried,
            "heldByOutage": report.held_by_outage,
            "failed": len(report.gave_up),
            "relaysStarted": report.relays_started,
        },
    )
    return {
        "claimed": report.claimed,
        "published": report.published,
        "retried": report.retried,
        "failed": report.gave_up,
    }
