"""The local stack's authorizers, as API Gateway's: SigV4 against the local credentials (recomputed with
botocore), tokens signed by the local key for the cognito order routes, open routes passed through."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from payment_outbox_dev.checks.template import Route, api_routes, load_template
from payment_outbox_dev.local.auth import (
    AUTH_FILE,
    BAD_SIGNATURE,
    CLIENT_ID,
    EXPIRED_TOKEN,
    ISSUER,
    KEY_ID,
    MISSING_TOKEN,
    UNAUTHORIZED,
    UNKNOWN_KEY,
    LocalAuthorizer,
    LocalCredentials,
    Principal,
    Refusal,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]

URL = "http://127.0.0.1:3000"
ORDERS = Route("POST", "/orders", "PaymentApiFunction", authorized=True)
ORDER = Route("GET", "/orders/{orderId}", "PaymentApiFunction", authorized=True)
ADMIN = Route("GET", "/admin/stats", "AdminApiFunction", authorized=True)
NOTIFY = Route("POST", "/payments/notify", "PaymentApiFunction", authorized=False)
BODY = b'{"userId": 42, "phone": "+8613812345678", "amount": "1.00"}'


@pytest.fixture(scope="module")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> LocalCredentials:
    return LocalCredentials.load_or_create(tmp_path_factory.mktemp("stack"))


def _signed(credentials: LocalCredentials, method: str, path: str, body: bytes = b"") -> dict[str, str]:
    return credentials.sign(method, URL + path, body, {"Content-Type": "application/json"})


# --- iam: SigV4 -------------------------------------------------------------------------------------


def test_a_request_signed_by_the_local_credentials_passes_as_their_caller(
    credentials: LocalCredentials,
) -> None:
    headers = _signed(credentials, "POST", "/orders", BODY)
    decided = LocalAuthorizer(credentials, "iam").verify(ORDERS, "POST", URL + "/orders", headers, BODY)
    assert isinstance(decided, Principal)
    assert decided.mode == "iam"
    assert decided.identity["accessKey"] == credentials.access_key_id


def test_a_signed_query_passes_with_its_own_encoding(credentials: LocalCredentials) -> None:
    target = "/admin/messages?status=failed&limit=5&from=2026-11-27T10%3A15%3A00Z"
    headers = _signed(credentials, "GET", target)
    decided = LocalAuthorizer(credentials, "iam").verify(ADMIN, "GET", URL + target, headers, b"")
    assert isinstance(decided, Principal)


def test_without_credentials_the_iam_routes_are_403_missing_authentication_token(
    credentials: LocalCredentials,
) -> None:
    authorizer = LocalAuthorizer(credentials, "iam")
    for route in (ORDERS, ADMIN):
        assert authorizer.verify(route, route.method, URL + route.path, {}, b"") == Refusal(
            403, MISSING_TOKEN
        )


def test_a_changed_body_path_or_method_breaks_the_signature(credentials: LocalCredentials) -> None:
    authorizer = LocalAuthorizer(credentials, "iam")
    headers = _signed(credentials, "POST", "/orders", BODY)
    tampered = BODY.replace(b"42", b"43")
    assert authorizer.verify(ORDERS, "POST", URL + "/orders", headers, tampered) == Refusal(
        403, BAD_SIGNATURE
    )
    assert authorizer.verify(ORDERS, "POST", URL + "/orders?x=1", headers, BODY) == Refusal(
        403, BAD_SIGNATURE
    )
    assert authorizer.verify(ORDERS, "PUT", URL + "/orders", headers, BODY) == Refusal(403, BAD_SIGNATURE)


def test_other_credentials_are_refused(credentials: LocalCredentials, tmp_path: Path) -> None:
    stranger = LocalCredentials.load_or_create(tmp_path)
    headers = _signed(stranger, "GET", "/admin/stats")
    decided = LocalAuthorizer(credentials, "iam").verify(ADMIN, "GET", URL + "/admin/stats", headers, b"")
    assert decided == Refusal(403, UNKNOWN_KEY)


def test_a_signature_older_than_15_minutes_is_refused(credentials: LocalCredentials) -> None:
    headers = _signed(credentials, "GET", "/admin/stats")
    later = time.time() + 16 * 60
    decided = LocalAuthorizer(credentials, "iam").verify(
        ADMIN, "GET", URL + "/admin/stats", headers, b"", now=later
    )
    assert isinstance(decided, Refusal) and decided.status == 403
    assert decided.message.startswith("Signature expired")


def test_a_malformed_authorization_header_is_403(credentials: LocalCredentials) -> None:
    decided = LocalAuthorizer(credentials, "iam").verify(
        ADMIN, "GET", URL + "/admin/stats", {"Authorization": "AWS4-HMAC-SHA256 nonsense"}, b""
    )
    assert isinstance(decided, Refusal) and decided.status == 403


def test_in_cognito_mode_the_admin_routes_still_take_sigv4(credentials: LocalCredentials) -> None:
    authorizer = LocalAuthorizer(credentials, "cognito")
    token = credentials.token("42")
    refused = authorizer.verify(ADMIN, "GET", URL + "/admin/stats", {"Authorization": token}, b"")
    assert refused == Refusal(
        403, "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature'."
    )
    assert authorizer.mode_of(ADMIN) == "iam"
    assert authorizer.mode_of(ORDERS) == authorizer.mode_of(ORDER) == "cognito"


# --- cognito: tokens ----------------------------------------------------------------------------------


def test_a_local_token_passes_with_its_claims_for_the_function(credentials: LocalCredentials) -> None:
    decided = LocalAuthorizer(credentials, "cognito").verify(
        ORDER, "GET", URL + "/orders/1", {"Authorization": credentials.token("42")}, b""
    )
    assert isinstance(decided, Principal)
    assert decided.authorizer is not None
    claims = decided.authorizer["claims"]
    assert (claims["sub"], claims["token_use"], claims["iss"]) == ("42", "id", ISSUER)
    assert all(isinstance(value, str) for value in claims.values())


def test_the_jwks_publishes_the_public_key_only(credentials: LocalCredentials) -> None:
    (key,) = credentials.jwks()["keys"]
    assert (key["kid"], key["alg"], key["kty"]) == (KEY_ID, "RS256", "RSA")
    assert "d" not in key and "p" not in key


@pytest.mark.parametrize("header", [None, "", "Bearer", "not-a-token", "eyJhbGciOiJub25lIn0.e30."])
def test_no_token_or_no_valid_token_is_401(credentials: LocalCredentials, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    decided = LocalAuthorizer(credentials, "cognito").verify(ORDERS, "POST", URL + "/orders", headers, BODY)
    assert decided == Refusal(401, UNAUTHORIZED)


def test_a_token_signed_by_another_key_is_401(credentials: LocalCredentials) -> None:
    other = RSAKey.generate_key(2048, parameters={"kid": KEY_ID, "alg": "RS256"}, private=True)
    claims = {"sub": "42", "iss": ISSUER, "aud": CLIENT_ID, "token_use": "id", "exp": int(time.time()) + 60}
    forged = jwt.encode({"alg": "RS256", "kid": KEY_ID}, claims, other)
    decided = LocalAuthorizer(credentials, "cognito").verify(
        ORDERS, "POST", URL, {"Authorization": forged}, b""
    )
    assert decided == Refusal(401, UNAUTHORIZED)


def test_an_expired_token_is_401(credentials: LocalCredentials) -> None:
    expired = credentials.token("42", seconds=60, now=time.time() - 120)
    decided = LocalAuthorizer(credentials, "cognito").verify(
        ORDERS, "POST", URL, {"Authorization": expired}, b""
    )
    assert decided == Refusal(401, EXPIRED_TOKEN)


def test_a_sigv4_request_is_no_token_for_a_cognito_route(credentials: LocalCredentials) -> None:
    headers = _signed(credentials, "POST", "/orders", BODY)
    decided = LocalAuthorizer(credentials, "cognito").verify(ORDERS, "POST", URL + "/orders", headers, BODY)
    assert decided == Refusal(401, UNAUTHORIZED)


# --- open routes and the credentials file -------------------------------------------------------------


def test_the_callback_is_open_to_anyone(credentials: LocalCredentials) -> None:
    for mode in ("iam", "cognito"):
        decided = LocalAuthorizer(credentials, mode).verify(NOTIFY, "POST", URL + "/payments/notify", {}, b"")  # type: ignore[arg-type]
        assert decided == Principal("open")


def test_the_credentials_are_kept_for_their_owner_and_come_back(tmp_path: Path) -> None:
    first = LocalCredentials.load_or_create(tmp_path)
    again = LocalCredentials.load_or_create(tmp_path)
    assert (again.access_key_id, again.secret_access_key) == (first.access_key_id, first.secret_access_key)
    assert (tmp_path / AUTH_FILE).stat().st_mode & 0o777 == 0o600
    # A token made by one reader verifies with the key the other read
    decided = LocalAuthorizer(again, "cognito").verify(
        ORDERS, "POST", URL, {"Authorization": first.token("7")}, b""
    )
    assert isinstance(decided, Principal) and decided.name == "7"


def test_the_templates_routes_are_authorised_as_its_definition_says() -> None:
    # Given the template, whose order routes take their authorizer from the API's own definition
    routes = api_routes(load_template(ROOT / "template.yaml"))
    # Then every route is authorised but the signed callback, and the local authorizer checks the
    # order routes as CallerIdentity says and every other one with SigV4
    assert {(r.method, r.path) for r in routes if not r.authorized} == {("POST", "/payments/notify")}
    credentials = LocalCredentials(
        "AKLOCALTEST", "secret", RSAKey.generate_key(2048, parameters={"kid": KEY_ID}, private=True)
    )
    for mode in ("iam", "cognito"):
        authorizer = LocalAuthorizer(credentials, mode)  # type: ignore[arg-type]
        for route in routes:
            expected = "open" if not route.authorized else mode if route.path.startswith("/orders") else "iam"
            assert authorizer.mode_of(route) == expected, (mode, route)
