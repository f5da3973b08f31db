"""Every field judged by its one grammar (payment_outbox.domain.grammar, README "Field grammar"), on the
demo's SQLite and on MariaDB alike: each refusal answers 4xx in the error model and writes nothing;
the edges of each rule are accepted."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text

from payment_outbox.clock import SystemClock
from payment_outbox.errors import OrderNumberTaken
from payment_outbox.services.payments import NewOrder, PaymentService
from payment_outbox_dev.local.harness import ApiResponse
from tests.support import LocalSystem, configured_database, recent_paid_at, signed_headers

pytestmark = pytest.mark.integration

PHONE = "+8613812345678"
TABLES = ("orders", "message_record", "outbox_audit")


def snapshot(system: LocalSystem) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table the APIs write."""
    with system.engine.connect() as conn:
        return {
            table: sorted(tuple(r) for r in conn.execute(text(f"SELECT * FROM {table}")))  # noqa: S608
            for table in TABLES
        }


def assert_refused(response: ApiResponse, status: int, code: str, case: object) -> None:
    assert response.status == status, (case, response.status, response.body)
    assert set(response.body) == {"error"}, (case, response.body)
    assert response.body["error"]["code"] == code, (case, response.body)


def create(system: LocalSystem, **fields: Any) -> ApiResponse:
    document = {"userId": 42, "phone": PHONE, "amount": "128.50", **fields}
    return system.api("POST", "/orders", json.dumps(document))


def callback(system: LocalSystem, order: dict[str, Any], **changes: Any) -> ApiResponse:
    document = {
        "orderNo": order["orderNo"],
        "transactionId": "txn-grammar",
        "amount": order["amount"],
        "currency": order["currency"],
        "paidAt": recent_paid_at(),
        **changes,
    }
    body = json.dumps(document, ensure_ascii=False)
    return system.api("POST", "/payments/notify", body, signed_headers(body))


def at(delta: timedelta, fmt: str = "%Y-%m-%dT%H:%M:%SZ") -> str:
    return (datetime.now(UTC) + delta).strftime(fmt)


# --- the refusals, one table per request ------------------------------------------------------------

# Digits other scripts write: Python's \d and str.isdigit() accept them, the grammar does not.
FULL_WIDTH = str.maketrans("0123456789", "".join(chr(0xFF10 + d) for d in range(10)))
ARABIC_INDIC = str.maketrans("0123456789", "".join(chr(0x0660 + d) for d in range(10)))
SUPERSCRIPT_TWO = "\u00b2"

REFUSED_ORDERS: list[tuple[str, dict[str, Any]]] = [
    # amount: a decimal string, digits only, at most 2 decimals, > 0, at most DECIMAL(12,2)
    ("amount-underscore", {"amount": "1_000"}),
    ("amount-full-width", {"amount": "128.50".translate(FULL_WIDTH)}),
    ("amount-arabic-indic", {"amount": "128.50".translate(ARABIC_INDIC)}),
    ("amount-leading-plus", {"amount": "+128.50"}),
    ("amount-negative", {"amount": "-1.00"}),
    ("amount-trailing-dot", {"amount": "12."}),
    ("amount-leading-dot", {"amount": ".50"}),
    ("amount-leading-zero", {"amount": "0128.50"}),
    ("amount-leading-space", {"amount": " 128.50"}),
    ("amount-trailing-space", {"amount": "128.50 "}),
    ("amount-trailing-newline", {"amount": "128.50\n"}),
    ("amount-exponent", {"amount": "1e2"}),
    ("amount-three-decimals", {"amount": "128.505"}),
    ("amount-zero", {"amount": "0"}),
    ("amount-zero-cents", {"amount": "0.00"}),
    ("amount-eleven-digits", {"amount": "10000000000"}),
    ("amount-nan", {"amount": "NaN"}),
    ("amount-infinity", {"amount": "Infinity"}),
    ("amount-json-number", {"amount": 128.5}),
    ("amount-comma", {"amount": "1,000.00"}),
    # phone: E.164, ASCII digits
    ("phone-full-width-digits", {"phone": PHONE.translate(FULL_WIDTH)}),
    ("phone-arabic-indic-digits", {"phone": "+86" + "13812345678".translate(ARABIC_INDIC)}),
    ("phone-trailing-newline", {"phone": PHONE + "\n"}),
    ("phone-leading-space", {"phone": " " + PHONE}),
    ("phone-no-plus", {"phone": PHONE[1:]}),
    ("phone-zero-country", {"phone": "+0613812345678"}),
    ("phone-seven-digits", {"phone": "+1234567"}),
    ("phone-sixteen-digits", {"phone": "+1234567890123456"}),
    ("phone-dashes", {"phone": "+86-138-1234-5678"}),
    # currency: ISO 4217 letters
    ("currency-lower-case", {"currency": "cny"}),
    ("currency-two-letters", {"currency": "CN"}),
    ("currency-full-width", {"currency": "\uff23\uff2e\uff39"}),
    ("currency-trailing-newline", {"currency": "CNY\n"}),
    # userId: a JSON integer 1..2**63-1
    ("user-id-zero", {"userId": 0}),
    ("user-id-beyond-bigint", {"userId": 2**63}),
    ("user-id-as-string", {"userId": "42"}),
    ("user-id-as-float", {"userId": 42.0}),
    ("user-id-as-bool", {"userId": True}),
]

