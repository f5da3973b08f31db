"""AdminApi (IAM-authorised): see outbox messages, requeue what gave up, read the counts, trace an
order to its consumer effects, and list stuck idempotency records."""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from payment_outbox.api.admin import (
    BulkRequeueBody,
    RequeueMessageBody,
    page_view,
    parse_query,
    requeue_view,
    stats_view,
    stuck_view,
    trace_view,
)
from payment_outbox.api.payments import error_response, json_response, parse_body, status_for
from payment_outbox.composition.operations import build_outbox_operations
from payment_outbox.errors import OrderNotFound, PaymentOutboxError

logger = Logger()
tracer = Tracer()
metrics = Metrics()
app = APIGatewayRestResolver()
#: Built on the first request, then kept for the container's life.
outbox_operations = cache(build_outbox_operations)


@app.get("/admin/messages")
@tracer.capture_method
def list_messages() -> Response[dict[str, Any]]:
    query = parse_query(app.current_event.query_string_parameters)
    page = outbox_operations().list_messages(query.to_filter(), after_id=query.after_id(), limit=query.limit)
    return json_response(200, page_view(page, query.limit))


@app.post("/admin/messages/requeue")
@tracer.capture_method
def requeue_messages() -> Response[dict[str, Any]]:
    body = parse_body(BulkRequeueBody, app.current_event.decoded_body)
    result = outbox_operations().requeue(body.to_request(_actor()))
    return json_response(200, requeue_view(result))


@app.post("/admin/messages/<message_id>/requeue")
@tracer.capture_method
def requeue_message(message_id: str) -> Response[dict[str, Any]]:
    body = parse_body(RequeueMessageBody, app.current_event.decoded_body)
    result = outbox_operations().requeue_message(
        message_id, reason=body.reason, actor=_actor(), dry_run=body.dry_run, include_sent=body.include_sent
    )
    return json_response(200, requeue_view(result))


@app.get("/admin/stats")
@tracer.capture_method
def stats() -> Response[dict[str, Any]]:
    return json_response(200, stats_view(outbox_operations().stats()))


@app.get("/admin/orders/<order_id>/trace")
@tracer.capture_method
def trace_order(order_id: str) -> Response[dict[str, Any]]:
    if not order_id.isdigit():
        raise OrderNotFound("order not found")
    return json_response(200, trace_view(outbox_operations().trace(int(order_id))))


@app.get("/admin/idempotency/stuck")
@tracer.capture_method
def stuck_idempotency_records() -> Response[dict[str, Any]]:
    return json_response(200, stuck_view(outbox_operations().stuck_idempotency_records()))


@app.exception_handler(PaymentOutboxError)  # type: ignore[untyped-decorator]
def handle_application_error(error: PaymentOutboxError) -> Response[dict[str, Any]]:
    status = status_for(error)
    logger.info("admin request refused", extra={"status": status, "code": error.code})
    return error_response(error)


def _actor() -> str:
    """The IAM caller API Gateway authorised; "local" when there is none (local runs)."""
    return app.current_event.request_context.identity.user_arn or "local"


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
