"""The local stack with ``--caller-identity cognito``: the order routes take a user's token (signed by
the stack's key, published as a JWKS) as a Cognito user-pool authorizer would, the user is the token's
subject, and the admin routes still take SigV4 only. Another user's order is invisible (404, exactly
like a missing one) and no order can be created for another user."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.integration.test_local_stack import ROOT, RunningStack, start_stack

pytestmark = pytest.mark.integration

PHONE = "+8613812345678"


@pytest.fixture(scope="module")
def cognito_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    folder = tmp_path_factory.mktemp("cognito-stack")
    running = start_stack(folder / "data", folder / "stack.log", "--caller-identity", "cognito")
    try:
        yield running
    finally:
        running.stop()


def token(stack: RunningStack, user: str) -> str:
    """What `payment-outbox token --user U` prints for this stack."""
    printed = subprocess.run(  # noqa: S603 - fixed argv
        [
            sys.executable,
            "-m",
            "payment_outbox_dev.cli",
            "token",
            "--user",
            user,
            "--data-dir",
            str(stack.data_dir),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return printed.stdout.strip()


def as_user(stack: RunningStack, user: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    text = None if body is None else json.dumps(body)
    return stack.http(method, path, text, {"Authorization": token(stack, user)}, signed=False)


def order_for(user_id: int) -> dict[str, Any]:
    return {"userId": user_id, "phone": PHONE, "amount": "10.00"}


def test_the_printed_token_verifies_with_the_published_jwks(cognito_stack: RunningStack) -> None:
    status, jwks = cognito_stack.http("GET", "/_local/jwks.json", signed=False)
    assert status == 200
    decoded = jwt.decode(token(cognito_stack, "42"), KeySet.import_key_set(jwks), algorithms=["RS256"])
    assert decoded.claims["sub"] == "42"
    assert all("d" not in key for key in jwks["keys"])


def test_a_user_creates_and_reads_its_own_order(cognito_stack: RunningStack) -> None:
    status, order = as_user(cognito_stack, "42", "POST", "/orders", order_for(42))
    assert status == 201, order
    assert as_user(cognito_stack, "42", "GET", f"/orders/{order['orderId']}") == (200, order)


def orders_of(stack: RunningStack) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{stack.data_dir / 'payment_outbox.db'}?mode=ro", uri=True) as conn:
        return sorted(conn.execute("SELECT * FROM orders").fetchall())


def test_no_order_is_created_for_another_user(cognito_stack: RunningStack) -> None:
    # Given the orders as they are
    before = orders_of(cognito_stack)
    # When user 7 asks for an order of user 42
    status, answer = as_user(cognito_stack, "7", "POST", "/orders", order_for(42))
    # Then it is refused and nothing is written
    assert (status, answer["error"]["code"]) == (403, "user_not_caller")
    assert orders_of(cognito_stack) == before


def test_another_users_order_is_invisible_exactly_like_a_missing_one(cognito_stack: RunningStack) -> None:
    _, order = as_user(cognito_stack, "42", "POST", "/orders", order_for(42))
    other = as_user(cognito_stack, "7", "GET", f"/orders/{order['orderId']}")
    missing_id = order["orderId"] + 10_000
    missing = as_user(cognito_stack, "7", "GET", f"/orders/{missing_id}")
    assert other == (
        404,
        {"error": {"code": "order_not_found", "message": f"order {order['orderId']} not found"}},
    )
    assert missing == (
        404,
        {"error": {"code": "order_not_found", "message": f"order {missing_id} not found"}},
    )


@pytest.mark.parametrize("authorization", [None, "not-a-token", "Bearer x.y.z"])
def test_the_order_routes_refuse_a_request_without_a_valid_token(
    cognito_stack: RunningStack, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    for method, path, body in (("POST", "/orders", json.dumps(order_for(42))), ("GET", "/orders/1", None)):
        assert cognito_stack.http(method, path, body, headers, signed=False) == (
            401,
            {"message": "Unauthorized"},
        )


def test_the_order_routes_take_no_sigv4_and_the_admin_routes_no_token(cognito_stack: RunningStack) -> None:
    # SigV4 on an order route is no token: 401
    assert cognito_stack.http("GET", "/orders/1")[0] == 401
    # A token on an admin route is no SigV4: 403, while SigV4 there is served
    assert as_user(cognito_stack, "42", "GET", "/admin/stats")[0] == 403
    assert cognito_stack.http("GET", "/admin/stats")[0] == 200


def test_the_callback_stays_open_and_answers_for_itself(cognito_stack: RunningStack) -> None:
    status, answer = cognito_stack.http("POST", "/payments/notify", "{}", signed=False)
    assert (status, answer["error"]["code"]) == (401, "invalid_signature")
