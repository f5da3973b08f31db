"""AdminApi (IAM-authorised): see outbox messages, requeue what gave up, read the counts, trace an
order to its consumer effects, and list stuck idempotency records."""

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from payment_outbox.api.admin import (
    BulkRequeueBody,
    MessagePageView,
    RequeueMessageBody,
    RequeueView,
    StatsView,
    StuckView,
    TraceView,
    message_id_from_path,
    page_view,
    parse_query,
    query_parameters,
    requeue_view,
    stats_view,
    stuck_view,
    trace_view,
)
from payment_outbox.api.admin_dlq import dlq_router
from payment_outbox.api.admin_sms import sms_router
from payment_outbox.api.admin_triage import triage_router
from payment_outbox.api.http import (
    actor,
    handle_errors,
    json_response,
    order_id_from_path,
    parse_body,
    request_body,
    responses,
)
from payment_outbox.composition.operations import (
    build_dead_letter_redrive,
    build_failure_triage,
    build_outbox_operations,
    build_sms_operations,
)

logger = Logger()
tracer = Tracer()
metrics = Metrics()
app = APIGatewayRestResolver()
handle_errors(app, logger, refused="admin request refused")
#: Built on the first request, then kept for the container's life.
outbox_operations = cache(build_outbox_operations)
# Failure triage: groups by error fingerprint, requeue or resolve a group (routes of their own module).
app.include_router(triage_router(cache(build_failure_triage)))
# DLQ depth and redrive (routes of their own module).
app.include_router(dlq_router(cache(build_dead_letter_redrive)))
# SMS parked as uncertain: resend, or mark delivered (routes of their own module).
app.include_router(sms_router(cache(build_sms_operations)))


@app.get(
    "/admin/messages",
    summary="List outbox messages by filter, a page at a time",
    tags=["admin"],
    openapi_extensions={"parameters": query_parameters()},
    responses=responses(200, MessagePageView, "one page of messages (never their content)", 422),
)
@tracer.capture_method
def list_messages() -> Response[dict[str, Any]]:
    query = parse_query(app.current_event.query_string_parameters)
    page = outbox_operations().list_messages(query.to_filter(), after_id=query.after_id(), limit=query.limit)
    return json_response(200, page_view(page, query.limit))


@app.post(
    "/admin/messages/requeue",
    summary="Requeue FAILED (or, with includeSent, SENT) messages in bulk; dry run first",
    tags=["admin"],
    openapi_extensions=request_body(BulkRequeueBody, "the filter, dryRun (required) and the reason"),
    responses=responses(200, RequeueView, "what was (or would be) requeued", 400, 409, 413, 422),
)
@tracer.capture_method
def requeue_messages() -> Response[dict[str, Any]]:
    body = parse_body(BulkRequeueBody, app.current_event.decoded_body)
    result = outbox_operations().requeue(body.to_request(actor(app.current_event)))
    return json_response(200, requeue_view(result))


@app.post(
    "/admin/messages/<message_id>/requeue",
    summary="Requeue one message",
    tags=["admin"],
    openapi_extensions=request_body(RequeueMessageBody, "reason; optional dryRun/includeSent/resetAttempts"),
    responses=responses(200, RequeueView, "what was (or would be) requeued", 400, 404, 409, 413, 422),
)
@tracer.capture_method
def requeue_message(message_id: str) -> Response[dict[str, Any]]:
    known_id = message_id_from_path(message_id)
    body = parse_body(RequeueMessageBody, app.current_event.decoded_body)
    result = outbox_operations().requeue_message(
        known_id,
        reason=body.reason,
        actor=actor(app.current_event),
        dry_run=body.dry_run,
        include_sent=body.include_sent,
        reset_attempts=body.reset_attempts,
    )
    return json_response(200, requeue_view(result))


@app.get(
    "/admin/stats",
    summary="Outbox counts and the due backlog",
    tags=["admin"],
    responses=responses(200, StatsView, "counts by status, due backlog and its age"),
)
@tracer.capture_method
def stats() -> Response[dict[str, Any]]:
    return json_response(200, stats_view(outbox_operations().stats()))


@app.get(
    "/admin/orders/<order_id>/trace",
    summary="Trace an order to its outbox rows and consumer effects",
    tags=["admin"],
    responses=responses(200, TraceView, "the order, its messages, its points and SMS", 404),
)
@tracer.capture_method
def trace_order(order_id: str) -> Response[dict[str, Any]]:
    return json_response(200, trace_view(outbox_operations().trace(order_id_from_path(order_id))))


@app.get(
    "/admin/idempotency/stuck",
    summary="Idempotency records stuck INPROGRESS",
    tags=["admin"],
    responses=responses(200, StuckView, "records whose lock ran out"),
)
@tracer.capture_method
def stuck_idempotency_records() -> Response[dict[str, Any]]:
    return json_response(200, stuck_view(outbox_operations().stuck_idempotency_records()))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
