"""SMS rules: templates are rendered from their parameters; phone numbers are masked."""

from __future__ import annotations

import pytest

from payment_outbox.domain.sms import TEMPLATE_ORDER_PAY_SUCCESS, mask_phone, render
from payment_outbox.errors import InvalidEnvelope

pytestmark = pytest.mark.unit

PHONES = ["+8613812345678", "+14155550123", "+447911123456", "+4930123456", "+12345678", "+861381234567890"]


@pytest.mark.parametrize("phone", PHONES)
def test_a_masked_phone_shows_only_the_prefix_and_the_last_four_digits(phone: str) -> None:
    # Given a phone number / When masked
    masked = mask_phone(phone)
    # Then it keeps the country prefix (3 characters) and the last 4 digits, and stars the rest
    assert len(masked) == len(phone)
    assert masked[:3] == phone[:3]
    assert masked[-4:] == phone[-4:]
    assert set(masked[3:-4]) == {"*"}
    # And never more than those 7 characters are visible, so at least one digit is always hidden
    visible = [c for c in masked if c != "*"]
    assert len(visible) == 7 < len(phone)


def test_the_documented_example() -> None:
    assert mask_phone("+8613812345678") == "+86*******5678"


def test_the_full_number_is_never_recoverable_from_the_mask() -> None:
    # Given two numbers that differ only in the middle / When masked / Then the masks are the same
    assert mask_phone("+8613812345678") == mask_phone("+8619999995678")


@pytest.mark.parametrize("phone", ["", "1", "+86", "+861234", "1234567"])
def test_a_short_value_is_masked_entirely(phone: str) -> None:
    # Given a value too short to keep a prefix and 4 digits and still hide something
    # When masked / Then nothing of it is shown
    assert mask_phone(phone) == "*" * len(phone)


def test_the_payment_template_is_filled_with_order_number_and_amount() -> None:
    # Given the payment template and its parameters / When rendered
    text = render(TEMPLATE_ORDER_PAY_SUCCESS, ["PO20261127100000000001", "128.99"])
    # Then both appear in the text and no placeholder is left
    assert "PO20261127100000000001" in text
    assert "128.99" in text
    assert "{" not in text and "}" not in text
    assert text.index("PO20261127100000000001") < text.index("128.99")


def test_parameters_are_inserted_literally() -> None:
    # Given a parameter that looks like a placeholder / When rendered / Then it is not expanded again
    text = render(TEMPLATE_ORDER_PAY_SUCCESS, ["{1}", "{0.__class__}"])
    assert "{1}" in text and "{0.__class__}" in text


@pytest.mark.parametrize("template_id", ["UNKNOWN", "", "order_pay_success", "ORDER_PAY_SUCCESS "])
def test_an_unknown_template_is_an_invalid_envelope(template_id: str) -> None:
    with pytest.raises(InvalidEnvelope, match="template"):
        render(template_id, ["PO1", "1.00"])


@pytest.mark.parametrize("params", [[], ["PO1"]])
def test_missing_parameters_are_an_invalid_envelope(params: list[str]) -> None:
    # Given fewer parameters than the template needs / When rendered / Then it can never succeed
    with pytest.raises(InvalidEnvelope, match="parameters"):
        render(TEMPLATE_ORDER_PAY_SUCCESS, params)
