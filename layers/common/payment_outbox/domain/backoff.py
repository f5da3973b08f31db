"""When a failed message is tried again, and when the relay gives up on it.

Two kinds of failure are told apart. A message's own refusal (SNS answered for the request and named
this entry as failed) counts one attempt toward ``max_attempts``. An outage (SNS refused or never
answered the whole request: throttling, a 5xx, no connection, no answer in time) is not the message's
fault and counts nothing; the message still backs off, by its age, and gives up only once older than
``max_age_seconds``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base_delay_seconds: float = 2.0
    max_delay_seconds: float = 300.0
    #: A message older than this gives up at its next failure, whatever kind (None: no age limit).
    max_age_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.max_age_seconds is not None and self.max_age_seconds <= 0:
            raise ValueError("max_age_seconds must be positive")
        if self.base_delay_seconds <= 0 or self.max_delay_seconds < self.base_delay_seconds:
            raise ValueError("delays must be positive and max_delay_seconds >= base_delay_seconds")

    def gives_up(self, attempts: int) -> bool:
        """True once ``failed_attempts`` publishes have failed and no attempt is left."""
        return attempts >= self.max_attempts

    def too_old(self, age: timedelta) -> bool:
        """True once a message has waited ``max_age_seconds`` since it was written."""
        return self.max_age_seconds is not None and age.total_seconds() >= self.max_age_seconds

    def outage_delay(self, age: timedelta, rng: random.Random) -> timedelta:
        """The wait after an outage, which charges no attempt: the message's age stands in for the
        attempt count, so the waits still grow (each is about as long as the message has waited,
        which doubles its age) from ``base_delay_seconds`` up to ``max_delay_seconds``, equal jitter."""
        ceiling = min(self.max_delay_seconds, max(self.base_delay_seconds, age.total_seconds()))
        return timedelta(seconds=ceiling / 2 + rng.uniform(0, ceiling / 2))

    def delay(self, attempts: int, rng: random.Random) -> timedelta:
        """Exponential backoff with "equal jitter": half fixed, half random, so delays still grow
        while relays that failed together spread out instead of retrying in lockstep."""
        ceiling = min(self.max_delay_seconds, self.base_delay_seconds * 2 ** max(attempts - 1, 0))
        return timedelta(seconds=ceiling / 2 + rng.uniform(0, ceiling / 2))

    def next_attempt_at(self, now: datetime, attempts: int, rng: random.Random) -> datetime:
        return now + self.delay(attempts, rng)
