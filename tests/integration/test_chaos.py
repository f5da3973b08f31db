"""The chaos run (``make chaos``) in small, on MariaDB: random faults at every boundary, then healing
and draining, and every paid order applied exactly once. Also: the run's checks are not vacuous, they
catch a consumer that applies a message twice."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import Engine

from payment_outbox.adapters.dynamodb_points import DynamoDbPointsLedger
from payment_outbox.ports import PointsCredit
from payment_outbox_dev.chaos.inprocess import ChaosConfig, run_chaos
from payment_outbox_dev.chaos.report import ChaosReport
from tests.support import ROOT

pytestmark = pytest.mark.integration

#: Every kind of fault the run injects at random (duplicate deliveries and callbacks included).
FAULT_KINDS = {
    "sns throttling",
    "sns internal error",
    "sns batch entries failed",
    "sns answer lost after publishing",
    "crash after commit, before after-commit publish",
    "crash after publish, before mark sent",
    "relay run overlapping the after-commit publish",
    "relay running throughout the callbacks",
    "dynamodb ledger throttled",
    "dynamodb ledger internal error",
    "points consumer killed after crediting (INPROGRESS left)",
    "dynamodb idempotency put failed",
    "dynamodb idempotency completion failed",
    "dynamodb SMS delivery record write failed",
    "SMS consumer killed after recording the SMS",
    "SMS provider throttled",
    "SMS provider took the SMS, answer lost",
    "SMS consumer killed after the provider took the SMS",
    "duplicate SQS delivery",
    "duplicate callback",
}


def chaos(db: Engine, orders: int, **options: Any) -> ChaosReport:
    url = db.url.render_as_string(hide_password=False)
    return run_chaos(ChaosConfig(orders=orders, database_url=url, root=ROOT, **options))


def test_a_chaos_run_on_mariadb_applies_every_paid_order_exactly_once(db: Engine) -> None:
    # Given 60 orders, seeded, with faults at a high rate so every kind shows up in a small run: seed
    # 34's first three waves run without the background relay, so they replay exactly (see the
    # same-seed test below) and inject every other kind; its fourth starts the background relay
    # When the chaos run pays them through the real handlers, heals and drains
    report = chaos(db, 60, seed=34, fault_rate=0.5, duplicate_rate=0.2, overlap_rate=0.5, wave_size=10)

    # Then faults of every kind were injected, and duplicates were really published and delivered
    assert set(report.faults) == FAULT_KINDS, report.render()
    assert report.duplicate_publishes > 0
    assert report.deliveries > 2 * 60
    # And the SMS whose send went unanswered were parked, then decided by the operator's runbook
    assert report.sms_uncertain_delivered > 0, report.render()
    # And every paid order has its two rows sent, one ledger entry, one SMS record and one SMS sent
    assert (report.ledger_entries, report.sms_records, report.sms_sent) == (60, 60, 60), report.render()
    assert report.duplicate_effects == 0, report.render()
    assert report.lost_messages == 0, report.render()
    assert report.rows_pending == report.rows_failed == 0, report.render()
    # And nothing is left on the queues or in the dead-letter queues
    assert report.left_on_queues == report.dead_letters == 0, report.render()
    assert report.problems == []
    assert report.ok


def test_a_chaos_run_with_ordered_delivery_applies_every_paid_order_exactly_once(db: Engine) -> None:
    # Given 40 orders on the FIFO topic and queues (OrderedDelivery=true), faults at a high rate
    # When the chaos run pays them through the real handlers, heals and drains
    report = chaos(
        db,
        40,
        seed=11,
        fault_rate=0.5,
        duplicate_rate=0.2,
        overlap_rate=0.5,
        wave_size=10,
        parameters={"OrderedDelivery": "true"},
    )

    # Then duplicates were injected on the FIFO queues too, and every order was applied exactly once
    assert report.faults["duplicate SQS delivery"] > 0, report.render()
    assert (report.ledger_entries, report.sms_records, report.sms_sent) == (40, 40, 40), report.render()
    assert report.duplicate_effects == report.lost_messages == 0, report.render()
    assert report.rows_pending == report.rows_failed == 0, report.render()
    assert report.left_on_queues == report.dead_letters == 0, report.render()
    assert report.ok


def test_the_same_seed_injects_the_same_faults(db: Engine) -> None:
    # Given two runs with one seed, without overlapping relays (thread timing is not seeded)
    options = {"seed": 3, "fault_rate": 0.4, "overlap_rate": 0.0, "wave_size": 10}

    # When both run
    first = chaos(db, 20, **options)
    second = chaos(db, 20, **options)

    # Then they inject the same faults, publish and deliver alike, and both apply every order once
    assert first.faults == second.faults
    assert (first.publishes, first.deliveries) == (second.publishes, second.deliveries)
    assert first.ok and second.ok


def test_the_chaos_run_catches_a_consumer_that_credits_a_message_twice(
    db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a broken ledger that writes every credit under a fresh key, so a redelivered message
    # is credited again
    original_credit = DynamoDbPointsLedger.credit

    def credit_without_dedup(self: DynamoDbPointsLedger, credit: PointsCredit) -> bool:
        return original_credit(
            self,
            PointsCredit(
                f"{credit.message_id}-{uuid.uuid4().hex[:6]}",
                credit.user_id,
                credit.order_id,
                credit.points,
                credit.credited_at,
            ),
        )

    monkeypatch.setattr(DynamoDbPointsLedger, "credit", credit_without_dedup)

    # When a chaos run with duplicate deliveries runs against it
    report = chaos(db, 20, seed=5, fault_rate=0.4, duplicate_rate=0.5, overlap_rate=0.0)

    # Then the report counts duplicate effects and fails
    assert report.duplicate_effects > 0
    assert not report.ok
    assert "RESULT: FAILED" in report.render()
