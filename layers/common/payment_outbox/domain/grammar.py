"""The exact grammar of every field the APIs accept, in one place (README, "Field grammar").

Each rule is a regular expression over ASCII only: ``[0-9]`` and never ``\\d`` (which matches any
Unicode digit: Arabic-Indic or full-width digits would pass), always matched against the whole text
(``re.fullmatch``: a trailing newline never slips past ``$``). The same patterns go into the request
models, so the OpenAPI document states exactly what the code enforces.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

#: A positive decimal string, at most 10 integer digits and 2 decimals: exactly what DECIMAL(12,2)
#: holds. No sign, exponent, separator, surrounding space or trailing dot ("12." is refused).
AMOUNT_PATTERN = r"^(0|[1-9][0-9]{0,9})(\.[0-9]{1,2})?$"
MAX_AMOUNT = Decimal("9999999999.99")

#: E.164: "+", a non-zero country digit, then 7 to 14 more ASCII digits (8 to 15 digits in all).
PHONE_PATTERN = r"^\+[1-9][0-9]{7,14}$"

#: ISO 4217 alphabetic code.
CURRENCY_PATTERN = r"^[A-Z]{3}$"

#: The order numbers this API issues ("PO" + 20 digits); up to 32 ASCII letters, digits, "-" or "_".
ORDER_NO_PATTERN = r"^[A-Za-z0-9_-]{1,32}$"

#: The provider's transaction id, opaque to us and stored verbatim: 1 to 64 printable ASCII
#: characters (space included; no control characters, nothing beyond ASCII).
TRANSACTION_ID_PATTERN = r"^[ -~]{1,64}$"

#: A stored row id (orders): 1 .. 2**63-1, the range of a signed 64-bit key on MySQL and SQLite.
ID_PATTERN = r"^[1-9][0-9]{0,18}$"
MAX_ID = 2**63 - 1

#: An outbox message id (what the relay writes: 32 hex digits; older rows up to 64 of these characters).
MESSAGE_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"

#: RFC 3339 date-time with an explicit offset ("Z" or "+08:00"), seconds required, up to 6 decimals.
TIMESTAMP_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})$"
)

#: A callback's ``paidAt`` must lie in [now - PAID_AT_MAX_AGE, now + PAID_AT_MAX_SKEW]: a provider's
#: clock may run a little ahead of ours (the same 5 minutes the signature tolerates), and providers
#: retry a callback for days, never for a month.
PAID_AT_MAX_SKEW = timedelta(minutes=5)
PAID_AT_MAX_AGE = timedelta(days=30)


def matches(pattern: str, text: object) -> bool:
    """True when ``text`` is a str matching ``pattern`` from its first character to its last."""
    return isinstance(text, str) and re.fullmatch(pattern, text, re.ASCII) is not None


def parse_amount(text: object) -> Decimal:
    """The amount of a decimal string that follows ``AMOUNT_PATTERN`` and is > 0, else ValueError."""
    if not isinstance(text, str):
        raise ValueError('amount must be a decimal string such as "128.50"')
    if not matches(AMOUNT_PATTERN, text):
        raise ValueError('amount must be a decimal string such as "128.50": digits, at most 2 decimals')
    amount = Decimal(text)
    if amount <= 0:
        raise ValueError("amount must be greater than 0")
    return amount.quantize(Decimal("0.01"))


def parse_id(text: str) -> int | None:
    """The row id a path segment names, or None when no stored row can have it (answer 404)."""
    if not matches(ID_PATTERN, text):
        return None
    value = int(text)
    return value if value <= MAX_ID else None


def parse_timestamp(text: object) -> datetime:
    """An RFC 3339 timestamp (``TIMESTAMP_PATTERN``) as an aware datetime, else ValueError."""
    if not isinstance(text, str) or not matches(TIMESTAMP_PATTERN, text):
        raise ValueError('must be an RFC 3339 date-time with an offset, such as "2026-11-27T10:15:00Z"')
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("is not a real date and time") from None


def paid_at_problem(paid_at: datetime, now: datetime) -> str | None:
    """Why ``paid_at`` is outside the accepted window around ``now`` (naive UTC), or None."""
    moment = paid_at.astimezone(UTC).replace(tzinfo=None) if paid_at.tzinfo else paid_at
    if moment > now + PAID_AT_MAX_SKEW:
        minutes = int(PAID_AT_MAX_SKEW.total_seconds() // 60)
        return f"paidAt is in the future (more than {minutes} minutes ahead)"
    if moment < now - PAID_AT_MAX_AGE:
        return f"paidAt is more than {PAID_AT_MAX_AGE.days} days ago"
    return None