ACCEPTED_ORDERS: list[tuple[str, dict[str, Any], str]] = [
    ("smallest-amount", {"amount": "0.01"}, "0.01"),
    ("largest-amount", {"amount": "9999999999.99"}, "9999999999.99"),
    ("whole-amount", {"amount": "7"}, "7.00"),
    ("one-decimal", {"amount": "7.5"}, "7.50"),
    ("shortest-phone", {"phone": "+12345678"}, "128.50"),
    ("longest-phone", {"phone": "+123456789012345"}, "128.50"),
    ("largest-user-id", {"userId": 2**63 - 1}, "128.50"),
]


def test_order_requests_outside_the_grammar_are_422_and_write_nothing(any_system: LocalSystem) -> None:
    # Given the tables as they are
    before = snapshot(any_system)

    for case, fields in REFUSED_ORDERS:
        # When an order request breaks one field's grammar
        response = create(any_system, **fields)

        # Then it is refused as invalid, naming that field, and nothing is written
        assert_refused(response, 422, "invalid_request", case)
        assert response.body["error"]["details"], case
        assert snapshot(any_system) == before, case


def test_order_requests_on_the_edges_of_the_grammar_are_accepted(any_system: LocalSystem) -> None:
    for case, fields, amount in ACCEPTED_ORDERS:
        # When an order request sits on the edge of a rule
        response = create(any_system, **fields)

        # Then it is created with the amount as stored
        assert response.status == 201, (case, response.body)
        assert response.body["amount"] == amount, case


MAX_ID = 2**63 - 1

UNKNOWN_IDS = [
    str(MAX_ID + 1),  # 9223372036854775808: the SQLite driver overflows on it
    str(2**64),
    "9" * 40,
    str(MAX_ID),  # in range, no such row
    "0",
    "-1",
    "01",
    "1.0",
    "1e3",
    "1".translate(FULL_WIDTH),
    "1".translate(ARABIC_INDIC),
    "%20",
    "abc",
]


def test_ids_outside_the_stored_range_are_404_for_orders_and_traces(any_system: LocalSystem) -> None:
    # Given one stored order and the tables as they are
    order = create(any_system).body
    before = snapshot(any_system)

    for order_id in UNKNOWN_IDS:
        # When the order or its admin trace is read by an id no stored order can have
        for path in (f"/orders/{order_id}", f"/admin/orders/{order_id}/trace"):
            response = any_system.api("GET", path)

            # Then the answer is 404 on every database, and nothing changed
            assert_refused(response, 404, "order_not_found", path)
    assert snapshot(any_system) == before
    # And the stored one is still found by its id
    assert any_system.api("GET", f"/orders/{order['orderId']}").status == 200


