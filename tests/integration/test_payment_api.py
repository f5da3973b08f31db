"""The payment API on the real MariaDB and moto: creating and reading orders, and the payment callback
with its one-transaction outbox write and its best-effort publish after commit."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import boto3
import pytest
from sqlalchemy import Engine, text

from payment_outbox.adapters.db.engine import make_engine, make_session_factory
from payment_outbox.adapters.db.repositories import SqlOutboxRepository
from payment_outbox.adapters.db.unit_of_work import SqlUnitOfWork
from payment_outbox.adapters.sns_publisher import SnsPublisher
from payment_outbox.clock import SystemClock
from payment_outbox.domain.envelope import TOPIC_POINTS
from payment_outbox.domain.orders import PaymentNotice
from payment_outbox.domain.outbox import OutboxMessage
from payment_outbox.errors import PaymentConflict
from payment_outbox.services.payments import PaymentService
from payment_outbox.services.relay import RelayAfterCommitPublisher
from payment_outbox.settings import OutboxSettings
from payment_outbox_dev.local.harness import ApiResponse
from tests.fakes import outbox_message
from tests.support import (
    LocalSystem,
    configured_database,
    notify_body,
    pay_time_of,
    recent_paid_at,
    signed_headers,
    utc_now,
)

pytestmark = pytest.mark.integration

PHONE = "+8613812345678"
PAID_AT = datetime.now(UTC) - timedelta(minutes=1)
ENVELOPE_KEYS = {"messageId", "topic", "businessKey", "businessType", "occurredAt", "payload"}


# --- helpers ------------------------------------------------------------------------------------------


def order_row(system: LocalSystem, order_id: int) -> dict[str, Any]:
    with system.engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM orders WHERE id = :id"), {"id": order_id}).one()
        return dict(row._mapping)


def assert_error(response: ApiResponse, status: int, code: str | None = None, case: str = "") -> None:
    assert response.status == status, (case, response.body)
    assert set(response.body) == {"error"}, (case, response.body)
    error = response.body["error"]
    assert isinstance(error["code"], str) and error["code"], case
    assert isinstance(error["message"], str) and error["message"], case
    if code is not None:
        assert error["code"] == code, (case, error)


def assert_still_unpaid(system: LocalSystem, order: dict[str, Any]) -> None:
    row = order_row(system, order["orderId"])
    assert row["status"] == "CREATED"
    assert row["payment_txn_id"] is None
    assert row["pay_time"] is None
    assert system.count("message_record") == 0


def make_outbox_due(system: LocalSystem) -> None:
    with system.engine.begin() as conn:
        conn.execute(
            text("UPDATE message_record SET next_retry_at = :due"), {"due": utc_now() - timedelta(seconds=1)}
        )


def take_messages(queue_url: str) -> list[dict[str, Any]]:
    """Receive and delete everything visible in the queue (keeps moto's queues empty)."""
    sqs = boto3.client("sqs")
    taken: list[dict[str, Any]] = []
    while True:
        batch = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        ).get("Messages", [])
        if not batch:
            return taken
        for message in batch:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        taken.extend(batch)


def tables(system: LocalSystem) -> set[str]:
    with system.engine.connect() as conn:
        return {row[0] for row in conn.execute(text("SHOW TABLES"))}


def set_function_env(
    system: LocalSystem, monkeypatch: pytest.MonkeyPatch, function: str, name: str, value: str
) -> None:
    """Change one variable of a function's environment (the harness applies it on every invocation)."""
    monkeypatch.setitem(system.functions.environments[function], name, value)
    monkeypatch.setenv(name, value)
    system.functions.cold_start(function)


class ProcessKilled(BaseException):
    """Stands for the Lambda container dying mid-invocation: nothing in the application catches it."""


# --- POST /orders -----------------------------------------------------------------------------------


def test_create_order_answers_201_with_the_new_order(system: LocalSystem) -> None:
    # Given a valid order request
    body = json.dumps({"userId": 42, "phone": PHONE, "amount": "128.50"})

    # When it is posted
    response = system.api("POST", "/orders", body)

    # Then the order is created, unpaid, with its amount as a two-decimal string, and stored
    assert response.status == 201, response.body
    created = response.body
    assert isinstance(created["orderId"], int)
    assert created["orderNo"].startswith("PO")
    assert created["status"] == "CREATED"
    assert created["amount"] == "128.50"
    assert created["payTime"] is None
    row = order_row(system, created["orderId"])
    assert row["order_no"] == created["orderNo"]
    assert row["amount"] == Decimal("128.50")
    assert row["user_phone"] == PHONE
    assert system.count("message_record") == 0


VALID_ORDER = {"userId": 42, "phone": PHONE, "amount": "128.50"}


def order_json(**changes: Any) -> str:
    return json.dumps({**VALID_ORDER, **changes})


def order_without(field: str) -> str:
    return json.dumps({k: v for k, v in VALID_ORDER.items() if k != field})


Case = tuple[str, str, int]

