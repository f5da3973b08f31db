"""The payment API's HTTP contract: its request and response models, who calls an order route, and
the request's trace (what both APIs share over HTTP is in ``api.http``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
)

from payment_outbox.api.http import iso_time
from payment_outbox.domain import grammar
from payment_outbox.domain.callers import Caller
from payment_outbox.domain.orders import Order, PaymentNotice
from payment_outbox.domain.tracing import TraceContext, request_trace
from payment_outbox.errors import ForbiddenForCaller, Unauthenticated
from payment_outbox.services.payments import NewOrder


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


def order_view(order: Order) -> dict[str, Any]:
    view = OrderView(
        orderId=order.id or 0,
        orderNo=order.order_no,
        userId=order.user_id,
        amount=f"{order.amount:.2f}",
        currency=order.currency,
        status=order.status.value,
        payTime=iso_time(order.pay_time),
        transactionId=order.payment_txn_id,
        createdAt=iso_time(order.created_at) or "",
        updatedAt=iso_time(order.updated_at) or "",
    )
    return view.model_dump()
