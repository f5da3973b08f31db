"""RetryPolicy: exponential backoff with jitter, a cap, and a point where the relay gives up."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import pytest

from payment_outbox.domain.backoff import RetryPolicy

pytestmark = pytest.mark.unit

POLICY = RetryPolicy(max_attempts=5, base_delay_seconds=2.0, max_delay_seconds=60.0)


def _ceiling(policy: RetryPolicy, attempt: int) -> float:
    """The documented bound: base * 2^(attempt-1), capped at max."""
    return min(policy.max_delay_seconds, policy.base_delay_seconds * 2 ** (attempt - 1))


@pytest.mark.parametrize("seed", range(20))
def test_each_delay_lies_between_half_and_all_of_its_exponential_ceiling(seed: int) -> None:
    # Given a seeded random source
    rng = random.Random(seed)
    for attempt in range(1, 10):
        # When the delay after `attempt` failures is drawn
        delay = POLICY.delay(attempt, rng).total_seconds()
        # Then it lies within the jitter bounds of base * 2^(attempt-1), capped
        ceiling = _ceiling(POLICY, attempt)
        assert ceiling / 2 <= delay <= ceiling, (attempt, delay)


def test_delays_grow_exponentially_until_the_cap() -> None:
    # Given many draws per attempt / When the smallest and largest delays are compared
    rng = random.Random(7)
    draws = {a: [POLICY.delay(a, rng).total_seconds() for _ in range(200)] for a in range(1, 8)}
    # Then each attempt's shortest delay is at least the previous attempt's longest one while uncapped
    for attempt in range(2, 6):  # ceilings 4, 8, 16, 32 s
        assert min(draws[attempt]) >= max(draws[attempt - 1])
    # And the spread really is random, not a fixed value
    assert max(draws[3]) - min(draws[3]) > 1.0
    # And the doubling shows in the averages
    mean = {a: sum(d) / len(d) for a, d in draws.items()}
    assert 1.8 < mean[4] / mean[3] < 2.2


def test_delays_never_exceed_the_cap() -> None:
    # Given attempts far past the point where the exponential passes the cap
    rng = random.Random(1)
    for attempt in (6, 7, 20, 100):
        # When delays are drawn / Then they stay between half the cap and the cap
        for _ in range(50):
            delay = POLICY.delay(attempt, rng)
            assert timedelta(seconds=30) <= delay <= timedelta(seconds=60)


def test_the_same_seed_gives_the_same_delays() -> None:
    # Given two random sources with one seed / When delays are drawn / Then they are identical
    first = [POLICY.delay(a, random.Random(3)) for a in range(1, 6)]
    second = [POLICY.delay(a, random.Random(3)) for a in range(1, 6)]
    assert first == second


def test_relays_that_failed_together_spread_out() -> None:
    # Given ten relays with different random sources failing at the same attempt
    delays = {POLICY.delay(4, random.Random(seed)) for seed in range(10)}
    # Then they do not retry in lockstep
    assert len(delays) == 10


def test_next_attempt_is_now_plus_the_delay() -> None:
    # Given a moment and a seeded source / When the next attempt time is computed
    now = datetime(2026, 11, 27, 10, 0, 0)
    at = POLICY.next_attempt_at(now, 1, random.Random(5))
    # Then it is the drawn delay after now
    assert at == now + POLICY.delay(1, random.Random(5))
    assert now + timedelta(seconds=1) <= at <= now + timedelta(seconds=2)


def test_gives_up_exactly_at_max_attempts() -> None:
    # Given at most 5 attempts / When failures are counted / Then the 5th failure is the last
    assert [POLICY.gives_up(n) for n in range(1, 7)] == [False, False, False, False, True, True]


def test_a_single_attempt_policy_gives_up_after_the_first_failure() -> None:
    assert RetryPolicy(max_attempts=1).gives_up(1)


def test_defaults_are_valid() -> None:
    # Given the default policy / Then it retries a few times with a bounded delay
    policy = RetryPolicy()
    assert policy.max_attempts >= 1
    assert 0 < policy.base_delay_seconds <= policy.max_delay_seconds


@pytest.mark.parametrize(
    "config",
    [
        {"max_attempts": 0},
        {"max_attempts": -3},
        {"base_delay_seconds": 0},
        {"base_delay_seconds": -1.0},
        {"base_delay_seconds": 10.0, "max_delay_seconds": 5.0},
    ],
)
def test_invalid_configuration_is_rejected(config: dict[str, float]) -> None:
    # Given a configuration that cannot work / When a policy is built / Then it is refused
    with pytest.raises(ValueError):
        RetryPolicy(**config)  # type: ignore[arg-type]


def test_base_equal_to_max_is_a_constant_ceiling() -> None:
    # Given base == max / When delays are drawn for several attempts / Then all stay within [max/2, max]
    policy = RetryPolicy(max_attempts=3, base_delay_seconds=10.0, max_delay_seconds=10.0)
    rng = random.Random(0)
    assert all(5 <= policy.delay(a, rng).total_seconds() <= 10 for a in range(1, 6))


def test_max_age_is_a_positive_number_when_set() -> None:
    # Given an age limit of zero / When a policy is built / Then it is refused
    with pytest.raises(ValueError):
        RetryPolicy(max_age_seconds=0)


def test_a_message_is_too_old_from_its_age_limit_on_and_never_without_one() -> None:
    # Given a policy with a one-hour age limit, and one without
    limited = RetryPolicy(max_age_seconds=3600)
    unlimited = RetryPolicy()
    # Then a message is too old from one hour on, and never without a limit
    assert not limited.too_old(timedelta(minutes=59, seconds=59))
    assert limited.too_old(timedelta(hours=1))
    assert not unlimited.too_old(timedelta(days=365))


def test_outage_waits_grow_with_the_messages_age_up_to_the_cap() -> None:
    # Given a policy of 2 s doubling to 60 s
    rng = random.Random(3)
    # When a message of a given age is held by an outage
    # Then its wait lies within [c/2, c] of a ceiling that is its age, at least the base, at most the cap
    for age_s, ceiling in ((0, 2.0), (1, 2.0), (10, 10.0), (45, 45.0), (600, 60.0), (86_400, 60.0)):
        for _ in range(20):
            wait = POLICY.outage_delay(timedelta(seconds=age_s), rng).total_seconds()
            assert ceiling / 2 <= wait <= ceiling


def test_outage_waits_keep_a_message_from_retrying_in_a_tight_loop() -> None:
    # Given a message held by an outage from its first second on, retried each time it falls due
    rng = random.Random(7)
    age, retries = timedelta(0), 0
    # When an hour of outage passes
    while age < timedelta(hours=1):
        age += POLICY.outage_delay(age, rng)
        retries += 1
    # Then it was tried about once per cap (60 s) at the end, never in a tight loop: at most the
    # doubling steps up to the cap plus one try per half-cap over the hour
    assert retries <= 10 + 3600 / (POLICY.max_delay_seconds / 2)