BAD_ORDER_REQUESTS: dict[str, list[Case]] = {
    "malformed": [
        ("malformed-json", '{"userId": 42, "phone": ', 400),
        ("json-array", "[1, 2, 3]", 400),
        ("json-string", '"a string"', 400),
        ("empty-body", "", 400),
        ("oversized-body", order_json(note="x" * 17_000), 413),
    ],
    "wrong-types": [
        ("user-id-as-string", order_json(userId="42"), 422),
        ("user-id-as-float", order_json(userId=42.0), 422),
        ("user-id-as-bool", order_json(userId=True), 422),
        ("phone-as-number", order_json(phone=8613812345678), 422),
        ("amount-as-float", order_json(amount=128.5), 422),
        ("amount-as-int", order_json(amount=128), 422),
        ("amount-null", order_json(amount=None), 422),
        ("currency-as-number", order_json(currency=156), 422),
    ],
    "missing-or-unexpected-fields": [
        ("missing-user-id", order_without("userId"), 422),
        ("missing-phone", order_without("phone"), 422),
        ("missing-amount", order_without("amount"), 422),
        ("empty-object", "{}", 422),
        ("unexpected-status-field", order_json(status="PAID"), 422),
    ],
    "user-id-out-of-range": [
        ("user-id-zero", order_json(userId=0), 422),
        ("user-id-negative", order_json(userId=-1), 422),
        ("user-id-beyond-bigint", order_json(userId=2**63), 422),
    ],
    "amounts": [
        ("amount-zero", order_json(amount="0"), 422),
        ("amount-zero-decimals", order_json(amount="0.00"), 422),
        ("amount-negative-cent", order_json(amount="-0.01"), 422),
        ("amount-negative", order_json(amount="-5"), 422),
        ("amount-three-decimals", order_json(amount="1.001"), 422),
        ("amount-half-cent", order_json(amount="128.505"), 422),
        ("amount-beyond-decimal-12-2", order_json(amount="10000000000.00"), 422),
        ("amount-huge-exponent", order_json(amount="1e20"), 422),
        ("amount-400-digits", order_json(amount="9" * 400), 422),
        ("amount-nan", order_json(amount="NaN"), 422),
        ("amount-infinity", order_json(amount="Infinity"), 422),
        ("amount-not-a-number", order_json(amount="abc"), 422),
        ("amount-empty", order_json(amount=""), 422),
    ],
    "phones-and-currencies": [
        ("phone-without-plus", order_json(phone="13812345678"), 422),
        ("phone-country-code-zero", order_json(phone="+0123456789"), 422),
        ("phone-with-spaces", order_json(phone="+86 138 1234 5678"), 422),
        ("phone-with-dashes", order_json(phone="+86-138-1234-5678"), 422),
        ("phone-too-long", order_json(phone="+8613812345678123"), 422),
        ("phone-too-short", order_json(phone="+12345"), 422),
        ("phone-empty", order_json(phone=""), 422),
        ("currency-lowercase", order_json(currency="cny"), 422),
        ("currency-four-letters", order_json(currency="CNYY"), 422),
    ],
    "sql-injection": [
        ("sqli-phone", order_json(phone="+8613812345678'; DROP TABLE orders; --"), 422),
        ("sqli-currency", order_json(currency="'; DROP TABLE orders; --"), 422),
        ("sqli-amount", order_json(amount="1; DELETE FROM orders"), 422),
        ("sqli-user-id", order_json(userId="1 OR 1=1"), 422),
    ],
}


@pytest.mark.parametrize("category", list(BAD_ORDER_REQUESTS))
def test_create_order_refuses_bad_input_and_writes_nothing(system: LocalSystem, category: str) -> None:
    # Given one order already stored, and the tables the database holds
    system.create_order()
    tables_before = tables(system)

    for case, body, status in BAD_ORDER_REQUESTS[category]:
        # When a bad request is posted
        response = system.api("POST", "/orders", body)

        # Then it is refused with the error model, nothing is written and every table is still there
        assert_error(response, status, case=case)
        assert system.count("orders") == 1, case
        assert system.count("message_record") == 0, case
        assert tables(system) == tables_before, case
    assert tables_before >= {"orders", "message_record"}


def test_create_order_error_body_names_the_bad_field_without_echoing_input(system: LocalSystem) -> None:
    # Given a request with a bad phone number carrying an injection attempt
    bad_phone = "+86138'; DROP TABLE orders; --"

    # When it is posted
    response = system.api("POST", "/orders", order_json(phone=bad_phone))

    # Then the 422 names the field and does not echo the submitted value back
    assert_error(response, 422, "invalid_request")
    assert [d["field"] for d in response.body["error"]["details"]] == ["phone"]
    assert bad_phone not in json.dumps(response.body)


# --- GET /orders/{id} -------------------------------------------------------------------------------


