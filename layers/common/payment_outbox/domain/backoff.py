"""When a failed message is tried again, and when the relay gives up on it."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base_delay_seconds: float = 2.0
    max_delay_seconds: float = 300.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay_seconds <= 0 or self.max_delay_seconds < self.base_delay_seconds:
            raise ValueError("delays must be positive and max_delay_seconds >= base_delay_seconds")

    def gives_up(self, failed_attempts: int) -> bool:
        """True once ``failed_attempts`` publishes have failed and no attempt is left."""
        return failed_attempts >= self.max_attempts

    def delay(self, failed_attempts: int, rng: random.Random) -> timedelta:
        """Exponential backoff with "equal jitter": half fixed, half random, so delays still grow
        while relays that failed together spread out instead of retrying in lockstep."""
        ceiling = min(self.max_delay_seconds, self.base_delay_seconds * 2 ** max(failed_attempts - 1, 0))
        return timedelta(seconds=ceiling / 2 + rng.uniform(0, ceiling / 2))

    def next_attempt_at(self, now: datetime, failed_attempts: int, rng: random.Random) -> datetime:
        return now + self.delay(failed_attempts, rng)
