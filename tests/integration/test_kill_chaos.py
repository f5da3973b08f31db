"""The kill chaos run, small: real SIGKILLs of workers and of the whole stack on MariaDB lose nothing.

A live ``payment-outbox local`` (worker processes per function, the emulator in a process of its
own, a database unique to the run) gets seeded orders and signed callbacks over HTTP from client
threads while random workers — and once the whole stack — are SIGKILLed and started again; the
callbacks that got no answer are sent again, as a provider does. Then it heals and the same checks
as ``make chaos`` run (docs/reliability.md has a large run's report).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from payment_outbox_dev.chaos.kill import KillConfig, run_kill_chaos
from tests.support import ROOT

pytestmark = pytest.mark.integration


def test_sigkilled_workers_and_a_killed_stack_lose_nothing_and_double_nothing(
    mariadb_url: str, tmp_path: Path
) -> None:
    # Given a live stack on MariaDB with two workers per function
    server = make_url(mariadb_url).set(database="").render_as_string(hide_password=False)
    config = KillConfig(
        orders=60, kills=5, seed=11, clients=4, root=ROOT, server_url=server, stack_log=tmp_path / "stack.log"
    )

    # When orders and callbacks are driven while workers and the whole stack are SIGKILLed
    report = run_kill_chaos(config)

    # Then the kills happened, mid-invocation among them, and the whole stack went down at least once
    kills = {kind: n for kind, n in report.faults.items() if "SIGKILLed" in kind}
    attempts = {kind: n for kind, n in report.faults.items() if kind.startswith("worker kill ")}
    assert sum(kills.values()) + sum(attempts.values()) == config.kills, report.render()
    assert sum(kills.values()) >= config.kills - 1, report.render()
    assert any("whole stack" in kind for kind in kills), report.render()
    # And every paid order was applied exactly once: nothing lost, doubled or dead-lettered
    assert report.orders == config.orders, report.render()
    assert report.ok, report.render() + "\n" + (tmp_path / "stack.log").read_text()[-20000:]
    assert report.ledger_entries == report.sms_records == config.orders
    # (exactly one SMS per order: one a kill left uncertain was parked, then decided as the runbook says)
    assert report.sms_sent == config.orders


def test_an_sns_outage_longer_than_the_attempts_last_leaves_no_row_failed_and_delivers_everything_once(
    mariadb_url: str, tmp_path: Path
) -> None:
    # Given a live stack on MariaDB, and SNS answering every publish 503 from the first order on for
    # 10 minutes of schedule: ten relay runs, twice the attempts OutboxMaxAttempts allows
    server = make_url(mariadb_url).set(database="").render_as_string(hide_password=False)
    config = KillConfig(
        orders=20,
        kills=0,
        seed=16,
        clients=4,
        root=ROOT,
        server_url=server,
        stack_log=tmp_path / "stack.log",
        sns_outage_minutes=10,
    )

    # When the orders are paid during the outage, and SNS then recovers
    report = run_kill_chaos(config)

    # Then when the outage ended every row was pending with no attempt charged
    at_end = next(n for n in report.notes if n.startswith("outbox rows at the outage's end"))
    assert "pending (max attempts charged 0)" in at_end and "FAILED" not in at_end, report.render()
    # And after recovery every order was applied exactly once, nothing FAILED, doubled or dead-lettered
    assert report.ok, report.render() + "\n" + (tmp_path / "stack.log").read_text()[-20000:]
    assert report.ledger_entries == report.sms_records == config.orders