def test_get_order_returns_status_pay_time_and_amount(system: LocalSystem) -> None:
    # Given an order that was created, read once, then paid
    order = system.create_order()
    before = system.api("GET", f"/orders/{order['orderId']}")
    paid_at = recent_paid_at()
    assert system.pay(order, paid_at=paid_at).status == 200
    take_messages(system.resources.queue_url("PointsQueue"))
    take_messages(system.resources.queue_url("SmsQueue"))

    # When it is read again
    after = system.api("GET", f"/orders/{order['orderId']}")

    # Then the first read showed it unpaid and the second shows it PAID with its pay time and amount
    assert before.status == 200
    assert before.body["status"] == "CREATED"
    assert before.body["payTime"] is None
    assert after.status == 200
    assert after.body["orderId"] == order["orderId"]
    assert after.body["orderNo"] == order["orderNo"]
    assert after.body["status"] == "PAID"
    assert after.body["payTime"] == pay_time_of(paid_at)
    assert after.body["transactionId"] == "txn-1"
    assert after.body["amount"] == "128.50"


UNKNOWN_ORDER_IDS = ["999999", "abc", "-1", "1.5", "1%20OR%201=1", "99999999999999999999999999"]


def test_get_order_answers_404_for_an_id_that_names_no_order(system: LocalSystem) -> None:
    # Given one stored order
    order = system.create_order()
    assert str(order["orderId"]) not in UNKNOWN_ORDER_IDS

    for order_id in UNKNOWN_ORDER_IDS:
        # When an id that is not one of ours is read (unknown, non-numeric, negative, injected, huge)
        response = system.api("GET", f"/orders/{order_id}")

        # Then the answer is a 404 in the error model
        assert_error(response, 404, "order_not_found", case=order_id)


# --- POST /payments/notify: refusals ---------------------------------------------------------------

Builder = Callable[[dict[str, Any]], tuple[str, dict[str, str]]]


def callback(order: dict[str, Any], **changes: Any) -> str:
    document = {
        "orderNo": order["orderNo"],
        "transactionId": "txn-1",
        "amount": order["amount"],
        "currency": order["currency"],
        "paidAt": recent_paid_at(),
        **changes,
    }
    return json.dumps(document)


def signed(body: str) -> tuple[str, dict[str, str]]:
    return body, signed_headers(body)


def signed_at(body: str, seconds_from_now: int) -> dict[str, str]:
    return signed_headers(body, at=int(time.time()) + seconds_from_now)


def with_header(value: str) -> Builder:
    return lambda order: (callback(order), {"X-Signature": value})


RefusedCallback = tuple[str, Builder, int, str]

REFUSED_CALLBACKS: dict[str, list[RefusedCallback]] = {
    "signature": [
        ("missing-signature", lambda o: (callback(o), {}), 401, "invalid_signature"),
        ("empty-signature", with_header(""), 401, "invalid_signature"),
        ("malformed-signature", with_header("not-a-signature"), 401, "invalid_signature"),
        ("non-numeric-timestamp", with_header("t=abc,v1=00"), 401, "invalid_signature"),
        ("no-timestamp", with_header("v1=" + "0" * 64), 401, "invalid_signature"),
        (
            "no-digest",
            lambda o: (callback(o), {"X-Signature": f"t={int(time.time())}"}),
            401,
            "invalid_signature",
        ),
        (
            "wrong-secret",
            lambda o: (callback(o), signed_headers(callback(o), secret="another-secret")),
            401,
            "invalid_signature",
        ),
        (
            "signature-of-another-body",
            lambda o: (callback(o), signed_headers(callback(o, amount="0.01"))),
            401,
            "invalid_signature",
        ),
        (
            "timestamp-301s-old",
            lambda o: (callback(o), signed_at(callback(o), -301)),
            401,
            "invalid_signature",
        ),
        (
            "timestamp-301s-ahead",
            lambda o: (callback(o), signed_at(callback(o), 301)),
            401,
            "invalid_signature",
        ),
    ],
    "unknown-order": [
        ("unknown-order", lambda o: signed(callback(o, orderNo="PO000000000000")), 404, "order_not_found"),
        ("sqli-order-no", lambda o: signed(callback(o, orderNo="' OR '1'='1")), 404, "order_not_found"),
    ],
    "amount-mismatch": [
        ("amount-lower", lambda o: signed(callback(o, amount="128.49")), 409, "amount_mismatch"),
        ("amount-higher", lambda o: signed(callback(o, amount="1285.00")), 409, "amount_mismatch"),
    ],
    "malformed-body": [
        ("malformed-json", lambda o: signed('{"orderNo": "PO1", "amount": '), 400, "malformed_request"),
        ("json-array", lambda o: signed("[]"), 400, "malformed_request"),
        ("oversized-body", lambda o: signed(callback(o, pad="x" * 17_000)), 413, "request_too_large"),
    ],
    "invalid-fields": [
        ("amount-as-float", lambda o: signed(callback(o, amount=128.5)), 422, "invalid_request"),
        ("transaction-id-as-int", lambda o: signed(callback(o, transactionId=12345)), 422, "invalid_request"),
        ("order-no-as-list", lambda o: signed(callback(o, orderNo=["x"])), 422, "invalid_request"),
        ("paid-at-not-a-time", lambda o: signed(callback(o, paidAt="yesterday")), 422, "invalid_request"),
        ("empty-transaction-id", lambda o: signed(callback(o, transactionId="")), 422, "invalid_request"),
        (
            "transaction-id-too-long",
            lambda o: signed(callback(o, transactionId="t" * 65)),
            422,
            "invalid_request",
        ),
        ("amount-zero", lambda o: signed(callback(o, amount="0")), 422, "invalid_request"),
        ("unexpected-field", lambda o: signed(callback(o, status="PAID")), 422, "invalid_request"),
        ("missing-fields", lambda o: signed(json.dumps({"orderNo": o["orderNo"]})), 422, "invalid_request"),
    ],
}


