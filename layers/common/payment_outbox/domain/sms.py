"""SMS templates and phone masking (full phone numbers never reach a log or a delivery record)."""

from __future__ import annotations

import re

from payment_outbox.domain.grammar import PHONE_PATTERN
from payment_outbox.errors import InvalidEnvelope

TEMPLATE_ORDER_PAY_SUCCESS = "ORDER_PAY_SUCCESS"

_TEMPLATES: dict[str, str] = {
    TEMPLATE_ORDER_PAY_SUCCESS: "Payment received for order {0}: {1}. Thank you!",
}

#: E.164 with ASCII digits only (payment_outbox.domain.grammar).
E164 = re.compile(PHONE_PATTERN, re.ASCII)


def render(template_id: str, params: list[str]) -> str:
    try:
        template = _TEMPLATES[template_id]
    except KeyError:
        raise InvalidEnvelope(f"unknown SMS template {template_id!r}") from None
    try:
        return template.format(*params)
    except IndexError:
        raise InvalidEnvelope(f"SMS template {template_id!r} needs more parameters") from None


def mask_phone(phone: str) -> str:
    """Keep the country prefix and the last 4 digits: ``+8613812345678`` → ``+86*******5678``."""
    if len(phone) <= 7:
        return "*" * len(phone)
    return phone[:3] + "*" * (len(phone) - 7) + phone[-4:]
