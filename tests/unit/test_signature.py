"""Payment callback signatures: ``X-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>``."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from payment_outbox.domain.signature import sign, verify
from payment_outbox.errors import SignatureRejected

pytestmark = pytest.mark.unit

SECRET = "current-webhook-secret"
PREVIOUS = "previous-webhook-secret"
BODY = b'{"orderNo":"PO1","transactionId":"txn-1","amount":"128.99","paidAt":"2026-11-27T10:15:00Z"}'
NOW = 1_795_000_000


def _v1(header: str) -> str:
    return dict(part.split("=", 1) for part in header.split(","))["v1"]


def test_a_signed_body_verifies() -> None:
    # Given a body signed with the current secret just now
    header = sign(BODY, SECRET, NOW)
    # When it is verified / Then nothing is raised
    verify(header, BODY, [SECRET], now=NOW)


def test_the_header_is_an_hmac_sha256_of_timestamp_dot_body() -> None:
    # Given the documented scheme, computed independently
    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    # When the body is signed
    header = sign(BODY, SECRET, NOW)
    # Then the header carries exactly that timestamp and digest
    assert header == f"t={NOW},v1={expected}"


@pytest.mark.parametrize("header", [None, ""])
def test_a_missing_header_is_rejected(header: str | None) -> None:
    # Given no X-Signature header / When verified / Then it is rejected
    with pytest.raises(SignatureRejected, match="missing"):
        verify(header, BODY, [SECRET], now=NOW)


@pytest.mark.parametrize(
    "header",
    [
        "garbage",
        "v1=abcdef",  # no timestamp
        f"t={NOW}",  # no v1 at all
        f"t=abc,v1={'0' * 64}",  # non-numeric timestamp
        f"t=-{NOW},v1={'0' * 64}",  # signed timestamp
        f"t={NOW},t={NOW},v1={'0' * 64}",  # two timestamps
        f"t=,v1={'0' * 64}",  # empty timestamp
        f"t=²,v1={'0' * 64}",  # a unicode digit int() cannot read
        f"t={'9' * 5000},v1={'0' * 64}",  # beyond Python's integer parsing limit
        f"t={NOW},v1=é",  # non-ASCII signature value
        f"t={NOW};v1={'0' * 64}",  # wrong separator
    ],
)
def test_a_malformed_header_is_rejected_not_crashing(header: str) -> None:
    # Given a header that does not follow the scheme
    # When verified / Then it is refused as a signature problem (never another exception type)
    with pytest.raises(SignatureRejected):
        verify(header, BODY, [SECRET], now=NOW)


def test_a_valid_signature_with_extra_whitespace_between_fields_verifies() -> None:
    # Given a correct header with a space after the comma
    header = sign(BODY, SECRET, NOW).replace(",", ", ")
    # When verified / Then it is accepted
    verify(header, BODY, [SECRET], now=NOW)


def test_a_signature_made_with_another_secret_is_rejected() -> None:
    # Given a body signed with a secret we do not hold
    header = sign(BODY, "attacker-secret", NOW)
    # When verified / Then it is rejected
    with pytest.raises(SignatureRejected, match="does not match"):
        verify(header, BODY, [SECRET], now=NOW)


def test_a_tampered_body_is_rejected() -> None:
    # Given a valid signature over the original body
    header = sign(BODY, SECRET, NOW)
    tampered = BODY.replace(b"128.99", b"1.00")
    # When verified against a different body / Then it is rejected
    with pytest.raises(SignatureRejected, match="does not match"):
        verify(header, tampered, [SECRET], now=NOW)


def test_a_re_stamped_timestamp_is_rejected() -> None:
    # Given an old valid signature whose timestamp was edited to look fresh
    old = sign(BODY, SECRET, NOW - 3600)
    header = f"t={NOW},v1={_v1(old)}"
    # When verified / Then it is rejected (the timestamp is part of what is signed)
    with pytest.raises(SignatureRejected, match="does not match"):
        verify(header, BODY, [SECRET], now=NOW)


@pytest.mark.parametrize("skew", [-301, 301, -86_400, 86_400])
def test_a_timestamp_outside_the_window_is_rejected(skew: int) -> None:
    # Given a correctly signed body whose timestamp is more than 300 s old or in the future
    header = sign(BODY, SECRET, NOW + skew)
    # When verified now / Then it is rejected as stale
    with pytest.raises(SignatureRejected, match="tolerance"):
        verify(header, BODY, [SECRET], now=NOW)


@pytest.mark.parametrize("skew", [-300, -299, 0, 299, 300])
def test_a_timestamp_inside_the_window_is_accepted(skew: int) -> None:
    # Given a correctly signed body up to 300 s old or ahead
    header = sign(BODY, SECRET, NOW + skew)
    # When verified now / Then it is accepted
    verify(header, BODY, [SECRET], now=NOW)


def test_the_tolerance_is_configurable() -> None:
    # Given a window of 10 s and a signature 11 s old
    header = sign(BODY, SECRET, NOW - 11)
    # When verified / Then it is rejected, while 10 s passes
    with pytest.raises(SignatureRejected):
        verify(header, BODY, [SECRET], now=NOW, tolerance_seconds=10)
    verify(sign(BODY, SECRET, NOW - 10), BODY, [SECRET], now=NOW, tolerance_seconds=10)


@pytest.mark.parametrize("signed_with", [SECRET, PREVIOUS])
def test_during_rotation_both_secrets_are_accepted(signed_with: str) -> None:
    # Given the current and the previous secret configured
    header = sign(BODY, signed_with, NOW)
    # When a body signed with either is verified / Then it is accepted
    verify(header, BODY, [SECRET, PREVIOUS], now=NOW)


def test_after_rotation_the_retired_secret_is_rejected() -> None:
    # Given only the new secret configured
    header = sign(BODY, PREVIOUS, NOW)
    # When a body signed with the retired secret arrives / Then it is rejected
    with pytest.raises(SignatureRejected):
        verify(header, BODY, [SECRET], now=NOW)


def test_a_header_carrying_two_signatures_verifies_if_either_matches() -> None:
    # Given a provider signing with both secrets during its own rotation
    header = f"{sign(BODY, 'unknown-secret', NOW)},v1={_v1(sign(BODY, SECRET, NOW))}"
    # When verified / Then the matching one is enough
    verify(header, BODY, [SECRET], now=NOW)


def test_an_empty_configured_secret_never_verifies_anything() -> None:
    # Given a blank secret slot (e.g. no previous secret during rotation)
    header = sign(BODY, "", NOW)
    # When a body signed with the empty key is verified / Then it is rejected
    with pytest.raises(SignatureRejected):
        verify(header, BODY, ["", SECRET], now=NOW)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d: d[:-1],  # a prefix of the right digest
        lambda d: d + "0",  # the right digest plus a character
        lambda d: d[:-1] + ("0" if d[-1] != "0" else "1"),  # last character differs
        lambda d: ("0" if d[0] != "0" else "1") + d[1:],  # first character differs
        lambda d: "",  # empty
    ],
)
def test_only_the_exact_digest_is_accepted(mangle) -> None:  # type: ignore[no-untyped-def]
    # Given a signature that is almost right (as a byte-by-byte guessing attack would produce)
    digest = _v1(sign(BODY, SECRET, NOW))
    header = f"t={NOW},v1={mangle(digest)}"
    # When verified / Then it is rejected: the comparison is of the whole value, not a prefix
    with pytest.raises(SignatureRejected):
        verify(header, BODY, [SECRET], now=NOW)