@pytest.mark.parametrize("category", list(REFUSED_CALLBACKS))
def test_notify_refusal_writes_nothing(system: LocalSystem, category: str) -> None:
    # Given an unpaid order
    order = system.create_order()

    for case, build, status, code in REFUSED_CALLBACKS[category]:
        # When the provider's callback is refused
        body, headers = build(order)
        response = system.notify(body, headers)

        # Then the answer carries the error model and neither the order nor the outbox changed
        assert_error(response, status, code, case=case)
        assert_still_unpaid(system, order)
        assert system.queue_depth("PointsQueue") == system.queue_depth("SmsQueue") == 0, case


def test_notify_accepts_a_signature_just_inside_the_tolerance(system: LocalSystem) -> None:
    # Given a callback signed 299 seconds ago (the window is 300)
    order = system.create_order()
    body = callback(order)

    # When it arrives
    response = system.notify(body, signed_headers(body, at=int(time.time()) - 299))

    # Then it is accepted
    assert response.status == 200, response.body
    take_messages(system.resources.queue_url("PointsQueue"))
    take_messages(system.resources.queue_url("SmsQueue"))


def test_notify_with_another_transaction_for_a_paid_order_is_409_and_changes_nothing(
    system: LocalSystem,
) -> None:
    # Given an order paid by txn-1, with its two outbox rows
    order = system.create_order()
    assert system.pay(order, "txn-1").status == 200
    paid_row, rows_before = order_row(system, order["orderId"]), system.outbox_rows()
    take_messages(system.resources.queue_url("PointsQueue"))
    take_messages(system.resources.queue_url("SmsQueue"))

    # When the provider reports the same order paid again by another transaction
    response = system.pay(order, "txn-2")

    # Then it is a conflict and the original payment and its two outbox rows are untouched
    assert_error(response, 409, "already_paid")
    assert order_row(system, order["orderId"]) == paid_row
    assert paid_row["payment_txn_id"] == "txn-1"
    assert system.outbox_rows() == rows_before
    assert len(rows_before) == 2
    assert system.queue_depth("PointsQueue") == system.queue_depth("SmsQueue") == 0


def test_notify_with_a_transaction_already_used_by_another_order_is_409(system: LocalSystem) -> None:
    # Given order A paid by txn-shared, and order B of the same amount unpaid
    first, second = system.create_order(), system.create_order()
    assert system.pay(first, "txn-shared").status == 200
    rows_before = system.outbox_rows()
    take_messages(system.resources.queue_url("PointsQueue"))
    take_messages(system.resources.queue_url("SmsQueue"))

    # When a callback claims that the same transaction paid order B
    response = system.pay(second, "txn-shared")

    # Then it is refused: B stays unpaid and no outbox row was added for it
    assert_error(response, 409, "transaction_already_used")
    row = order_row(system, second["orderId"])
    assert (row["status"], row["payment_txn_id"], row["pay_time"]) == ("CREATED", None, None)
    assert system.outbox_rows() == rows_before
    assert {r["business_key"] for r in rows_before} == {first["orderNo"]}


# --- POST /payments/notify: success -----------------------------------------------------------------


