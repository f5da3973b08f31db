"""Failure lines name the error, never a full phone number."""

from __future__ import annotations

import pytest

from payment_outbox_dev.local.describe import describe, mask_phones

pytestmark = pytest.mark.unit


def test_describe_names_the_class_and_the_first_line_of_the_message() -> None:
    assert describe(ValueError("bad amount\nmore detail")) == "ValueError: bad amount"
    assert describe(TimeoutError()) == "TimeoutError"


def test_phone_numbers_in_an_error_are_masked_like_delivery_records() -> None:
    # Given an error whose message carries a phone number
    error = RuntimeError("SNS refused the SMS to +8613812345678 (throttled); retry")

    # Then the line keeps the prefix and last four digits only
    assert describe(error) == "RuntimeError: SNS refused the SMS to +86*******5678 (throttled); retry"
    assert mask_phones("to +14155550123 and +447700900123") == "to +14*****0123 and +44******0123"
    assert (
        mask_phones("order PO20261130012546696676, amount 12.00")
        == "order PO20261130012546696676, amount 12.00"
    )
