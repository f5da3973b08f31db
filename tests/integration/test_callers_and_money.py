"""Who may act for whom, and money per currency, through the real handler on the demo's SQLite and on
MariaDB alike: in ``cognito`` mode a user creates orders only for itself and sees only its own (another
user's order answers exactly like a missing one); an order's currency must be one the deployment
accepts, the callback must name it, and points follow the currency's rule. Every refusal writes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from payment_outbox.adapters.db.migration import upgrade
from payment_outbox_dev.local.harness import ApiResponse
from tests.support import LocalSystem, recent_paid_at, signed_headers

pytestmark = pytest.mark.integration

PHONE = "+8613812345678"
TABLES = ("orders", "message_record", "outbox_audit")
MONEY = {"ACCEPTED_CURRENCIES": "CNY,USD", "POINTS_PER_UNIT": "CNY:1,USD:7"}


def _system(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    environment: dict[str, str],
) -> Iterator[LocalSystem]:
    if request.param == "sqlite":
        engine = create_engine(f"sqlite:///{tmp_path / 'callers.db'}")
        upgrade(engine)
    else:
        engine = request.getfixturevalue("db")
    yield LocalSystem.start(engine, monkeypatch, environment=environment)
    if request.param == "sqlite":
        engine.dispose()


@pytest.fixture(params=["sqlite", "mariadb"])
def cognito(
    request: pytest.FixtureRequest, aws: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LocalSystem]:
    """The whole system with CALLER_IDENTITY=cognito."""
    yield from _system(request, tmp_path, monkeypatch, {"CALLER_IDENTITY": "cognito"})


@pytest.fixture(params=["sqlite", "mariadb"])
def money(
    request: pytest.FixtureRequest, aws: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LocalSystem]:
    """The whole system accepting CNY (1 point per yuan) and USD (7 points per dollar)."""
    yield from _system(request, tmp_path, monkeypatch, MONEY)


def snapshot(system: LocalSystem) -> dict[str, list[tuple[Any, ...]]]:
    with system.engine.connect() as conn:
        return {
            table: sorted(tuple(r) for r in conn.execute(text(f"SELECT * FROM {table}")))  # noqa: S608
            for table in TABLES
        }


def create(system: LocalSystem, *, user: str | None = None, **fields: Any) -> ApiResponse:
    document = {"userId": 42, "phone": PHONE, "amount": "128.50", **fields}
    return system.api("POST", "/orders", json.dumps(document), user=user)


def callback(system: LocalSystem, order: dict[str, Any], **changes: Any) -> ApiResponse:
    document = {
        "orderNo": order["orderNo"],
        "transactionId": f"txn-{order['orderNo']}",
        "amount": order["amount"],
        "currency": order["currency"],
        "paidAt": recent_paid_at(),
        **changes,
    }
    document = {k: v for k, v in document.items() if v is not None}
    body = json.dumps(document)
    return system.api("POST", "/payments/notify", body, signed_headers(body))


def assert_refused(response: ApiResponse, status: int, code: str, case: object) -> None:
    assert response.status == status, (case, response.status, response.body)
    assert response.body["error"]["code"] == code, (case, response.body)


def points_of(system: LocalSystem, order: dict[str, Any]) -> int:
    rows = [
        r
        for r in system.outbox_rows()
        if r["business_key"] == order["orderNo"] and r["topic"] == "topic.points"
    ]
    assert len(rows) == 1
    points: int = json.loads(rows[0]["content"])["payload"]["points"]
    return points


# --- cognito: callers bound to users ----------------------------------------------------------------


def test_a_user_creates_an_order_for_itself(cognito: LocalSystem) -> None:
    # Given user 42's token / When it creates an order for user 42 / Then it is created for 42
    response = create(cognito, user="42", userId=42)
    assert response.status == 201, response.body
    assert response.body["userId"] == 42


def test_no_order_is_created_for_another_user_and_nothing_is_written(cognito: LocalSystem) -> None:
    # Given user 7's token and the tables as they are
    before = snapshot(cognito)
    # When it asks for an order of user 42
    response = create(cognito, user="7", userId=42)
    # Then it is refused as forbidden, and nothing is written
    assert_refused(response, 403, "user_not_caller", "another user")
    assert response.body["error"]["details"] == [
        {"field": "userId", "problem": "must be the authenticated user"}
    ]
    assert snapshot(cognito) == before


@pytest.mark.parametrize(
    ("user", "status", "code"), [(None, 401, "unauthenticated"), ("a-uuid", 403, "user_not_caller")]
)
def test_a_request_without_a_user_is_refused_and_writes_nothing(
    cognito: LocalSystem, user: str | None, status: int, code: str
) -> None:
    before = snapshot(cognito)
    assert_refused(create(cognito, user=user), status, code, user)
    assert snapshot(cognito) == before


def test_another_users_order_answers_exactly_like_a_missing_one(cognito: LocalSystem) -> None:
    # Given an order of user 42, and an id no order has
    order = create(cognito, user="42").body
    missing = order["orderId"] + 1000
    # When user 42, then user 7, then user 7 for the missing id read them
    own = cognito.api("GET", f"/orders/{order['orderId']}", user="42")
    other = cognito.api("GET", f"/orders/{order['orderId']}", user="7")
    absent = cognito.api("GET", f"/orders/{missing}", user="7")
    # Then the owner sees it; to anyone else it is 404 with the very body a missing order has
    assert (own.status, own.body) == (200, order)
    assert other.status == absent.status == 404
    assert other.body == {
        "error": {"code": "order_not_found", "message": f"order {order['orderId']} not found"}
    }
    assert absent.body == {"error": {"code": "order_not_found", "message": f"order {missing} not found"}}
    assert other.headers == absent.headers


def test_in_iam_mode_the_trusted_service_acts_for_any_user(any_iam: LocalSystem) -> None:
    # Given the default mode (iam) / When the service creates and reads orders of two users
    first = create(any_iam, userId=42).body
    second = create(any_iam, userId=7).body
    # Then both are created and readable
    for order in (first, second):
        assert any_iam.api("GET", f"/orders/{order['orderId']}").body == order


@pytest.fixture
def any_iam(aws: None, db: Any, monkeypatch: pytest.MonkeyPatch) -> LocalSystem:
    return LocalSystem.start(db, monkeypatch)


# --- money per currency -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("currency", "amount", "points"), [("CNY", "128.50", 128), ("USD", "2.50", 14), ("USD", "0.99", 0)]
)
def test_an_accepted_currency_is_paid_and_earns_its_rate(
    money: LocalSystem, currency: str, amount: str, points: int
) -> None:
    # Given an order in an accepted currency
    order = create(money, currency=currency, amount=amount).body
    assert order["currency"] == currency
    # When it is paid in that currency
    paid = callback(money, order)
    # Then it is PAID and its points message carries the currency's points
    assert paid.status == 200, paid.body
    assert points_of(money, order) == points


@pytest.mark.parametrize(
    ("currency", "status", "code"),
    [
        ("EUR", 422, "currency_not_accepted"),
        ("JPY", 422, "currency_not_accepted"),
        ("usd", 422, "invalid_request"),
    ],
)
def test_an_order_in_a_currency_not_accepted_is_refused_and_writes_nothing(
    money: LocalSystem, currency: str, status: int, code: str
) -> None:
    before = snapshot(money)
    response = create(money, currency=currency)
    assert_refused(response, status, code, currency)
    assert snapshot(money) == before


def refused_callbacks() -> list[tuple[str, dict[str, Any], int, str]]:
    return [
        ("currency-missing", {"currency": None}, 422, "invalid_request"),
        ("currency-not-accepted", {"currency": "EUR"}, 422, "currency_not_accepted"),
        ("currency-accepted-but-not-the-orders", {"currency": "USD"}, 409, "currency_mismatch"),
        ("currency-lower-case", {"currency": "cny"}, 422, "invalid_request"),
    ]


def test_callbacks_that_do_not_name_the_orders_accepted_currency_are_refused_and_write_nothing(
    money: LocalSystem,
) -> None:
    # Given an unpaid CNY order and the tables as they are
    order = create(money, currency="CNY").body
    before = snapshot(money)
    for case, changes, status, code in refused_callbacks():
        # When a signed callback names no currency, one not accepted, or another than the order's
        response = callback(money, order, **changes)
        # Then it is refused with its own code, and nothing is written
        assert_refused(response, status, code, case)
        assert snapshot(money) == before, case
    missing = callback(money, order, currency=None)
    assert missing.body["error"]["details"][0]["field"] == "currency"