def test_notify_pays_the_order_writes_two_outbox_rows_and_publishes_them_after_commit(
    system: LocalSystem,
) -> None:
    # Given an unpaid order of 128.50
    order = system.create_order(amount="128.50")

    # When the signed success callback arrives
    paid_at = recent_paid_at()
    response = system.pay(order, "txn-1", paid_at)

    # Then the answer is the PAID order
    assert response.status == 200, response.body
    assert response.body["status"] == "PAID"
    assert response.body["transactionId"] == "txn-1"
    assert response.body["payTime"] == pay_time_of(paid_at)
    assert response.body["amount"] == "128.50"
    row = order_row(system, order["orderId"])
    assert row["status"] == "PAID"
    assert row["payment_txn_id"] == "txn-1"
    assert row["pay_time"] == datetime.strptime(paid_at, "%Y-%m-%dT%H:%M:%SZ")

    # And exactly two outbox rows were written in the payment's transaction (same instant as the order)
    rows = system.outbox_rows()
    assert sorted(r["topic"] for r in rows) == ["topic.points", "topic.sms"]
    assert all(r["create_time"] == row["updated_at"] for r in rows)
    assert {r["business_key"] for r in rows} == {order["orderNo"]}
    assert {r["business_type"] for r in rows} == {"ORDER_PAID"}
    assert len({r["message_id"] for r in rows}) == 2

    # And each row's content is the envelope with the seed's payload shapes
    by_topic = {r["topic"]: r for r in rows}
    for topic, r in by_topic.items():
        envelope = json.loads(r["content"])
        assert set(envelope) == ENVELOPE_KEYS
        assert envelope["messageId"] == r["message_id"]
        assert envelope["topic"] == topic
        assert envelope["businessKey"] == order["orderNo"]
        assert envelope["businessType"] == "ORDER_PAID"
        datetime.fromisoformat(envelope["occurredAt"])
    points = json.loads(by_topic["topic.points"]["content"])["payload"]
    assert points == {"userId": 42, "orderId": order["orderId"], "points": 128}
    sms = json.loads(by_topic["topic.sms"]["content"])["payload"]
    assert sms == {"phone": PHONE, "templateId": "ORDER_PAY_SUCCESS", "params": [order["orderNo"], "128.50"]}

    # And the publish right after commit sent both: rows are status 1 and each queue holds its message
    assert [(r["status"], r["retry_count"], r["last_error"]) for r in rows] == [(1, 0, None), (1, 0, None)]
    assert all(r["sent_time"] is not None for r in rows)
    points_messages = take_messages(system.resources.queue_url("PointsQueue"))
    sms_messages = take_messages(system.resources.queue_url("SmsQueue"))
    assert [m["Body"] for m in points_messages] == [by_topic["topic.points"]["content"]]
    assert [m["Body"] for m in sms_messages] == [by_topic["topic.sms"]["content"]]


def test_points_payload_is_the_whole_yuan_of_the_amount(system: LocalSystem) -> None:
    for amount, points in [
        ("128.50", 128),
        ("99.99", 99),
        ("1.00", 1),
        ("0.01", 0),
        ("9999999999.99", 9_999_999_999),
    ]:
        # Given an order of the amount
        order = system.create_order(amount=amount)

        # When it is paid
        assert system.pay(order, f"txn-{amount}").status == 200

        # Then its points message carries the whole yuan of the amount, the fraction dropped
        points_row = next(
            r
            for r in system.outbox_rows()
            if r["topic"] == "topic.points" and r["business_key"] == order["orderNo"]
        )
        assert json.loads(points_row["content"])["payload"]["points"] == points, amount
    take_messages(system.resources.queue_url("PointsQueue"))
    take_messages(system.resources.queue_url("SmsQueue"))


def test_sql_in_a_transaction_id_is_stored_verbatim_and_harmlessly(system: LocalSystem) -> None:
    # Given an unpaid order and a transaction id shaped like an injection
    order = system.create_order()
    transaction_id = "x'); DROP TABLE orders; --"
    tables_before = tables(system)

    # When a signed callback carries it
    response = system.pay(order, transaction_id)

    # Then the order is paid with that exact string and every table is still there
    assert response.status == 200, response.body
    assert order_row(system, order["orderId"])["payment_txn_id"] == transaction_id
    assert tables(system) == tables_before
    assert system.count("message_record") == 2
    take_messages(system.resources.queue_url("PointsQueue"))
    take_messages(system.resources.queue_url("SmsQueue"))


def test_the_same_callback_twice_answers_the_same_and_writes_once(system: LocalSystem) -> None:
    # Given an unpaid order
    order = system.create_order()
    body = notify_body(order["orderNo"], order["amount"], "txn-1")

    # When the provider delivers the same callback twice (re-signed, as a retry would be)
    first = system.notify(body)
    rows_after_first = system.outbox_rows()
    second = system.notify(body, signed_headers(body))

    # Then both answer 200 with the same order, and there are still exactly two outbox rows
    assert first.status == second.status == 200
    assert second.body == first.body
    assert second.body["status"] == "PAID"
    assert system.outbox_rows() == rows_after_first
    assert len(rows_after_first) == 2
    # And nothing was published a second time
    assert len(take_messages(system.resources.queue_url("PointsQueue"))) == 1
    assert len(take_messages(system.resources.queue_url("SmsQueue"))) == 1


