"""Wall-clock time as naive UTC, the form every timestamp is stored in."""

from __future__ import annotations

from datetime import UTC, datetime


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC).replace(tzinfo=None)


def to_naive_utc(moment: datetime) -> datetime:
    """Normalise an aware datetime to naive UTC; a naive one is taken to be UTC already."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def epoch_seconds(naive_utc: datetime) -> float:
    """Unix seconds of a naive-UTC moment (DynamoDB stores expiry times this way)."""
    return naive_utc.replace(tzinfo=UTC).timestamp()
