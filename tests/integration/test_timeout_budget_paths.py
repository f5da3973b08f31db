"""The units of work the timeout budget (tests/unit/test_timeout_budget.py) counts for the hot paths
are the real paths' own: every connection checked out of the pool (a ping, then statements), counted
here, cold, on MariaDB through the real handlers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, event, text

from tests.support import LocalSystem
from tests.unit.test_timeout_budget import CALLBACK_UNITS_OF_WORK, RELAY_WAVE_UNITS_OF_WORK

pytestmark = pytest.mark.integration


class Checkouts:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self, *_: object) -> None:
        self.count += 1


@pytest.fixture
def units_of_work() -> Iterator[Checkouts]:
    """Counts every connection any engine hands out (each unit of work checks one out)."""
    counter = Checkouts()
    event.listen(Engine, "engine_connect", counter)
    yield counter
    event.remove(Engine, "engine_connect", counter)


def test_the_cold_payment_callback_uses_no_more_units_of_work_than_budgeted(
    system: LocalSystem, units_of_work: Checkouts
) -> None:
    # Given an order, and a payment API container that has not connected yet
    order = system.create_order(amount="9.99")
    system.functions.cold_start()
    units_of_work.count = 0
    # When the provider's callback pays it (the payment transaction and the after-commit publish)
    assert system.pay(order).status == 200
    # Then it used no more units of work than the budget counts
    assert 0 < units_of_work.count <= CALLBACK_UNITS_OF_WORK


def test_a_cold_relay_run_over_one_wave_uses_no_more_units_of_work_than_budgeted(
    system: LocalSystem, units_of_work: Checkouts
) -> None:
    # Given two due rows (a paid order whose after-commit publish is left to the relay)
    order = system.create_order(amount="9.99")
    assert system.pay(order).status == 200
    with system.engine.begin() as conn:
        conn.execute(text("UPDATE message_record SET status = 0, next_retry_at = NOW() - INTERVAL 1 MINUTE"))
    system.functions.cold_start()
    units_of_work.count = 0
    # When a cold relay run publishes them
    assert system.run_relay()["published"] == 2
    # Then it used no more units of work than the budget counts
    assert 0 < units_of_work.count <= RELAY_WAVE_UNITS_OF_WORK
