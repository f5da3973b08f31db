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
from sqlalchemy import bindparam, text

from payment_outbox.adapters.idempotent_record_handler import indexed_persistence_layer
from payment_outbox.clock import SystemClock
from payment_outbox.domain.envelope import BUSINESS_TYPE_ORDER_PAID, TOPIC_SMS, Envelope
from payment_outbox.domain.orders import PaymentNotice
from payment_outbox.services.payments import PaymentService
from payment_outbox.services.reconcile import ReconcileLimits, Reconciler
from tests.support import LocalSystem, configured_database

pytestmark = pytest.mark.integration

METRICS = (
    "OrdersMissingOutbox",
    "MessagesStuckFailed",
    "MessagesWithoutEffect",
    "StuckIdempotencyRecords",
    "SentWindowIncomplete",
)


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
        payments = PaymentService(
            database.unit_of_work, SystemClock(), after_commit_lease=timedelta(seconds=60)
        )
        payments.pay_order(
            PaymentNotice(order["orderNo"], f"txn-{uuid.uuid4().hex[:12]}", Decimal(amount), now(), "CNY")
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
        "SentWindowIncomplete": 0.0,
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


# --- every sent row of the window, page after page -------------------------------------------------


def insert_sent_sms_rows(system: LocalSystem, count: int, *, sent_at: datetime, prefix: str) -> list[str]:
    """``count`` SMS rows sent at ``sent_at`` (valid envelopes; no consumer ever ran for them)."""
    ids = [f"{prefix}-{i:05d}-{uuid.uuid4().hex[:8]}" for i in range(count)]
    rows = [
        {
            "message_id": message_id,
            "topic": TOPIC_SMS,
            "content": Envelope(
                message_id=message_id,
                topic=TOPIC_SMS,
                business_key=f"PO-{message_id}",
                business_type=BUSINESS_TYPE_ORDER_PAID,
                occurred_at=sent_at,
                payload={
                    "phone": "+8613812345678",
                    "templateId": "ORDER_PAY_SUCCESS",
                    "params": ["PO-1", "1.00"],
                },
            ).to_json(),
            "business_key": f"PO-{message_id}",
            "business_type": BUSINESS_TYPE_ORDER_PAID,
            "at": sent_at,
        }
        for message_id in ids
    ]
    with system.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO message_record (message_id, topic, content, business_key, business_type, status,"
                " retry_count, next_retry_at, create_time, update_time, sent_time)"
                " VALUES (:message_id, :topic, :content, :business_key, :business_type,"
                " 1, 0, :at, :at, :at, :at)"
            ),
            rows,
        )
    return ids


def test_every_sent_row_of_the_window_is_checked_past_the_newest_five_hundred(
    system: LocalSystem, capsys: pytest.CaptureFixture[str], load_event: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given 620 SMS rows sent within the window (40 minutes to 3 hours ago) whose effect never
    # appeared, and the reconciler reading 100 rows a page
    monkeypatch.setenv("RECONCILE_SENT_PAGE_SIZE", "100")
    system.functions.cold_start()
    missing: set[str] = set()
    for minutes_ago, count in ((40, 300), (90, 300), (180, 20)):
        missing |= set(
            insert_sent_sms_rows(
                system, count, sent_at=now() - timedelta(minutes=minutes_ago), prefix=f"m{minutes_ago}"
            )
        )

    # When the reconciler runs
    summary, metrics = run_reconciler(system, capsys, load_event)

    # Then every one of them was checked, once, and named
    assert summary["sentChecked"] == 620
    assert summary["sentComplete"] is True
    assert sorted(summary["messagesWithoutEffect"]) == sorted(missing)
    assert metrics["MessagesWithoutEffect"] == 620.0
    assert metrics["SentWindowIncomplete"] == 0.0


class _Lookups:
    """Effect lookups that find nothing and record what was checked, in order."""

    def __init__(self) -> None:
        self.checked: list[str] = []

    def entries_for_order(self, user_id: int, order_id: int) -> list[dict[str, object]]:
        return []

    def find(self, message_id: str) -> None:
        self.checked.append(message_id)


def test_rows_written_or_deleted_between_pages_make_no_row_skipped_or_checked_twice(
    system: LocalSystem,
) -> None:
    # Given 25 sent rows in the window, read 10 a page
    start = now()
    before = insert_sent_sms_rows(system, 25, sent_at=start - timedelta(hours=2), prefix="before")
    lookups = _Lookups()
    pages = 0

    with configured_database() as database:

        def unit_of_work():  # type: ignore[no-untyped-def]
            nonlocal pages
            pages += 1
            if pages == 3:
                # And, after the first page: rows sent earlier than the page's end and later (both in
                # the window), and the janitor deleting three rows the first page already checked
                insert_sent_sms_rows(system, 5, sent_at=start - timedelta(hours=3), prefix="behind")
                insert_sent_sms_rows(system, 5, sent_at=start - timedelta(hours=1), prefix="ahead")
                with system.engine.begin() as conn:
                    conn.execute(
                        text("DELETE FROM message_record WHERE message_id IN :ids").bindparams(
                            bindparam("ids", expanding=True)
                        ),
                        {"ids": lookups.checked[:3]},
                    )
            return database.operations_unit_of_work()

        reconciler = Reconciler(
            unit_of_work,
            FixedClock(start),
            points=lookups,
            sms=lookups,
            idempotency=_NoStuckRecords(),
            limits=ReconcileLimits(sent_page_size=10),
        )
        # When the reconciler runs
        report = reconciler.reconcile()

    # Then every row there at the start was checked exactly once, the rows written ahead of the
    # cursor were checked too, and none twice
    assert len(lookups.checked) == len(set(lookups.checked))
    assert set(before) <= set(lookups.checked)
    assert {m for m in lookups.checked if m.startswith("ahead")} and len(
        [m for m in lookups.checked if m.startswith("ahead")]
    ) == 5
    assert report.sent_checked == len(lookups.checked) == 30
    assert report.sent_complete


class _NoStuckRecords:
    def stuck_in_progress(self, *, now_epoch_seconds: float) -> list[object]:
        return []


class FixedClock:
    def __init__(self, at: datetime) -> None:
        self._at = at

    def now(self) -> datetime:
        return self._at


def test_a_run_out_of_time_says_so_instead_of_reporting_a_partial_window_as_whole(
    system: LocalSystem,
) -> None:
    # Given 30 sent rows in the window, read 10 a page, and a run whose time is up after the first page
    insert_sent_sms_rows(system, 30, sent_at=now() - timedelta(hours=2), prefix="late")
    lookups = _Lookups()
    left = iter([60_000, 1_000])
    with configured_database() as database:
        reconciler = Reconciler(
            database.operations_unit_of_work,
            SystemClock(),
            points=lookups,
            sms=lookups,
            idempotency=_NoStuckRecords(),
            limits=ReconcileLimits(sent_page_size=10),
        )
        # When it runs
        report = reconciler.reconcile(lambda: next(left))
    # Then it checked one page and reports its window incomplete
    assert (report.sent_checked, report.sent_complete) == (10, False)
