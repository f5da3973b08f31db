"""The APIs' HTTP contract: body parsing, the error → status table and the one error handler."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver

from payment_outbox.api.http import MAX_BODY_BYTES, error_view, handle_errors, parse_body, status_for
from payment_outbox.api.payments import CreateOrderRequest, PaymentNotifyRequest
from payment_outbox.errors import (
    AlreadyPaid,
    AmountMismatch,
    InvalidEnvelope,
    InvalidRequest,
    MalformedRequest,
    OrderNotFound,
    PaymentConflict,
    PaymentOutboxError,
    RequestTooLarge,
    SignatureRejected,
    TransactionAlreadyUsed,
)

pytestmark = pytest.mark.unit

ORDER = {"userId": 42, "phone": "+8613812345678", "amount": "128.99", "currency": "CNY"}
NOTICE = {
    "orderNo": "PO20261127100000000001",
    "transactionId": "txn-1",
    "amount": "128.99",
    "currency": "CNY",
    "paidAt": "2026-11-27T10:15:00Z",
}


def _with(base: dict[str, Any], **changes: Any) -> str:
    return json.dumps({**base, **changes})


def _without(base: dict[str, Any], field: str) -> str:
    return json.dumps({k: v for k, v in base.items() if k != field})


def _invalid_fields(model: type[Any], raw: str) -> list[str]:
    with pytest.raises(InvalidRequest) as raised:
        parse_body(model, raw)
    return [d["field"] for d in raised.value.details]


# --- well-formed bodies -------------------------------------------------------------------------


def test_a_valid_order_request_parses() -> None:
    # Given a well-formed order request / When parsed
    request = parse_body(CreateOrderRequest, json.dumps(ORDER))
    # Then every field is read with its proper type
    assert (request.user_id, request.phone, request.amount, request.currency) == (
        42,
        "+8613812345678",
        Decimal("128.99"),
        "CNY",
    )


def test_the_currency_defaults_to_cny() -> None:
    request = parse_body(CreateOrderRequest, _without(ORDER, "currency"))
    assert request.currency == "CNY"


def test_a_valid_payment_notice_parses() -> None:
    # Given a well-formed callback body / When parsed
    notice = parse_body(PaymentNotifyRequest, json.dumps(NOTICE))
    # Then the amount is a Decimal and the time is timezone-aware
    assert notice.order_no == "PO20261127100000000001"
    assert notice.transaction_id == "txn-1"
    assert notice.amount == Decimal("128.99")
    assert notice.paid_at == datetime(2026, 11, 27, 10, 15, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "parsed"), [("1", "1.00"), ("0.5", "0.50"), ("9999999999.99", "9999999999.99")]
)
def test_amounts_are_normalised_to_two_decimals(raw: str, parsed: str) -> None:
    request = parse_body(CreateOrderRequest, _with(ORDER, amount=raw))
    assert str(request.amount) == parsed


# --- not JSON objects: 400 ----------------------------------------------------------------------


@pytest.mark.parametrize("raw", [None, "", "   ", "{", "{'userId': 1}", "nul", '{"a":1}}'])
def test_an_unparseable_body_is_malformed(raw: str | None) -> None:
    # Given a missing or broken body / When parsed / Then it is a malformed request
    with pytest.raises(MalformedRequest):
        parse_body(CreateOrderRequest, raw)


@pytest.mark.parametrize("raw", ["[]", "[1,2]", '"text"', "42", "null", "true"])
def test_a_json_value_that_is_not_an_object_is_malformed(raw: str) -> None:
    with pytest.raises(MalformedRequest):
        parse_body(PaymentNotifyRequest, raw)


def test_an_oversized_body_is_refused_before_parsing() -> None:
    # Given a body just over the limit (still valid JSON)
    raw = _with(ORDER, note="x" * MAX_BODY_BYTES)
    # When parsed / Then it is too large (not a field error)
    with pytest.raises(RequestTooLarge):
        parse_body(CreateOrderRequest, raw)


def test_the_size_limit_counts_bytes_not_characters() -> None:
    # Given a body under the limit in characters but over it in UTF-8 bytes
    raw = "{" + '"k": "' + "汉" * (MAX_BODY_BYTES // 3 + 10) + '"}'
    assert len(raw) < MAX_BODY_BYTES < len(raw.encode())
    with pytest.raises(RequestTooLarge):
        parse_body(CreateOrderRequest, raw)


# --- field rules: 422 ---------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["userId", "phone", "amount"])
def test_a_missing_order_field_is_invalid(field: str) -> None:
    assert field in _invalid_fields(CreateOrderRequest, _without(ORDER, field))


@pytest.mark.parametrize("field", ["orderNo", "transactionId", "amount", "paidAt", "currency"])
def test_a_missing_notice_field_is_invalid(field: str) -> None:
    assert field in _invalid_fields(PaymentNotifyRequest, _without(NOTICE, field))


@pytest.mark.parametrize("user_id", [True, False, "42", 42.0, 0, -1, 2**63, None, [42], {"id": 42}])
def test_user_id_must_be_a_positive_json_integer(user_id: Any) -> None:
    # Given a userId that is a bool, string, float, out of range... / Then it is refused
    assert "userId" in _invalid_fields(CreateOrderRequest, _with(ORDER, userId=user_id))


@pytest.mark.parametrize(
    "amount",
    [
        "0",
        "0.00",
        "-1.00",
        "-0.01",
        "1.001",
        "0.001",
        "1.0000",
        "99999999999.00",
        "10000000000.00",
        "1e100",
        "NaN",
        "Infinity",
        "-Infinity",
        "abc",
        "",
        "1,00",
        "12.5.1",
    ],
)
def test_an_amount_out_of_range_or_over_precise_is_invalid(amount: str) -> None:
    # Given an amount string that is zero, negative, has more than 2 decimals, exceeds DECIMAL(12,2)
    # or is not a number / When parsed as order or notice / Then the amount field is refused
    assert _invalid_fields(CreateOrderRequest, _with(ORDER, amount=amount)) == ["amount"]
    assert _invalid_fields(PaymentNotifyRequest, _with(NOTICE, amount=amount)) == ["amount"]


@pytest.mark.parametrize("amount", [128.99, 100, 0.5, None, True, ["1.00"]])
def test_an_amount_that_is_not_a_string_is_invalid(amount: Any) -> None:
    # Given a JSON number (floats lose cents) or another type / Then it is refused
    assert _invalid_fields(CreateOrderRequest, _with(ORDER, amount=amount)) == ["amount"]
    assert _invalid_fields(PaymentNotifyRequest, _with(NOTICE, amount=amount)) == ["amount"]


@pytest.mark.parametrize(
    "phone",
    [
        "13812345678",  # no country code
        "+0123456789",  # country code cannot start with 0
        "+86 138 1234 5678",
        "+86-13812345678",
        "+8613812345678901234",  # longer than E.164 allows
        "+12345",  # too short
        "+86138abcd5678",
        "",
        13812345678,
        None,
    ],
)
def test_a_phone_that_is_not_e164_is_invalid(phone: Any) -> None:
    assert _invalid_fields(CreateOrderRequest, _with(ORDER, phone=phone)) == ["phone"]


@pytest.mark.parametrize("currency", ["cny", "CN", "CNYY", "", 156])
def test_a_currency_that_is_not_three_capital_letters_is_invalid(currency: Any) -> None:
    assert _invalid_fields(CreateOrderRequest, _with(ORDER, currency=currency)) == ["currency"]


@pytest.mark.parametrize("paid_at", ["yesterday", "2026-13-01T00:00:00Z", "", None, [2026]])
def test_a_paid_at_that_is_not_a_timestamp_is_invalid(paid_at: Any) -> None:
    assert _invalid_fields(PaymentNotifyRequest, _with(NOTICE, paidAt=paid_at)) == ["paidAt"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("orderNo", ""), ("orderNo", 123), ("orderNo", None), ("transactionId", ""), ("transactionId", 7)],
)
def test_notice_identifiers_must_be_non_empty_strings(field: str, value: Any) -> None:
    assert _invalid_fields(PaymentNotifyRequest, _with(NOTICE, **{field: value})) == [field]


@pytest.mark.parametrize(("model", "base"), [(CreateOrderRequest, ORDER), (PaymentNotifyRequest, NOTICE)])
def test_unknown_fields_are_refused(model: type[Any], base: dict[str, Any]) -> None:
    # Given an otherwise valid body with an extra field / Then the extra field is named as the problem
    assert _invalid_fields(model, _with(base, points=1_000_000)) == ["points"]


def test_every_wrong_field_is_reported_at_once_without_echoing_input() -> None:
    # Given a body with several wrong fields
    raw = json.dumps({"userId": "x", "phone": "123", "amount": 1.5, "secret": "card-4111111111111111"})
    # When parsed
    with pytest.raises(InvalidRequest) as raised:
        parse_body(CreateOrderRequest, raw)
    # Then each is listed by name, and the caller's input is not copied into the answer
    assert sorted(d["field"] for d in raised.value.details) == ["amount", "phone", "secret", "userId"]
    assert "4111111111111111" not in json.dumps(error_view(raised.value))


@pytest.mark.parametrize(
    "order_no",
    [
        "' OR '1'='1",
        "1; DROP TABLE orders;--",
        'PO1" OR ""="',
        "%' UNION SELECT 1--",
    ],
)
def test_sql_looking_order_numbers_are_just_strings(order_no: str) -> None:
    # Given an order number that looks like SQL injection but is within the length limit
    notice = parse_body(PaymentNotifyRequest, _with(NOTICE, orderNo=order_no))
    # Then it passes validation unchanged: it is only ever a bound parameter (the lookup finds nothing)
    assert notice.order_no == order_no


def test_an_over_long_order_number_is_invalid() -> None:
    # Given an injection attempt longer than any order number (32 chars)
    order_no = "PO1' UNION SELECT user_phone FROM orders--"
    assert len(order_no) > 32
    assert _invalid_fields(PaymentNotifyRequest, _with(NOTICE, orderNo=order_no)) == ["orderNo"]
    # And exactly 32 characters still pass, 33 do not
    assert parse_body(PaymentNotifyRequest, _with(NOTICE, orderNo="P" * 32)).order_no == "P" * 32
    assert _invalid_fields(PaymentNotifyRequest, _with(NOTICE, orderNo="P" * 33)) == ["orderNo"]


def test_an_over_long_transaction_id_is_invalid() -> None:
    assert parse_body(PaymentNotifyRequest, _with(NOTICE, transactionId="t" * 64)).transaction_id == "t" * 64
    assert _invalid_fields(PaymentNotifyRequest, _with(NOTICE, transactionId="t" * 65)) == ["transactionId"]


# --- error → status -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (MalformedRequest("x"), 400),
        (SignatureRejected("x"), 401),
        (OrderNotFound("x"), 404),
        (PaymentConflict("x"), 409),
        (AmountMismatch("x"), 409),
        (AlreadyPaid("x"), 409),
        (TransactionAlreadyUsed("x"), 409),
        (RequestTooLarge("x"), 413),
        (InvalidRequest("x"), 422),
    ],
)
def test_each_error_class_maps_to_its_status(error: PaymentOutboxError, status: int) -> None:
    assert status_for(error) == status


@pytest.mark.parametrize("error", [PaymentOutboxError("x"), InvalidEnvelope("x")])
def test_an_error_without_a_mapping_is_a_server_error(error: PaymentOutboxError) -> None:
    assert status_for(error) == 500


def test_the_error_body_carries_code_message_and_details_only() -> None:
    # Given a field error / When rendered
    body = error_view(InvalidRequest("bad", details=[{"field": "amount", "problem": "too small"}]))
    # Then it is the documented error model
    assert body == {
        "error": {
            "code": "invalid_request",
            "message": "bad",
            "details": [{"field": "amount", "problem": "too small"}],
        }
    }
    assert error_view(OrderNotFound("order 1 not found")) == {
        "error": {"code": "order_not_found", "message": "order 1 not found"}
    }


def test_the_one_error_handler_answers_an_application_error_with_its_status_and_body() -> None:
    # Given an API with the shared error handler, whose route raises an application error
    app = APIGatewayRestResolver()
    handle_errors(app, Logger(service="test"), refused="request refused")

    @app.get("/orders/<order_id>")
    def get_order(order_id: str) -> dict[str, Any]:
        raise OrderNotFound(f"order {order_id} not found")

    # When the route is called
    answer = app.resolve(
        {"httpMethod": "GET", "path": "/orders/7", "resource": "/orders/{order_id}", "headers": {}},
        {},  # type: ignore[arg-type]
    )
    # Then the error's mapped status and its error body answer, nothing else of the exception
    assert answer["statusCode"] == 404
    assert json.loads(answer["body"]) == {
        "error": {"code": "order_not_found", "message": "order 7 not found"}
    }