def run_at_once(count: int, action: Callable[[int], Any]) -> list[Any]:
    """Start ``count`` threads that call ``action(index)`` together; returns each result or exception."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = action(index)
        except Exception as exc:
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    return results


def test_concurrent_identical_callbacks_pay_once(system: LocalSystem) -> None:
    # Given an unpaid order and one signed callback
    order = system.create_order()
    body = notify_body(order["orderNo"], order["amount"], "txn-1")
    headers = signed_headers(body)

    # When five copies of it hit the handler at the same moment (one container: its single pooled
    # connection queues them; separate containers are raced on the database below)
    results = run_at_once(5, lambda _: system.notify(body, headers))

    # Then every copy answers 200 with the PAID order, and exactly two outbox rows exist
    assert [r.status if isinstance(r, ApiResponse) else r for r in results] == [200] * 5
    assert {r.body["transactionId"] for r in results} == {"txn-1"}
    assert len(system.outbox_rows()) == 2
    assert order_row(system, order["orderId"])["payment_txn_id"] == "txn-1"
    assert len(take_messages(system.resources.queue_url("PointsQueue"))) == 1
    assert len(take_messages(system.resources.queue_url("SmsQueue"))) == 1


@pytest.fixture
def containers(system: LocalSystem) -> Iterator[Callable[[int], list[PaymentService]]]:
    """Payment use cases as separate Lambda containers would hold them: each its own engine."""
    engines: list[Engine] = []

    def build(count: int) -> list[PaymentService]:
        url = system.engine.url.render_as_string(hide_password=False)
        services = []
        for _ in range(count):
            engines.append(make_engine(url))
            factory = make_session_factory(engines[-1])
            services.append(
                PaymentService(
                    lambda f=factory: SqlUnitOfWork(f),
                    SystemClock(),
                    after_commit_lease=timedelta(seconds=60),
                )
            )
        return services

    yield build
    for engine in engines:
        engine.dispose()


def test_concurrent_callbacks_from_separate_containers_are_serialised_by_the_row_lock(
    system: LocalSystem, containers: Callable[[int], list[PaymentService]]
) -> None:
    # Given an unpaid order and five containers, each with its own database connection
    order = system.create_order()
    services = containers(5)
    notice = PaymentNotice(order["orderNo"], "txn-1", Decimal(order["amount"]), PAID_AT, "CNY")

    # When all five take the same callback at the same moment
    results = run_at_once(5, lambda i: services[i].pay_order(notice))

    # Then all succeed with the same payment, and only one wrote the two outbox rows
    assert [type(r).__name__ for r in results] == ["Order"] * 5, results
    assert {r.payment_txn_id for r in results} == {"txn-1"}
    assert len(system.outbox_rows()) == 2


def test_concurrent_callbacks_with_different_transactions_let_exactly_one_pay(
    system: LocalSystem, containers: Callable[[int], list[PaymentService]]
) -> None:
    # Given an unpaid order and five containers
    order = system.create_order()
    services = containers(5)

    def pay(index: int) -> Any:
        notice = PaymentNotice(order["orderNo"], f"txn-{index}", Decimal(order["amount"]), PAID_AT, "CNY")
        return services[index].pay_order(notice)

    # When each reports a different transaction at the same moment
    results = run_at_once(5, pay)

    # Then exactly one wins, the others are conflicts, and only the winner's rows exist
    winners = [r for r in results if not isinstance(r, Exception)]
    assert len(winners) == 1, results
    assert all(isinstance(r, PaymentConflict) for r in results if r not in winners), results
    assert order_row(system, order["orderId"])["payment_txn_id"] == winners[0].payment_txn_id
    assert len(system.outbox_rows()) == 2


def test_two_orders_racing_for_one_transaction_id_let_only_one_pay(
    system: LocalSystem, containers: Callable[[int], list[PaymentService]]
) -> None:
    # Given two unpaid orders and two containers
    orders = [system.create_order(), system.create_order()]
    services = containers(2)

    def pay(index: int) -> Any:
        notice = PaymentNotice(orders[index]["orderNo"], "txn-shared", Decimal("128.50"), PAID_AT, "CNY")
        return services[index].pay_order(notice)

    # When both are reported paid by the same transaction at the same moment
    results = run_at_once(2, pay)

    # Then the unique key lets one through and the other is a conflict with nothing written
    winners = [r for r in results if not isinstance(r, Exception)]
    assert len(winners) == 1, results
    assert [type(r).__name__ for r in results if r not in winners] == ["TransactionAlreadyUsed"]
    rows = system.outbox_rows()
    assert len(rows) == 2
    assert {r["business_key"] for r in rows} == {winners[0].order_no}


# --- failures around the commit ---------------------------------------------------------------------


class Spy:
    def __init__(self) -> None:
        self.calls = 0


@pytest.mark.parametrize("failure_point", ["after-outbox-insert", "at-commit"])
def test_seed_bug_nothing_published_when_payment_transaction_rolls_back(
    system: LocalSystem, monkeypatch: pytest.MonkeyPatch, failure_point: str
) -> None:
    # Given an unpaid order, and a payment transaction that fails after its outbox rows were added
    order = system.create_order()
    inserted = Spy()
    original_add_all = SqlOutboxRepository.add_all
    original_commit = SqlUnitOfWork.commit

    def add_all_then_fail(self: SqlOutboxRepository, messages: Sequence[OutboxMessage]) -> None:
        original_add_all(self, messages)
        inserted.calls += 1
        if failure_point == "after-outbox-insert":
            raise RuntimeError("database went away")

    def commit_fails(self: SqlUnitOfWork) -> None:
        if inserted.calls:
            raise RuntimeError("commit failed")
        original_commit(self)

    monkeypatch.setattr(SqlOutboxRepository, "add_all", add_all_then_fail)
    monkeypatch.setattr(SqlUnitOfWork, "commit", commit_fails)
    after_commit, sns_publish = Spy(), Spy()
    original_after_commit, original_publish = RelayAfterCommitPublisher.__call__, SnsPublisher.publish

    def counting_after_commit(self: RelayAfterCommitPublisher, messages: Sequence[OutboxMessage]) -> None:
        after_commit.calls += 1
        original_after_commit(self, messages)

    def counting_publish(self: SnsPublisher, messages: Sequence[OutboxMessage]) -> Any:
        sns_publish.calls += 1
        return original_publish(self, messages)

    monkeypatch.setattr(RelayAfterCommitPublisher, "__call__", counting_after_commit)
    monkeypatch.setattr(SnsPublisher, "publish", counting_publish)

    # When the success callback is processed
    with pytest.raises(RuntimeError):
        system.pay(order)

    # Then the rows had been added, but the rollback left the order unpaid and no outbox row behind
    assert inserted.calls == 1
    assert_still_unpaid(system, order)
    # And nothing was published: no after-commit call, no SNS publish, both queues empty
    assert after_commit.calls == 0
    assert sns_publish.calls == 0
    assert system.queue_depth("PointsQueue") == 0
    assert system.queue_depth("SmsQueue") == 0
    # And, the fault gone, a relay run finds nothing to send either
    monkeypatch.setattr(SqlUnitOfWork, "commit", original_commit)
    monkeypatch.setattr(SqlOutboxRepository, "add_all", original_add_all)
    assert system.run_relay()["claimed"] == 0

    # When the provider retries the callback with the fault gone
    assert system.pay(order).status == 200

    # Then this time the same spies see the one after-commit publish of the two committed rows
    assert after_commit.calls == 1
    assert sns_publish.calls == 1
    assert [r["status"] for r in system.outbox_rows()] == [1, 1]
    assert len(take_messages(system.resources.queue_url("PointsQueue"))) == 1
    assert len(take_messages(system.resources.queue_url("SmsQueue"))) == 1


def test_failed_after_commit_publish_still_answers_200_and_leaves_rows_to_the_relay(
    system: LocalSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an unpaid order and SNS refusing the publish (the topic the API points at does not exist)
    order = system.create_order()
    topic_arn = system.resources.refs["OrderEventsTopic"]
    set_function_env(system, monkeypatch, "PaymentApiFunction", "ORDER_EVENTS_TOPIC_ARN", f"{topic_arn}-gone")

    # When the success callback is processed
    started = utc_now()
    response = system.pay(order)

    # Then the payment still answers 200 PAID
    assert response.status == 200, response.body
    assert response.body["status"] == "PAID"
    # And both rows wait for the relay: pending, one attempt counted, the error kept, due again soon
    rows = system.outbox_rows()
    assert len(rows) == 2
    for row in rows:
        assert row["status"] == 0
        assert row["retry_count"] == 1
        assert row["last_error"]
        assert row["sent_time"] is None
        assert (
            started
            < row["next_retry_at"]
            <= utc_now() + timedelta(seconds=OutboxSettings().outbox_backoff_max_seconds)
        )
    assert system.queue_depth("PointsQueue") == system.queue_depth("SmsQueue") == 0

    # When SNS is reachable again and the rows are due, the relay runs
    set_function_env(system, monkeypatch, "PaymentApiFunction", "ORDER_EVENTS_TOPIC_ARN", topic_arn)
    make_outbox_due(system)
    report = system.run_relay()

    # Then it delivers both, and the consumers apply them
    assert report["published"] == 2
    assert [(r["status"], r["last_error"]) for r in system.outbox_rows()] == [(1, None), (1, None)]
    system.drain_consumers()
    assert system.points_balance(42) == 128
    assert len(system.sms_deliveries()) == 1


def test_crash_after_commit_before_after_commit_publish_leaves_rows_to_the_relay_after_the_lease(
    system: LocalSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an unpaid order, and a process that dies right after the payment commit
    order = system.create_order()

    def dies(self: RelayAfterCommitPublisher, messages: Sequence[OutboxMessage]) -> None:
        raise ProcessKilled

    monkeypatch.setattr(RelayAfterCommitPublisher, "__call__", dies)

    # When the success callback is processed
    before = utc_now()
    with pytest.raises(ProcessKilled):
        system.pay(order)
    after = utc_now()

    # Then the payment is committed, and its rows are pending, untried, held until the after-commit lease ends
    assert order_row(system, order["orderId"])["status"] == "PAID"
    lease = timedelta(seconds=OutboxSettings().outbox_lease_seconds)
    rows = system.outbox_rows()
    assert len(rows) == 2
    for row in rows:
        assert (row["status"], row["retry_count"], row["last_error"]) == (0, 0, None)
        assert before + lease <= row["next_retry_at"] <= after + lease
    assert system.queue_depth("PointsQueue") == system.queue_depth("SmsQueue") == 0

    # And a relay run before the lease ends leaves them alone
    assert system.run_relay()["claimed"] == 0

    # When the lease has passed and the relay runs
    make_outbox_due(system)
    report = system.run_relay()
    system.drain_consumers()

    # Then both are delivered and the points credited once
    assert report["published"] == 2
    assert [r["status"] for r in system.outbox_rows()] == [1, 1]
    assert system.points_balance(42) == 128
    assert len(system.ledger_entries(42)) == 1
    assert len(system.sms_deliveries()) == 1


def test_crash_after_publish_before_marking_sent_is_redelivered_and_applied_once(
    system: LocalSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an unpaid order, and a process that dies after SNS took the messages but before marking them
    from moto.sns.models import sns_backends

    order = system.create_order()
    original_mark_sent = SqlOutboxRepository.mark_sent

    def dies(self: SqlOutboxRepository, message_ids: Sequence[str], *, now: datetime) -> int:
        raise ProcessKilled

    monkeypatch.setattr(SqlOutboxRepository, "mark_sent", dies)
    with pytest.raises(ProcessKilled):
        system.pay(order)
    monkeypatch.setattr(SqlOutboxRepository, "mark_sent", original_mark_sent)
    assert system.queue_depth("PointsQueue") == system.queue_depth("SmsQueue") == 1
    assert [r["status"] for r in system.outbox_rows()] == [0, 0]

    # When the provider retries the callback, the lease passes and the relay publishes the rows again
    assert system.pay(order).status == 200
    assert len(system.outbox_rows()) == 2
    make_outbox_due(system)
    assert system.run_relay()["published"] == 2
    assert system.queue_depth("PointsQueue") == system.queue_depth("SmsQueue") == 2
    system.drain_consumers()

    # Then the duplicates are absorbed: one ledger entry, points once, one SMS
    assert system.points_balance(42) == 128
    assert len(system.ledger_entries(42)) == 1
    assert len(system.sms_deliveries()) == 1
    assert len(sns_backends["123456789012"]["us-east-1"].sms_messages) == 1
    assert system.queue_depth("PointsQueue") == system.queue_depth("SmsQueue") == 0


def test_with_stream_order_the_after_commit_publish_leaves_a_row_behind_a_pending_one_to_the_relay(
    system: LocalSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a payment API configured for per-stream order, and an order whose points stream already
    # holds an earlier pending message (waiting for a later retry)
    set_function_env(system, monkeypatch, "PaymentApiFunction", "OUTBOX_ORDERED_BY_KEY", "true")
    order = system.create_order()
    five_minutes = timedelta(minutes=5)
    earlier = outbox_message(
        "earlier-points",
        business_key=order["orderNo"],
        topic=TOPIC_POINTS,
        now=utc_now() - five_minutes,
        due_at=utc_now() + five_minutes,
    )
    with configured_database() as database, database.unit_of_work() as tx:
        tx.outbox.add_all([earlier])
        tx.commit()

    # When the order is paid
    assert system.pay(order).status == 200

    # Then the after-commit publish sent the SMS message but held the points message back, due now,
    # for the relay to claim once the earlier one is sent
    rows = {row["topic"]: row for row in system.outbox_rows() if row["message_id"] != "earlier-points"}
    assert rows["topic.sms"]["status"] == 1
    assert rows["topic.points"]["status"] == 0
    assert rows["topic.points"]["next_retry_at"] <= utc_now()
    assert system.queue_depth("SmsQueue") == 1
    assert system.queue_depth("PointsQueue") == 0


# --- metrics on both publish paths ---------------------------------------------------------------------


def emf_metric_sums(stdout: str, service: str) -> dict[str, float]:
    sums: dict[str, float] = {}
    for line in stdout.splitlines():
        if not (line.startswith("{") and '"_aws"' in line):
            continue
        document = json.loads(line)
        if document.get("service") != service:
            continue
        for metric in document["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
            value = document[metric["Name"]]
            sums[metric["Name"]] = sums.get(metric["Name"], 0.0) + float(
                sum(value) if isinstance(value, list) else value
            )
    return sums


def test_messages_published_after_commit_are_counted_by_the_payment_api(
    system: LocalSystem, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given an unpaid order
    order = system.create_order()
    capsys.readouterr()

    # When it is paid and the after-commit path publishes both its messages
    assert system.pay(order).status == 200
    stdout = capsys.readouterr().out

    # Then the payment API's EMF document counts them as MessagesPublished (service payment-api)
    assert emf_metric_sums(stdout, "payment-api")["MessagesPublished"] == 2.0
    # And the relay, finding nothing left, counts none: each message is counted once, by its path
    capsys.readouterr()
    system.run_relay()
    assert emf_metric_sums(capsys.readouterr().out, "outbox-relay")["MessagesPublished"] == 0.0
    take_messages(system.resources.queue_url("PointsQueue"))
    take_messages(system.resources.queue_url("SmsQueue"))


def test_the_dashboard_adds_both_publish_paths() -> None:
    # The dashboard's published line is the sum of the relay's and the after-commit path's series
    from tests.support import ROOT

    template = (ROOT / "template.yaml").read_text()
    assert '"MessagesPublished", "service", "outbox-relay", {"id": "relay"' in template
    assert '"MessagesPublished", "service", "payment-api", {"id": "afterCommit"' in template
    assert '"expression": "SUM([relay, afterCommit])"' in template
