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
    # (an SMS the provider got twice is only ever one whose consumer was killed between send and record)
    assert report.sms_sent == config.orders + report.sms_resent
