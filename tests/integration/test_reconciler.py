"""The reconciler function on MariaDB + moto: it finds PAID orders without outbox rows, rows stuck
FAILED, rows sent long ago without their consumer effect, and idempotency records stuck INPROGRESS,
and reports each as an EMF metric."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig
from sqlalchemy import text

from payment_outbox.adapters.idempotent_record_handler import indexed_persistence_layer
from payment_outbox.clock import SystemClock
from payment_outbox.domain.orders import PaymentNotice
from payment_outbox.services.payments import PaymentService
from tests.support import LocalSystem, configured_database

pytestmark = pytest.mark.integration

METRICS = ("OrdersMissingOutbox", "MessagesStuckFailed", "MessagesWithoutEffect", "StuckIdempotencyRecords")


# --- helpers ---------------------------------------------------------------------------------------


def now() -> datetime:
    return SystemClock().now()


def run_reconciler(
    system: LocalSystem, capsys: pytest.CaptureFixture[str], load_event: Any
) -> tuple[dict[str, Any], dict[str, float]]:
    """Invoke the function with the shipped schedule event; return its summary and its EMF metrics."""
    capsys.readouterr()
    summary: dict[str, Any] = system.functions.invoke(
        "ReconcilerFunction", load_event("reconciler_schedule.json")
    )
    documents = [
        json.loads(line)
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("{") and '"_aws"' in line
    ]
    assert len(documents) == 1, documents
    [document] = documents
    directive = document["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "PaymentOutbox"
    assert ["service"] in directive["Dimensions"] and document["service"] == "outbox-reconciler"
    # Powertools writes each value as a list of the values added in the invocation.
    metrics = {m["Name"]: float(sum(document[m["Name"]])) for m in directive["Metrics"]}
    return summary, metrics


def paid_without_publish(
    system: LocalSystem, amount: str = "50.00", phone: str = "+8613812345678"
) -> dict[str, Any]:
    """An order paid through the payment use case (outbox rows in the same transaction), not yet published."""
    order = system.create_order(amount=amount, phone=phone)
    with configured_database() as database:
        payments = PaymentService(database.unit_of_work, SystemClock(), handoff_lease=timedelta(seconds=60))
        payments.pay_order(
            PaymentNotice(order["orderNo"], f"txn-{uuid.uuid4().hex[:12]}", Decimal(amount), now())
        )
    return order


def mark_sent(system: LocalSystem, business_key: str, *, ago: timedelta) -> None:
    """As the relay leaves rows after publishing them ``ago`` (the consumers never ran)."""
    sent_at = now() - ago
    with system.engine.begin() as conn:
        conn.execute(
            text("UPDATE message_record SET status = 1, sent_time = :at WHERE business_key = :key"),
            {"at": sent_at, "key": business_key},
        )


def backdate_sent(system: LocalSystem, business_key: str, *, ago: timedelta) -> None:
    with system.engine.begin() as conn:
        conn.execute(
            text("UPDATE message_record SET sent_time = :at WHERE business_key = :key AND status = 1"),
            {"at": now() - ago, "key": business_key},
        )


def message_ids(system: LocalSystem, business_key: str) -> set[str]:
    return {r["message_id"] for r in system.outbox_rows() if r["business_key"] == business_key}


@pytest.fixture(autouse=True)
def drained(system: LocalSystem) -> Iterator[None]:
    yield
    system.drain_consumers()


# --- tests -----------------------------------------------------------------------------------------


def test_a_healthy_system_reports_zero_everywhere(
    system: LocalSystem, capsys: pytest.CaptureFixture[str], load_event: Any
) -> None:
    # Given an order paid, relayed and consumed, its rows sent an hour ago
    order = system.create_order(amount="20.00")
    assert system.pay(order).status == 200
    system.run_relay()
    system.drain_consumers()
    backdate_sent(system, order["orderNo"], ago=timedelta(hours=1))

    # When the reconciler runs
    summary, metrics = run_reconciler(system, capsys, load_event)

    # Then it checked both sent rows and every metric is emitted, at zero
    assert summary["sentChecked"] == 2
    assert metrics == dict.fromkeys(METRICS, 0.0)


def test_each_kind_of_anomaly_is_found_and_counted(
    system: LocalSystem, capsys: pytest.CaptureFixture[str], load_event: Any
) -> None:
    # Given a PAID order without any outbox row (its rows never written, or deleted by hand)
    lost = system.create_order(amount="10.00")
    with system.engine.begin() as conn:
        conn.execute(
            text("UPDATE orders SET status = 'PAID', pay_time = :at, updated_at = :at WHERE id = :id"),
            {"at": now(), "id": lost["orderId"]},
        )
    # And an order whose two rows gave up (status 2)
    failed = paid_without_publish(system, amount="11.00")
    with system.engine.begin() as conn:
        conn.execute(
            text("UPDATE message_record SET status = 2 WHERE business_key = :k"), {"k": failed["orderNo"]}
        )
    # And an order whose rows were sent 40 minutes ago but never consumed (points nor SMS)
    unconsumed = paid_without_publish(system, amount="12.00")
    mark_sent(system, unconsumed["orderNo"], ago=timedelta(minutes=40))
    # And an order sent 5 minutes ago, not consumed yet: still within the 30-minute grace
    recent = paid_without_publish(system, amount="13.00")
    mark_sent(system, recent["orderNo"], ago=timedelta(minutes=5))
    # And an order fully consumed, sent 40 minutes ago: its effects are there
    healthy = system.create_order(amount="14.00")
    assert system.pay(healthy, transaction_id="txn-healthy").status == 200
    system.run_relay()
    system.drain_consumers()
    backdate_sent(system, healthy["orderNo"], ago=timedelta(minutes=40))
    # And a consumer that died holding its idempotency record (written by Powertools itself)
    # (through the consumers' persistence, which keeps the in-progress index)
    persistence = indexed_persistence_layer(
        system.resources.refs["IdempotencyTable"], boto3.client("dynamodb")
    )
    persistence.configure(IdempotencyConfig(event_key_jmespath="messageId"), function_name="sms")
    persistence.save_inprogress({"messageId": "died-mid-way"}, remaining_time_in_millis=-1000)
    persistence.save_inprogress({"messageId": "still-working"}, remaining_time_in_millis=120_000)

    # When the reconciler runs
    summary, metrics = run_reconciler(system, capsys, load_event)

    # Then each anomaly is named and counted; the recent and the healthy orders are not
    assert summary["ordersMissingOutbox"] == [lost["orderNo"]]
    assert sorted(summary["failedSample"]) == sorted(message_ids(system, failed["orderNo"]))
    assert sorted(summary["messagesWithoutEffect"]) == sorted(message_ids(system, unconsumed["orderNo"]))
    assert summary["sentChecked"] == 4  # unconsumed (2) + healthy (2); the recent rows are in their grace
    assert len(summary["stuckIdempotencyRecords"]) == 1
    assert metrics == {
        "OrdersMissingOutbox": 1.0,
        "MessagesStuckFailed": 2.0,
        "MessagesWithoutEffect": 2.0,
        "StuckIdempotencyRecords": 1.0,
    }


def test_a_points_row_without_ledger_entry_is_found_even_when_the_sms_arrived(
    system: LocalSystem, capsys: pytest.CaptureFixture[str], load_event: Any
) -> None:
    # Given an order relayed and consumed, whose points ledger entry is then lost
    order = system.create_order(amount="30.00")
    assert system.pay(order).status == 200
    system.run_relay()
    system.drain_consumers()
    backdate_sent(system, order["orderNo"], ago=timedelta(hours=2))
    [entry] = system.ledger_entries(order["userId"])
    boto3.client("dynamodb").delete_item(
        TableName=system.resources.refs["PointsTable"], Key={"pk": entry["pk"], "sk": entry["sk"]}
    )
    [points_message] = [r["message_id"] for r in system.outbox_rows() if r["topic"] == "topic.points"]

    # When the reconciler runs
    summary, metrics = run_reconciler(system, capsys, load_event)

    # Then only the points row is reported
    assert summary["messagesWithoutEffect"] == [points_message]
    assert metrics["MessagesWithoutEffect"] == 1.0


def test_sent_rows_checked_per_run_are_bounded(
    system: LocalSystem, capsys: pytest.CaptureFixture[str], load_event: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given three orders whose six rows were sent an hour ago and never consumed
    for amount in ("1.00", "2.00", "3.00"):
        mark_sent(system, paid_without_publish(system, amount=amount)["orderNo"], ago=timedelta(hours=1))
    # And the reconciler configured to check at most four sent rows a run
    monkeypatch.setenv("RECONCILE_MAX_SENT_CHECKS", "4")
    system.functions.cold_start("ReconcilerFunction")

    # When it runs
    summary, metrics = run_reconciler(system, capsys, load_event)

    # Then it checked four rows only, and reports those four
    assert summary["sentChecked"] == 4
    assert metrics["MessagesWithoutEffect"] == 4.0


def test_rows_sent_before_the_window_are_not_checked(
    system: LocalSystem, capsys: pytest.CaptureFixture[str], load_event: Any
) -> None:
    # Given an order sent three days ago and never consumed (outside the default 24-hour window)
    mark_sent(system, paid_without_publish(system)["orderNo"], ago=timedelta(days=3))

    # When the reconciler runs
    summary, metrics = run_reconciler(system, capsys, load_event)

    # Then nothing was checked or reported
    assert summary["sentChecked"] == 0
    assert metrics["MessagesWithoutEffect"] == 0.0


class SteppingClock:
    """Wall-clock time that a test moves forward by whole reconciler runs."""

    def __init__(self) -> None:
        self.at = now()

    def now(self) -> datetime:
        return self.at


def test_a_failed_row_is_logged_once_not_on_every_run(
    system: LocalSystem, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a row that gave up a minute ago, and the reconciler built on a clock the test moves
    from payment_outbox.composition import operations
    from payment_outbox.services.reconcile import RUN_INTERVAL

    order = paid_without_publish(system)
    with system.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE message_record SET status = 2, retry_count = 5, update_time = :at "
                "WHERE business_key = :key"
            ),
            {"at": now() - timedelta(minutes=1), "key": order["orderNo"]},
        )
    clock = SteppingClock()
    monkeypatch.setattr(operations, "SystemClock", lambda: clock)
    reconciler = operations.build_reconciler()
    caplog.set_level("ERROR", logger="payment_outbox.services.reconcile")

    # When it runs on schedule three times
    reports = []
    lines = []
    for _ in range(3):
        caplog.clear()
        reports.append(reconciler.reconcile())
        lines.append([r.getMessage() for r in caplog.records])
        clock.at += RUN_INTERVAL

    # Then every run counts both FAILED rows (the metric the alarm reads)
    assert [r.failed_total for r in reports] == [2, 2, 2]
    # But only the first run logs them, one line each; the next runs are quiet
    assert len(lines[0]) == 2 and all("FAILED since the last run" in line for line in lines[0])
    assert lines[1:] == [[], []]
    assert [bool(r.new_findings) for r in reports] == [True, False, False]


def test_the_schedule_interval_is_the_templates() -> None:
    # The "new since the previous run" judgement assumes the reconciler runs every RUN_INTERVAL
    from payment_outbox.services.reconcile import RUN_INTERVAL
    from tests.support import ROOT

    template = (ROOT / "template.yaml").read_text()
    assert f"Schedule: rate({int(RUN_INTERVAL.total_seconds() // 60)} minutes)" in template
