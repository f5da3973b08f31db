"""End to end through every handler, with the events/ JSON shapes: create → notify → relay → consume."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from payment_outbox.domain.outbox import OutboxMessage
from payment_outbox.services.relay import RelayAfterCommitPublisher
from tests.support import LocalSystem, recent_paid_at, signed_headers

pytestmark = pytest.mark.e2e


def test_paid_order_credits_points_once_and_sends_one_sms(  # type: ignore[no-untyped-def]
    system: LocalSystem, load_event, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a payment API whose container dies right after the commit, before its after-commit publish,
    # so that everything downstream is the scheduled relay's doing
    def dies_after_commit(self: RelayAfterCommitPublisher, messages: Sequence[OutboxMessage]) -> None:
        return None

    monkeypatch.setattr(RelayAfterCommitPublisher, "__call__", dies_after_commit)
    # And an order created through the API with the create_order event
    create = load_event("payment_api_create_order.json")
    created = system.functions.invoke("PaymentApiFunction", create)
    assert created["statusCode"] == 201
    order = json.loads(created["body"])
    assert order["status"] == "CREATED"

    # When the provider's callback (the notify event, re-signed now) reports it paid
    notify = load_event("payment_api_notify.json")
    body = json.loads(notify["body"])
    body.update(orderNo=order["orderNo"], amount=order["amount"], paidAt=recent_paid_at())
    notify["body"] = json.dumps(body)
    notify["headers"] = {**notify["headers"], **signed_headers(notify["body"])}
    paid = system.functions.invoke("PaymentApiFunction", notify)
    assert paid["statusCode"] == 200, paid["body"]

    # Then nothing is published yet: the two outbox rows wait, pending, for the after-commit lease to end
    assert [row["status"] for row in system.outbox_rows()] == [0, 0]
    assert system.queue_depth("PointsQueue") == system.queue_depth("SmsQueue") == 0

    # When the lease has ended and the relay runs (the schedule event)
    with system.engine.begin() as conn:
        conn.execute(
            text("UPDATE message_record SET next_retry_at = :now"),
            {"now": datetime.now(UTC).replace(tzinfo=None)},
        )
    relayed = system.functions.invoke("OutboxRelayFunction", load_event("outbox_relay_schedule.json"))

    # Then the relay claimed and published both rows, retried and gave up on none,
    # and each queue holds its one message
    assert relayed == {"claimed": 2, "published": 2, "retried": 0, "failed": []}
    assert system.queue_depth("PointsQueue") == system.queue_depth("SmsQueue") == 1

    # When both consumers drain their queues
    system.drain_consumers()

    # Then the order is PAID, both outbox rows are sent, points == floor(amount), one SMS recorded
    get = load_event("payment_api_get_order.json")
    get["path"] = f"/orders/{order['orderId']}"
    get["pathParameters"] = {"orderId": str(order["orderId"])}
    fetched = json.loads(system.functions.invoke("PaymentApiFunction", get)["body"])
    assert fetched["status"] == "PAID"
    assert fetched["payTime"] is not None
    assert [row["status"] for row in system.outbox_rows()] == [1, 1]
    assert system.points_balance(order["userId"]) == 128
    deliveries = system.sms_deliveries()
    assert len(deliveries) == 1
    assert deliveries[0]["maskedPhone"]["S"] == "+86*******5678"


def test_consumer_events_in_events_folder_are_handled(system: LocalSystem, load_event) -> None:  # type: ignore[no-untyped-def]
    # Given the sample SQS events exactly as shipped in events/
    points_event = load_event("points_consumer_sqs.json")
    sms_event = load_event("sms_consumer_sqs.json")

    # When each consumer handles its event
    points = system.functions.invoke("PointsConsumerFunction", points_event)
    sms = system.functions.invoke("SmsConsumerFunction", sms_event)

    # Then no record failed and the effects are there
    assert points == {"batchItemFailures": []}
    assert sms == {"batchItemFailures": []}
    envelope = json.loads(points_event["Records"][0]["body"])  # type: ignore[index]
    assert system.points_balance(envelope["payload"]["userId"]) == envelope["payload"]["points"]
    assert len(system.sms_deliveries()) == 1