def refused_callbacks(order: dict[str, Any]) -> list[tuple[str, dict[str, Any], int, str]]:
    return [
        ("amount-underscore", {"amount": "1_28.50"}, 422, "invalid_request"),
        ("amount-full-width", {"amount": order["amount"].translate(FULL_WIDTH)}, 422, "invalid_request"),
        ("amount-leading-plus", {"amount": "+" + order["amount"]}, 422, "invalid_request"),
        ("amount-trailing-dot", {"amount": "128."}, 422, "invalid_request"),
        ("amount-spaces", {"amount": f" {order['amount']} "}, 422, "invalid_request"),
        ("amount-exponent", {"amount": "1.285e2"}, 422, "invalid_request"),
        ("paid-at-in-2099", {"paidAt": "2099-01-01T00:00:00Z"}, 422, "invalid_request"),
        ("paid-at-6-minutes-ahead", {"paidAt": at(timedelta(minutes=6))}, 422, "invalid_request"),
        ("paid-at-31-days-ago", {"paidAt": at(-timedelta(days=31))}, 422, "invalid_request"),
        ("paid-at-without-offset", {"paidAt": at(timedelta(0), "%Y-%m-%dT%H:%M:%S")}, 422, "invalid_request"),
        ("paid-at-date-only", {"paidAt": at(timedelta(0), "%Y-%m-%d")}, 422, "invalid_request"),
        ("paid-at-unix-seconds", {"paidAt": int(datetime.now(UTC).timestamp())}, 422, "invalid_request"),
        ("paid-at-unix-as-text", {"paidAt": str(int(datetime.now(UTC).timestamp()))}, 422, "invalid_request"),
        ("paid-at-full-width", {"paidAt": recent_paid_at().translate(FULL_WIDTH)}, 422, "invalid_request"),
        ("currency-not-accepted", {"currency": "USD"}, 422, "currency_not_accepted"),
        ("currency-lower-case", {"currency": "cny"}, 422, "invalid_request"),
        ("transaction-id-non-ascii", {"transactionId": "txn-é"}, 422, "invalid_request"),
        ("transaction-id-control", {"transactionId": "txn\n1"}, 422, "invalid_request"),
        ("order-no-full-width", {"orderNo": order["orderNo"].translate(FULL_WIDTH)}, 404, "order_not_found"),
        ("order-no-injection", {"orderNo": "' OR '1'='1"}, 404, "order_not_found"),
    ]


def test_callbacks_outside_the_grammar_are_refused_and_write_nothing(any_system: LocalSystem) -> None:
    # Given an unpaid order and the tables as they are
    order = create(any_system).body
    before = snapshot(any_system)

    for case, changes, status, code in refused_callbacks(order):
        # When a signed callback breaks one rule
        response = callback(any_system, order, **changes)

        # Then it is refused with the documented status and nothing is written
        assert_refused(response, status, code, case)
        assert snapshot(any_system) == before, case


@pytest.mark.parametrize(
    "changes",
    [
        {"currency": "CNY"},
        {"paidAt": at(timedelta(minutes=4))},
        {"paidAt": at(-timedelta(days=29))},
        {"paidAt": at(timedelta(0), "%Y-%m-%dT%H:%M:%S.%f+08:00").replace("+08:00", "+00:00")},
    ],
    ids=["same-currency", "paid-at-4-minutes-ahead", "paid-at-29-days-ago", "paid-at-with-offset"],
)
def test_callbacks_on_the_edges_of_the_grammar_are_accepted(
    any_system: LocalSystem, changes: dict[str, Any]
) -> None:
    # Given an unpaid order
    order = create(any_system).body

    # When a signed callback sits on the edge of a rule
    response = callback(any_system, order, **changes)

    # Then the order is paid
    assert response.status == 200, response.body
    assert response.body["status"] == "PAID"


def cursor_of(text_value: str) -> str:
    return base64.urlsafe_b64encode(text_value.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "query",
    [
        {"limit": "50".translate(FULL_WIDTH)},
        {"limit": "+5"},
        {"limit": " 5"},
        {"limit": "1_0"},
        {"limit": "0"},
        {"status": SUPERSCRIPT_TWO},
        {"status": "1".translate(FULL_WIDTH)},
        {"cursor": cursor_of("id:" + str(MAX_ID + 1))},
        {"cursor": cursor_of("id:" + SUPERSCRIPT_TWO)},
        {"cursor": cursor_of("id:" + "1".translate(FULL_WIDTH))},
        {"cursor": "é"},
        {"from": "1700000000"},
        {"from": "2026-11-27"},
        {"to": "2026-11-27T10:15:00"},
    ],
)
def test_admin_list_queries_outside_the_grammar_are_422(
    any_system: LocalSystem, query: dict[str, str]
) -> None:
    # When the message list is asked for with a parameter outside its grammar
    result = any_system.functions.api_result(
        "GET", "/admin/messages", query={name: [value] for name, value in query.items()}
    )

    # Then it is refused as invalid
    assert int(result["statusCode"]) == 422, (query, result["body"])
    assert json.loads(result["body"])["error"]["code"] == "invalid_request", query


