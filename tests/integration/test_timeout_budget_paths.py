"""The database round trips the timeout budget (tests/unit/test_timeout_budget.py) counts for the hot
paths are the real paths' own: counted here on the wire (every command PyMySQL sends), cold, on
MariaDB through the real handlers."""

from __future__ import annotations

from collections.abc import Iterator

import pymysql.connections
import pytest
from sqlalchemy import text

from tests.support import LocalSystem
from tests.unit.test_timeout_budget import CALLBACK_ROUND_TRIPS, RELAY_RUN_ROUND_TRIPS

pytestmark = pytest.mark.integration


class RoundTrips:
    def __init__(self) -> None:
        self.count = 0


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[RoundTrips]:
    """Counts every command a PyMySQL connection sends (each waits for its answer: one round trip)."""
    counter = RoundTrips()
    send = pymysql.connections.Connection._execute_command

    def counted(self: pymysql.connections.Connection, command: int, sql: object) -> object:
        counter.count += 1
        return send(self, command, sql)

    monkeypatch.setattr(pymysql.connections.Connection, "_execute_command", counted)
    yield counter


def test_the_cold_payment_callback_makes_no_more_round_trips_than_budgeted(
    system: LocalSystem, round_trips: RoundTrips
) -> None:
    # Given an order, and a payment API container that has not connected yet
    order = system.create_order(amount="9.99")
    system.functions.cold_start()
    round_trips.count = 0
    # When the provider's callback pays it (the payment transaction and the after-commit publish)
    assert system.pay(order).status == 200
    # Then the database was asked no more often than the budget counts
    assert 0 < round_trips.count <= CALLBACK_ROUND_TRIPS


def test_a_cold_relay_run_over_one_wave_makes_no_more_round_trips_than_budgeted(
    system: LocalSystem, round_trips: RoundTrips
) -> None:
    # Given two due rows (a paid order whose after-commit publish is left to the relay)
    order = system.create_order(amount="9.99")
    assert system.pay(order).status == 200
    with system.engine.begin() as conn:
        conn.execute(text("UPDATE message_record SET status = 0, next_retry_at = NOW() - INTERVAL 1 MINUTE"))
    system.functions.cold_start()
    round_trips.count = 0
    # When a cold relay run publishes them
    assert system.run_relay()["published"] == 2
    # Then the database was asked no more often than the budget counts
    assert 0 < round_trips.count <= RELAY_RUN_ROUND_TRIPS
