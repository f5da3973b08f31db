"""What both APIs share over HTTP: body parsing, the caller an admin action is audited under, how a
moment is written, the one table that maps application errors to status codes, the error body, the
OpenAPI declarations of bodies and answers, and the one error handler."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, TypeVar, overload

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from pydantic import BaseModel, ConfigDict, ValidationError

from payment_outbox.clock import to_naive_utc
from payment_outbox.domain import grammar
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
    SmsNotUncertain,
    SmsOutcomeUnknown,
    SmsSendFailed,
    Unauthenticated,
)

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
    SmsNotUncertain: 409,
    RequestTooLarge: 413,
    InvalidRequest: 422,
    # An operator's SMS resend: the provider refused it, or did not answer (parked again).
    SmsSendFailed: 502,
    SmsOutcomeUnknown: 504,
}


def status_for(error: PaymentOutboxError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 500


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


def order_id_from_path(text: str) -> int:
    """The order id a path segment names; ``OrderNotFound`` (404) when no stored order can have it
    (not 1..2**63-1 in ASCII digits: "0", "01", full-width digits, 2**63 and beyond)."""
    order_id = grammar.parse_id(text)
    if order_id is None:
        raise OrderNotFound("order not found")
    return order_id


def actor(event: APIGatewayProxyEvent) -> str:
    """Who an admin request's audit row names: the IAM caller API Gateway authorised; "local" when there
    is none (local runs)."""
    return event.request_context.identity.user_arn or "local"


@overload
def iso_time(moment: datetime) -> str: ...
@overload
def iso_time(moment: datetime | None) -> str | None: ...
def iso_time(moment: datetime | None) -> str | None:
    """A moment as both APIs write it: UTC to the millisecond, with a "Z" (None stays None)."""
    return None if moment is None else to_naive_utc(moment).isoformat(timespec="milliseconds") + "Z"


# --- the error body, and the OpenAPI declarations of bodies and answers --------------------------------


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")

    field: str | None = None
    problem: str | None = None


class ErrorBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str
    message: str
    details: list[ErrorDetail] | None = None


class ErrorView(BaseModel):
    model_config = ConfigDict(extra="forbid")

    error: ErrorBody


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
    502: "the SMS provider refused the SMS (nothing was sent; it stays parked)",
    504: "the SMS provider did not answer (it may have been sent; it stays parked)",
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


def handle_errors(app: APIGatewayRestResolver, logger: Logger, *, refused: str) -> None:
    """Registers the one handler of application errors on ``app``: each answered by ``error_response``
    and logged as ``refused`` with its status and code (never ``str()`` of an unexpected error)."""

    @app.exception_handler(PaymentOutboxError)  # type: ignore[untyped-decorator]
    def handle_application_error(error: PaymentOutboxError) -> Response[dict[str, Any]]:
        logger.info(refused, extra={"status": status_for(error), "code": error.code})
        return error_response(error)