@pytest.mark.parametrize("message_id", ["é" * 3, "x" * 65, "a b", "a%2Fb"])
def test_requeue_of_a_message_id_outside_the_grammar_is_404_and_writes_nothing(
    any_system: LocalSystem, message_id: str
) -> None:
    # Given the tables as they are
    before = snapshot(any_system)

    # When one message is requeued by an id no message can have
    body = json.dumps({"reason": "operator check", "dryRun": False})
    response = any_system.api("POST", f"/admin/messages/{message_id}/requeue", body)

    # Then it is not found and nothing is written (no audit row either)
    assert_refused(response, 404, "message_not_found", message_id)
    assert snapshot(any_system) == before


@pytest.mark.parametrize(
    "body",
    ["[" * 8000 + "]" * 8000, '{"a":' * 2500 + "1" + "}" * 2500, '{"userId": 1' + "0" * 5000 + "}"],
    ids=["deep-array", "deep-object", "5000-digit-number"],
)
def test_bodies_the_json_parser_cannot_take_are_400_and_write_nothing(
    any_system: LocalSystem, body: str
) -> None:
    # Given the tables and an unpaid order
    order = create(any_system).body
    before = snapshot(any_system)

    # When a body nested deeper than the parser goes (within 16 KiB), or a number beyond Python's
    # digit limit, is posted as an order, as a signed callback and as an admin requeue
    responses = [
        any_system.api("POST", "/orders", body),
        any_system.api("POST", "/payments/notify", body, signed_headers(body)),
        any_system.api("POST", "/admin/messages/requeue", body),
    ]

    # Then each is a 400 in the error model, never a 5xx, and nothing is written
    for response in responses:
        assert_refused(response, 400, "malformed_request", order["orderNo"])
    assert snapshot(any_system) == before


# --- order numbers ----------------------------------------------------------------------------------


def drawing(numbers: list[str]) -> Callable[[], str]:
    remaining = iter(numbers)
    return lambda: next(remaining)


def test_an_order_number_that_collides_is_drawn_again(any_system: LocalSystem) -> None:
    # Given a service whose order-number source repeats its first number once
    numbers = ["PO20261130000000000001", "PO20261130000000000001", "PO20261130000000000002"]
    with configured_database() as database:
        service = PaymentService(
            database.unit_of_work,
            SystemClock(),
            after_commit_lease=timedelta(seconds=60),
            order_numbers=drawing(numbers),
        )
        first = service.create_order(NewOrder(42, PHONE, Decimal("1.00"), "CNY"))

        # When the next order draws the same number
        second = service.create_order(NewOrder(43, PHONE, Decimal("2.00"), "CNY"))

    # Then the unique key refused the repeat and the order was stored under the next draw
    assert first.order_no == "PO20261130000000000001"
    assert second.order_no == "PO20261130000000000002"
    with any_system.engine.connect() as conn:
        stored = conn.execute(text("SELECT order_no, user_id FROM orders ORDER BY id")).all()
    assert [tuple(r) for r in stored] == [("PO20261130000000000001", 42), ("PO20261130000000000002", 43)]


def test_an_order_number_source_that_only_collides_fails_without_writing(any_system: LocalSystem) -> None:
    # Given one stored order and a source that draws only its number
    taken = "PO20261130000000000009"
    with configured_database() as database:
        service = PaymentService(
            database.unit_of_work,
            SystemClock(),
            after_commit_lease=timedelta(seconds=60),
            order_numbers=lambda: taken,
        )
        service.create_order(NewOrder(42, PHONE, Decimal("1.00"), "CNY"))
        before = snapshot(any_system)

        # When another order is created, every draw colliding
        with pytest.raises(OrderNumberTaken):
            service.create_order(NewOrder(43, PHONE, Decimal("2.00"), "CNY"))

    # Then it gave up after its bounded draws and nothing was written
    assert snapshot(any_system) == before
