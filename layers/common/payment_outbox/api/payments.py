"""The payment API's HTTP contract: request and response models, body parsing, and the one table
that maps application errors to status codes."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, TypeVar

from aws_lambda_powertools.event_handler import Response, content_types
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from payment_outbox.domain.orders import MAX_AMOUNT, Order, PaymentNotice
from payment_outbox.domain.sms import E164
from payment_outbox.errors import (
    InvalidRequest,
    MalformedRequest,
    MessageNotFound,
    NotRequeueable,
    OrderNotFound,
    PaymentConflict,
    PaymentOutboxError,
    RequestTooLarge,
    SignatureRejected,
)
from payment_outbox.services.payments import NewOrder

#: Callbacks and order requests are a few hundred bytes; refuse anything absurd before parsing it.
MAX_BODY_BYTES = 16 * 1024

STATUS_BY_ERROR: dict[type[PaymentOutboxError], int] = {
    MalformedRequest: 400,
    SignatureRejected: 401,
    OrderNotFound: 404,
    MessageNotFound: 404,
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
    model_config = ConfigDict(populate_by_name=True, extra="forbid", str_strip_whitespace=True)


def _amount(value: Any) -> Decimal:
    """Amounts travel as decimal strings ("128.50"): never floats, > 0, at most 2 decimals."""
    if not isinstance(value, str):
        raise ValueError('amount must be a decimal string such as "128.50"')
    try:
        amount = Decimal(value)
    except ArithmeticError:
        raise ValueError('amount must be a decimal string such as "128.50"') from None
    if not amount.is_finite() or amount <= 0:
        raise ValueError("amount must be greater than 0")
    if amount.as_tuple().exponent < -2:  # type: ignore[operator]
        raise ValueError("amount must have at most 2 decimals")
    if amount > MAX_AMOUNT:
        raise ValueError(f"amount must be at most {MAX_AMOUNT}")
    return amount.quantize(Decimal("0.01"))


class CreateOrderRequest(_Request):
    user_id: int = Field(alias="userId", gt=0, le=2**63 - 1, strict=True)
    phone: Annotated[str, StringConstraints(pattern=E164.pattern)]
    amount: Decimal
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] = "CNY"

    _parse_amount = field_validator("amount", mode="before")(_amount)

    def to_new_order(self) -> NewOrder:
        return NewOrder(self.user_id, self.phone, self.amount, self.currency)


class PaymentNotifyRequest(_Request):
    order_no: Annotated[str, StringConstraints(min_length=1, max_length=32)] = Field(alias="orderNo")
    transaction_id: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        alias="transactionId"
    )
    amount: Decimal
    paid_at: datetime = Field(alias="paidAt")

    _parse_amount = field_validator("amount", mode="before")(_amount)

    def to_notice(self) -> PaymentNotice:
        return PaymentNotice(self.order_no, self.transaction_id, self.amount, self.paid_at)


M = TypeVar("M", bound=BaseModel)


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


def order_view(order: Order) -> dict[str, Any]:
    return {
        "orderId": order.id,
        "orderNo": order.order_no,
        "userId": order.user_id,
        "amount": f"{order.amount:.2f}",
        "currency": order.currency,
        "status": order.status.value,
        "payTime": _iso(order.pay_time),
        "transactionId": order.payment_txn_id,
        "createdAt": _iso(order.created_at),
        "updatedAt": _iso(order.updated_at),
    }


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
