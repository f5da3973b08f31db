"""Reconciler: every 15 minutes, report what slipped through — PAID orders without outbox rows,
messages that gave up, sent messages without their consumer effect, stuck idempotency records."""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from payment_outbox.composition.operations import build_reconciler

logger = Logger()
tracer = Tracer()
metrics = Metrics()
#: Built on the first invocation, then kept for the container's life.
reconciler = cache(build_reconciler)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    report = reconciler().reconcile(context.get_remaining_time_in_millis)
    # Each of these has an alarm (template.yaml) and a runbook entry (docs/operations.md).
    counts = {
        "OrdersMissingOutbox": len(report.orders_missing_outbox),
        "MessagesStuckFailed": report.failed_total,
        "MessagesWithoutEffect": len(report.without_effect),
        "StuckIdempotencyRecords": len(report.stuck_idempotency),
        # 1 when the run ran out of time before the end of its window of sent rows.
        "SentWindowIncomplete": 0 if report.sent_complete else 1,
    }
    for name, value in counts.items():
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    summary = {
        "ordersMissingOutbox": report.orders_missing_outbox,
        "messagesStuckFailed": report.failed_total,
        "failedSample": report.failed_sample,
        "sentChecked": report.sent_checked,
        "sentComplete": report.sent_complete,
        "messagesWithoutEffect": report.without_effect,
        "stuckIdempotencyRecords": [r.key for r in report.stuck_idempotency],
    }
    # One line when something new was found (each finding was logged above); quiet otherwise, however
    # long known anomalies last: their counts are in the metrics every run.
    if report.new_findings:
        logger.info("reconciliation found something new", extra={**summary, "new": len(report.new_findings)})
    else:
        logger.debug("reconciliation finished, nothing new", extra=summary)
    return summary
