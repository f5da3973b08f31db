"""PaymentApi: create and read orders, and accept the payment provider's success callback."""

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from payment_outbox.api.http import (
    handle_errors,
    json_response,
    order_id_from_path,
    parse_body,
    request_body,
    responses,
)
from payment_outbox.api.payments import (
    CreateOrderRequest,
    OrderView,
    PaymentNotifyRequest,
    order_view,
    trace_of,
)
from payment_outbox.composition.payment_api import build_payment_api

logger = Logger()
tracer = Tracer()
metrics = Metrics()
app = APIGatewayRestResolver()
handle_errors(app, logger, refused="request refused")
#: Built on the first request, then kept for the container's life.
payment_api = cache(build_payment_api)
NOTIFY_ERRORS = (400, 401, 404, 409, 413, 422)


@app.post(
    "/orders",
    summary="Create an order",
    tags=["orders"],
    openapi_extensions=request_body(CreateOrderRequest, "the order; amount as a decimal string"),
    responses=responses(201, OrderView, "the order, CREATED", 400, 403, 413, 422),
)
@tracer.capture_method
def create_order() -> Response[dict[str, Any]]:
    caller = payment_api().callers(app.current_event.raw_event.get("requestContext"))
    request = parse_body(CreateOrderRequest, app.current_event.decoded_body)
    order = payment_api().payments.create_order(request.to_new_order(), caller)
    return json_response(201, order_view(order))


@app.get(
    "/orders/<order_id>",
    summary="Read an order",
    tags=["orders"],
    responses=responses(200, OrderView, "the order with its status, payTime and amount", 404),
)
@tracer.capture_method
def get_order(order_id: str) -> Response[dict[str, Any]]:
    caller = payment_api().callers(app.current_event.raw_event.get("requestContext"))
    order = payment_api().payments.get_order(order_id_from_path(order_id), caller)
    return json_response(200, order_view(order))


@app.post(
    "/payments/notify",
    summary="The payment provider's success callback (signed)",
    tags=["payments"],
    openapi_extensions={
        **request_body(PaymentNotifyRequest, "signed as sent: the HMAC covers these exact bytes"),
        "parameters": [
            {
                "name": "X-Signature",
                "in": "header",
                "required": True,
                "description": 't=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>, '
                "at most 300 s old",
                "schema": {"type": "string"},
            },
            {
                "name": "traceparent",
                "in": "header",
                "required": False,
                "description": "W3C Trace Context: continued to the consumers' effects (a malformed one "
                "is ignored and a new trace starts)",
                "schema": {"type": "string"},
            },
        ],
    },
    responses=responses(200, OrderView, "the order, PAID (the same answer for a replay)", *NOTIFY_ERRORS),
)
@tracer.capture_method
def payment_notify() -> Response[dict[str, Any]]:
    raw_body = app.current_event.decoded_body or ""
    payment_api().signatures.verify(app.current_event.headers.get("X-Signature"), raw_body.encode())
    request = parse_body(PaymentNotifyRequest, raw_body)
    trace = trace_of(app.current_event.headers, logger.get_correlation_id())
    order = payment_api().payments.pay_order(request.to_notice(), trace=trace)
    logger.info("payment accepted", extra={"order_no": order.order_no, "trace_id": trace.trace_id})
    return json_response(200, order_view(order))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
