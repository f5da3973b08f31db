"""What every section renderer shares: the shape of a section's figures and the small formats of
its numbers."""

from __future__ import annotations

from typing import Any

from payment_outbox_dev.measurement import fmt

Figures = dict[str, Any]


def times(value: float) -> str:
    return f"{fmt(value)}x"


def percent(value: float) -> str:
    return f"{value:.0%}"


def or_missing(value: Any, missing: str = "-") -> Any:
    return missing if value is None else value
