"""The payment API's HTTP contract: request and response models, body parsing, and the one table
that maps application errors to status codes."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeVar

from aws_lambda_powertools.event_handler import Response, content_types
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
)

from payment_outbox.domain import grammar
from payment_outbox.domain.callers import Caller
from payment_outbox.domain.orders import Order, PaymentNotice
from payment_outbox.domain.tracing import TraceContext, request_trace
from payment_outbox.errors import (
    DeadLetterQueueNotFound,
    FailureGroupNotFound,
    ForbiddenForCaller,
    InvalidRequest,
    MalformedRequest,
    MessageNotFound,
    NotRequeueable,
    OrderNotFound,
    PaymentConflict,
    PaymentOutboxError,
    RequestTooLarge,
    SignatureRejected,
    Unauthenticated,
)
from payment_outbox.services.payments import NewOrder

#: Callbacks and order requests are a few hundred bytes; refuse anything absurd before parsing it.
MAX_BODY_BYTES = 16 * 1024

STATUS_BY_ERROR: dict[type[PaymentOutboxError], int] = {
    MalformedRequest: 400,
    SignatureRejected: 401,
    Unauthenticated: 401,
    ForbiddenForCaller: 403,
    OrderNotFound: 404,
    MessageNotFound: 404,
    FailureGroupNotFound: 404,
    DeadLetterQueueNotFound: 404,
    PaymentConflict: 409,
    NotRequeueable: 409,
    RequestTooLarge: 413,
    InvalidRequest: 422,
}


def status_for(error: PaymentOutboxError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 500


class _Request(BaseModel):
    # No whitespace stripping: every field follows its grammar exactly (payment_outbox.domain.grammar).
    model_config = ConfigDict(populate_by_name=True, extra="forbid")


#: Decimal strings following ``AMOUNT_PATTERN``, > 0 (never JSON numbers: a float cannot hold 0.10).
Amount = Annotated[
    Decimal,
    BeforeValidator(grammar.parse_amount),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": grammar.AMOUNT_PATTERN,
            "description": "decimal string > 0, at most 2 decimals, at most 9999999999.99",
            "examples": ["128.50"],
        }
    ),
]

#: RFC 3339 date-times with an offset, as strings (no unix numbers, no date-only values).
Timestamp = Annotated[
    datetime,
    BeforeValidator(grammar.parse_timestamp),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "pattern": grammar.TIMESTAMP_PATTERN,
            "examples": ["2026-11-27T10:15:00Z"],
        }
    ),
]


class CreateOrderRequest(_Request):
    user_id: Annotated[
        int,
        Field(strict=True, ge=1, le=grammar.MAX_ID),
        WithJsonSchema({"type": "integer", "minimum": 1, "maximum": grammar.MAX_ID}),
    ] = Field(alias="userId")
    phone: Annotated[str, StringConstraints(pattern=grammar.PHONE_PATTERN)] = Field(
        examples=["+8613812345678"]
    )
    amount: Amount
    currency: Annotated[str, StringConstraints(pattern=grammar.CURRENCY_PATTERN)] = "CNY"

    def to_new_order(self) -> NewOrder:
        return NewOrder(self.user_id, self.phone, self.amount, self.currency)


class PaymentNotifyRequest(_Request):
    #: 1 to 32 characters (422 otherwise); one outside ``ORDER_NO_PATTERN`` names no order of ours (404).
    order_no: Annotated[str, StringConstraints(min_length=1, max_length=32)] = Field(alias="orderNo")
    transaction_id: Annotated[str, StringConstraints(pattern=grammar.TRANSACTION_ID_PATTERN)] = Field(
        alias="transactionId"
    )
    amount: Amount
    paid_at: Timestamp = Field(alias="paidAt")
    #: Required: one the deployment accepts (422 otherwise) and the order's own (409 otherwise).
    currency: Annotated[str, StringConstraints(pattern=grammar.CURRENCY_PATTERN)] = Field(examples=["CNY"])

    def to_notice(self) -> PaymentNotice:
        return PaymentNotice(self.order_no, self.transaction_id, self.amount, self.paid_at, self.currency)


@dataclass(frozen=True)
class CallerIdentification:
    """Who calls an order route, from the request context API Gateway's authorizer filled in.

    ``iam``: a trusted service (SigV4), which may act for any user. ``cognito``: the user whose id the
    token's ``user_claim`` holds (``requestContext.authorizer.claims``); no claim is 401, a claim that
    is no user id (1 .. 2**63-1 in ASCII digits) is 403.
    """

    mode: Literal["iam", "cognito"] = "iam"
    user_claim: str = "sub"

    def __call__(self, request_context: Mapping[str, Any] | None) -> Caller:
        if self.mode == "iam":
            return Caller.trusted_service()
        authorizer = (request_context or {}).get("authorizer") or {}
        claims = authorizer.get("claims") if isinstance(authorizer, Mapping) else None
        subject = claims.get(self.user_claim) if isinstance(claims, Mapping) else None
        if not isinstance(subject, str) or not subject:
            raise Unauthenticated("no authenticated user")
        user_id = grammar.parse_id(subject)
        if user_id is None:
            raise ForbiddenForCaller(f"the token's {self.user_claim} claim is not a user id")
        return Caller.user(user_id)


def order_id_from_path(text: str) -> int:
    """The order id a path segment names; ``OrderNotFound`` (404) when no stored order can have it
    (not 1..2**63-1 in ASCII digits: "0", "01", full-width digits, 2**63 and beyond)."""
    order_id = grammar.parse_id(text)
    if order_id is None:
        raise OrderNotFound("order not found")
    return order_id


M = TypeVar("M", bound=BaseModel)


def trace_of(headers: Mapping[str, str] | None, correlation_id: str | None) -> TraceContext:
    """The request's trace context: its ``traceparent`` header continued (or a new trace, on the
    X-Ray trace id API Gateway passes in ``X-Amzn-Trace-Id`` when tracing is active) and its
    correlation id. Header names are case-insensitive; a malformed header is ignored, never refused."""
    lowered = {name.lower(): value for name, value in (headers or {}).items()}
    return request_trace(
        traceparent=lowered.get("traceparent"),
        correlation_id=correlation_id,
        xray_trace_header=lowered.get("x-amzn-trace-id"),
    )


def parse_body(model: type[M], raw: str | None) -> M:
    """Parse a JSON object body into ``model``: 400 if it is not a JSON object, 422 if a field is wrong."""
    if raw is None or not raw.strip():
        raise MalformedRequest("request body is required")
    if len(raw.encode()) > MAX_BODY_BYTES:
        raise RequestTooLarge(f"request body is larger than {MAX_BODY_BYTES} bytes")
    try:
        document = json.loads(raw)
    except ValueError:
        raise MalformedRequest("request body is not valid JSON") from None
    except RecursionError:  # "[[[[…" nested deeper than the parser goes: fits in 16 KiB, is no object
        raise MalformedRequest("request body is nested too deeply") from None
    if not isinstance(document, dict):
        raise MalformedRequest("request body must be a JSON object")
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        details = [
            {"field": ".".join(str(p) for p in e["loc"]) or "body", "problem": e["msg"]}
            for e in exc.errors(include_url=False, include_input=False)
        ]
        raise InvalidRequest("request body has invalid fields", details=details) from None


# --- response models: what the views return, and what the OpenAPI document states -------------------


class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OrderView(_Response):
    orderId: int
    orderNo: str
    userId: int
    amount: Annotated[str, StringConstraints(pattern=grammar.AMOUNT_PATTERN)]
    currency: str
    status: Literal["CREATED", "PAID"]
    payTime: str | None
    transactionId: str | None
    createdAt: str
    updatedAt: str


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")

    field: str | None = None
    problem: str | None = None


class ErrorBody(_Response):
    code: str
    message: str
    details: list[ErrorDetail] | None = None


class ErrorView(_Response):
    error: ErrorBody


def order_view(order: Order) -> dict[str, Any]:
    view = OrderView(
        orderId=order.id or 0,
        orderNo=order.order_no,
        userId=order.user_id,
        amount=f"{order.amount:.2f}",
        currency=order.currency,
        status=order.status.value,
        payTime=_iso(order.pay_time),
        transactionId=order.payment_txn_id,
        createdAt=_iso(order.created_at) or "",
        updatedAt=_iso(order.updated_at) or "",
    )
    return view.model_dump()


# --- OpenAPI: route declarations built from the same models ------------------------------------------


def request_body(model: type[BaseModel], description: str) -> dict[str, Any]:
    """The ``requestBody`` of an operation whose handler parses the raw body itself with ``model``
    (``parse_body``: 400/413/422 in the error model; the callback must read the raw body for its HMAC
    before parsing), for Powertools' ``openapi_extensions``."""
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {"application/json": {"schema": model.model_json_schema(by_alias=True)}},
        }
    }


