"""Who may act for whom: the caller a request context names, and what that caller may do."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from payment_outbox.adapters.secrets import webhook_secrets
from payment_outbox.api.http import status_for
from payment_outbox.api.payments import CallerIdentification
from payment_outbox.domain.callers import Caller
from payment_outbox.domain.orders import new_order
from payment_outbox.errors import ConfigurationError, ForbiddenForCaller, Unauthenticated
from payment_outbox.settings import CallerSettings, WebhookSettings

pytestmark = pytest.mark.unit

ORDER = replace(
    new_order(
        order_no="PO1",
        user_id=42,
        phone="+8613812345678",
        amount=Decimal("1.00"),
        currency="CNY",
        now=datetime(2026, 11, 27),
    ),
    id=1,
)


def _context(claims: dict[str, Any] | None) -> dict[str, Any]:
    return {"requestId": "r", "authorizer": None if claims is None else {"claims": claims}}


def test_in_iam_mode_the_caller_is_a_trusted_service_whatever_the_context_says() -> None:
    caller = CallerIdentification("iam")(_context({"sub": "7"}))
    assert caller == Caller.trusted_service()
    caller.require_may_act_for(42)
    assert caller.may_see(ORDER)


def test_in_cognito_mode_the_caller_is_the_user_the_tokens_subject_names() -> None:
    caller = CallerIdentification("cognito")(_context({"sub": "42", "token_use": "id"}))
    assert caller == Caller.user(42)
    caller.require_may_act_for(42)
    assert caller.may_see(ORDER)


def test_another_users_order_is_invisible_and_no_order_is_made_for_another_user() -> None:
    caller = CallerIdentification("cognito")(_context({"sub": "7"}))
    assert not caller.may_see(ORDER)
    with pytest.raises(ForbiddenForCaller) as refused:
        caller.require_may_act_for(42)
    assert (refused.value.code, status_for(refused.value)) == ("user_not_caller", 403)


def test_the_user_claim_is_configurable() -> None:
    caller = CallerIdentification("cognito", "custom:userId")(
        _context({"sub": "a-uuid", "custom:userId": "42"})
    )
    assert caller == Caller.user(42)


@pytest.mark.parametrize(
    "context", [None, {}, _context(None), _context({}), _context({"sub": ""}), {"authorizer": "x"}]
)
def test_in_cognito_mode_no_claims_is_unauthenticated(context: dict[str, Any] | None) -> None:
    with pytest.raises(Unauthenticated) as refused:
        CallerIdentification("cognito")(context)
    assert (refused.value.code, status_for(refused.value)) == ("unauthenticated", 401)


@pytest.mark.parametrize("subject", ["0", "042", "-1", "4.2", "x", "\uff19", str(2**63), "3f0c6a8e-uuid"])
def test_a_subject_that_is_no_user_id_is_forbidden(subject: str) -> None:
    with pytest.raises(ForbiddenForCaller):
        CallerIdentification("cognito")(_context({"sub": subject}))


def test_caller_identity_is_iam_or_cognito(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CALLER_IDENTITY", raising=False)
    assert CallerSettings().caller_identity == "iam"
    monkeypatch.setenv("CALLER_IDENTITY", "cognito")
    assert CallerSettings().caller_identity == "cognito"
    monkeypatch.setenv("CALLER_IDENTITY", "anyone")
    with pytest.raises(ValidationError):
        CallerSettings()


# --- the webhook secret and tolerance: refused at start ------------------------------------------


@pytest.mark.parametrize("secret", ["", "short", "x" * 31])
def test_a_webhook_secret_shorter_than_32_characters_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    monkeypatch.setenv("WEBHOOK_SECRET", secret)
    with pytest.raises(ValidationError, match="at least 32 characters"):
        WebhookSettings()


@pytest.mark.parametrize(
    ("tolerance", "accepted"), [("1", True), ("900", True), ("0", False), ("901", False)]
)
def test_the_signature_tolerance_is_bounded(
    monkeypatch: pytest.MonkeyPatch, tolerance: str, accepted: bool
) -> None:
    monkeypatch.setenv("WEBHOOK_SECRET", "x" * 32)
    monkeypatch.setenv("WEBHOOK_TOLERANCE_SECONDS", tolerance)
    if accepted:
        assert WebhookSettings().webhook_tolerance_seconds == int(tolerance)
    else:
        with pytest.raises(ValidationError, match="webhook_tolerance_seconds"):
            WebhookSettings()


@pytest.mark.parametrize(
    "raw",
    ["short", json.dumps({"current": "x" * 32, "previous": "short"}), json.dumps({"current": "short"}), "{}"],
)
def test_a_stored_webhook_secret_that_is_too_short_fails_closed(raw: str) -> None:
    # Given a Secrets Manager value with a secret under 32 characters / When it is read
    # Then it is refused (the callback answers 500, nothing is written) rather than trusted
    with pytest.raises(ConfigurationError, match="at least 32 characters"):
        webhook_secrets(raw)


def test_stored_webhook_secrets_of_32_characters_are_read() -> None:
    assert webhook_secrets(json.dumps({"current": "c" * 32, "previous": "p" * 40})) == ["c" * 32, "p" * 40]
    assert webhook_secrets("s" * 32) == ["s" * 32]
