"""Money per currency: which currencies the deployment accepts, and the points a payment earns in each.

Pure rules, configured once (``ACCEPTED_CURRENCIES``, ``POINTS_PER_UNIT``): an order in a currency the
deployment does not accept is refused, and points are a whole number per whole unit of the order's own
currency, so the same payment never earns more points because its amount is counted in smaller units.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType

from payment_outbox.domain.grammar import CURRENCY_PATTERN, matches
from payment_outbox.errors import CurrencyNotAccepted

#: Points for one whole unit of a currency: 0 (no points) up to this bound.
MAX_POINTS_PER_UNIT = 10_000


@dataclass(frozen=True)
class MoneyRules:
    """The accepted currencies and, for each, the points one whole unit earns."""

    accepted: frozenset[str]
    points_per_unit: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.accepted:
            raise ValueError("at least one currency must be accepted")
        for currency in sorted(self.accepted | set(self.points_per_unit)):
            if not matches(CURRENCY_PATTERN, currency):
                raise ValueError(f"{currency!r} is not an ISO 4217 code (three capital letters)")
        for currency, points in self.points_per_unit.items():
            if not 0 <= points <= MAX_POINTS_PER_UNIT:
                raise ValueError(f"points per unit of {currency} must be 0 to {MAX_POINTS_PER_UNIT}")
        missing = sorted(self.accepted - set(self.points_per_unit))
        if missing:
            raise ValueError(f"no points rule for accepted currencies: {', '.join(missing)}")
        object.__setattr__(self, "points_per_unit", MappingProxyType(dict(self.points_per_unit)))

    @classmethod
    def of(cls, accepted: Iterable[str], points_per_unit: Mapping[str, int]) -> MoneyRules:
        return cls(frozenset(accepted), dict(points_per_unit))

    def require_accepted(self, currency: str, *, field_name: str = "currency") -> None:
        """Raise ``CurrencyNotAccepted`` (422) unless the deployment accepts ``currency``."""
        if currency not in self.accepted:
            accepted = ", ".join(sorted(self.accepted))
            problem = f"currency {currency} is not accepted here (accepted: {accepted})"
            raise CurrencyNotAccepted(problem, details=[{"field": field_name, "problem": problem}])

    def points_for(self, amount: Decimal, currency: str) -> int:
        """Points for ``amount`` of ``currency``: its whole units (the fraction dropped) times the
        currency's rate. ``CurrencyNotAccepted`` for a currency the deployment does not accept."""
        self.require_accepted(currency)
        return math.floor(amount) * self.points_per_unit[currency]


#: Until configured otherwise: CNY only, 1 point per whole yuan.
DEFAULT_MONEY_RULES = MoneyRules.of(["CNY"], {"CNY": 1})


def parse_currencies(text: str) -> frozenset[str]:
    """``ACCEPTED_CURRENCIES``: a comma-separated list of ISO 4217 codes ("CNY,USD")."""
    codes = [part.strip() for part in text.split(",") if part.strip()]
    for code in codes:
        if not matches(CURRENCY_PATTERN, code):
            raise ValueError(f"{code!r} is not an ISO 4217 code (three capital letters)")
    return frozenset(codes)


def parse_points_per_unit(text: str) -> dict[str, int]:
    """``POINTS_PER_UNIT``: comma-separated ``CUR:points`` pairs ("CNY:1,USD:7"), each currency once."""
    rates: dict[str, int] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        code, sep, points = (s.strip() for s in part.partition(":"))
        if not sep or not matches(CURRENCY_PATTERN, code) or not matches(r"^[0-9]{1,5}$", points):
            raise ValueError(f"{part!r} is not CUR:points (such as CNY:1)")
        if code in rates:
            raise ValueError(f"{code} is given twice")
        rates[code] = int(points)
    return rates