_ERROR_MEANINGS = {
    400: "the body is not a JSON object",
    401: "missing, malformed, wrong or stale X-Signature",
    403: "the request names a user other than the authenticated one",
    404: "not found (or an id no stored row can have)",
    409: "conflicts with the stored state",
    413: f"body larger than {MAX_BODY_BYTES} bytes",
    422: "a field breaks its grammar (README: Field grammar)",
}


def responses(ok: int, model: type[BaseModel], description: str, *errors: int) -> dict[int, Any]:
    """Powertools route ``responses``: the success model and the error model for each refusal."""
    declared: dict[int, Any] = {
        ok: {"description": description, "content": {"application/json": {"model": model}}}
    }
    for status in errors:
        declared[status] = {
            "description": _ERROR_MEANINGS[status],
            "content": {"application/json": {"model": ErrorView}},
        }
    return declared


def json_response(status: int, body: dict[str, Any]) -> Response[dict[str, Any]]:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=body)


def error_response(error: PaymentOutboxError) -> Response[dict[str, Any]]:
    """The one place an application error becomes an HTTP answer: mapped status, error body model."""
    return json_response(status_for(error), error_view(error))


def error_view(error: PaymentOutboxError) -> dict[str, Any]:
    body: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.details:
        body["details"] = error.details
    return {"error": body}


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="milliseconds") + "Z"
