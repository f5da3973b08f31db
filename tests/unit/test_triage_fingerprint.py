"""The error fingerprint: one cause, one group, whatever ids, numbers and times the text carries."""

from __future__ import annotations

import pytest

from payment_outbox.domain import grammar
from payment_outbox.domain.triage import FINGERPRINT_PATTERN, fingerprint, normalise

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (
            "InternalError: request 5f0c1d2e-aaaa-bbbb-cccc-1234567890ab failed at 2026-12-06T10:15:00.123Z",
            "InternalError: request 0b1c2d3e-1111-2222-3333-444455556666 failed at 2026-12-07 11:00:59",
        ),
        (
            "message is 300001 bytes; SNS accepts at most 262144",
            "message is 262145 bytes; SNS accepts at most 262144",
        ),
        (
            "no answer for order PO20261206101500123456 (message 0a1b2c3d4e5f60718293a4b5c6d7e8f9)",
            "no answer for order PO20261207000000999999 (message ffffffffffffffffffffffff00000001)",
        ),
        ("Throttling:   Rate exceeded\n", "Throttling: Rate exceeded"),
    ],
)
def test_errors_that_differ_only_in_ids_numbers_times_and_spacing_share_a_fingerprint(
    first: str, second: str
) -> None:
    assert fingerprint(first) == fingerprint(second)


def test_different_causes_get_different_fingerprints() -> None:
    causes = [
        "Throttling: Rate exceeded",
        "InvalidParameter: Message too long",
        "AuthorizationError: denied",
        None,
    ]
    assert len({fingerprint(c)[0] for c in causes}) == len(causes)


def test_the_pattern_shows_what_was_taken_out_and_the_id_is_path_safe() -> None:
    group, pattern = fingerprint(
        "request 5f0c1d2e-aaaa-bbbb-cccc-1234567890ab failed at 2026-12-06T10:15:00Z after 3 attempts"
    )
    assert pattern == "request <id> failed at <ts> after <n> attempts"
    assert grammar.matches(FINGERPRINT_PATTERN, group)
    assert normalise(None) == normalise("") == "(no error recorded)"
