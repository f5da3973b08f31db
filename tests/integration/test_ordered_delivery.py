"""OrderedDelivery=true end to end on MariaDB + moto: the template's FIFO topic, queues and DLQs, the
relay and the after-commit publish keeping each stream (business key x topic) in order, and the
consumers holding a stream's order through a failure in its middle."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import boto3
import pytest
from sqlalchemy import text

from payment_outbox.adapters.db.engine import make_session_factory
from payment_outbox.adapters.db.unit_of_work import SqlUnitOfWork
from payment_outbox.adapters.dynamodb_points import DynamoDbPointsLedger
from payment_outbox.adapters.sns_publisher import SnsPublisher
from payment_outbox.domain.envelope import BUSINESS_TYPE_ORDER_PAID, TOPIC_POINTS, TOPIC_SMS, Envelope
from payment_outbox.domain.outbox import OutboxMessage, pending_message
from payment_outbox.ports import PointsCredit, PublishFailure, PublishOutcome
from payment_outbox_dev.checks.template import load_template
from tests.support import ROOT, LocalSystem, utc_now

pytestmark = pytest.mark.integration


def write_stream(
    system: LocalSystem, business_key: str, count: int, *, topic: str = TOPIC_POINTS, user_id: int = 7
) -> list[str]:
    """``count`` messages of one stream, written one after the other as a producer would, all due."""
    now = utc_now()
    ids = []
    with SqlUnitOfWork(make_session_factory(system.engine)) as tx:
        for n in range(count):
            payload: dict[str, Any] = (
                {"userId": user_id, "orderId": 1000 + n, "points": n + 1}
                if topic == TOPIC_POINTS
                else {
                    "phone": "+8613812345678",
                    "templateId": "ORDER_PAY_SUCCESS",
                    "params": [business_key, "1.00"],
                }
            )
            envelope = Envelope(
                message_id=uuid.uuid4().hex,
                topic=topic,
                business_key=business_key,
                business_type=BUSINESS_TYPE_ORDER_PAID,
                occurred_at=now,
                payload=payload,
            )
            tx.outbox.add_all([pending_message(envelope, now=now, due_at=now - timedelta(seconds=1))])
            ids.append(envelope.message_id)
        tx.commit()
    return ids


def make_pending_rows_due(system: LocalSystem) -> None:
    """What waiting out the back-off would do."""
    with system.engine.begin() as conn:
        conn.execute(
            text("UPDATE message_record SET next_retry_at = :now WHERE status = 0"), {"now": utc_now()}
        )


def receive_all(queue_url: str) -> list[dict[str, Any]]:
    """Receive and delete everything on the queue, batch after batch, as one consumer in order would."""
    sqs = boto3.client("sqs")
    received: list[dict[str, Any]] = []
    while batch := sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=10, AttributeNames=["All"], MessageAttributeNames=["All"]
    ).get("Messages", []):
        received.extend(batch)
        for message in batch:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return received


def message_ids(messages: Sequence[dict[str, Any]]) -> list[str]:
    return [json.loads(m["Body"])["messageId"] for m in messages]


class FailingOnce:
    """Makes SnsPublisher.publish fail the given messages once each (a throttled entry)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *message_ids: str) -> None:
        self._pending = set(message_ids)
        original = SnsPublisher.publish
        outer = self

        def publish(self: SnsPublisher, messages: Sequence[OutboxMessage]) -> PublishOutcome:
            failing = [m for m in messages if m.message_id in outer._pending]
            outcome = original(self, [m for m in messages if m.message_id not in outer._pending])
            for message in failing:
                outer._pending.discard(message.message_id)
                outcome.failed[message.message_id] = PublishFailure("Throttled: slow down")
            return outcome

        monkeypatch.setattr(SnsPublisher, "publish", publish)


# --- the template's FIFO switch -------------------------------------------------------------------


def test_ordered_delivery_provisions_a_fifo_topic_queues_and_dlqs_deduplicated_by_id(
    ordered_system: LocalSystem,
) -> None:
    # Given the template provisioned with OrderedDelivery=true
    resources = ordered_system.resources
    sqs, sns = boto3.client("sqs"), boto3.client("sns")
    # Then the topic is FIFO, without content-based deduplication
    topic = sns.get_topic_attributes(TopicArn=resources.refs["OrderEventsTopic"])["Attributes"]
    assert resources.refs["OrderEventsTopic"].endswith(".fifo")
    assert (topic["FifoTopic"], topic["ContentBasedDeduplication"]) == ("true", "false")
    # And every queue and dead-letter queue is FIFO, deduplicating on the id the publisher gives
    for queue in ("PointsQueue", "PointsDeadLetterQueue", "SmsQueue", "SmsDeadLetterQueue"):
        attributes = sqs.get_queue_attributes(QueueUrl=resources.queue_url(queue), AttributeNames=["All"])[
            "Attributes"
        ]
        assert attributes["FifoQueue"] == "true", queue
        assert attributes["ContentBasedDeduplication"] == "false", queue
    # And the relay and the payment API are told to keep stream order
    environments = resources.environments(load_template(ROOT / "template.yaml"))
    for function in ("OutboxRelayFunction", "PaymentApiFunction"):
        assert environments[function]["OUTBOX_ORDERED_BY_KEY"] == "true"


def test_standard_delivery_stays_the_default(system: LocalSystem) -> None:
    # Given the template provisioned with its defaults
    sqs = boto3.client("sqs")
    # Then the queues are standard queues and the relay does not hold messages back
    attributes = sqs.get_queue_attributes(
        QueueUrl=system.resources.queue_url("PointsQueue"), AttributeNames=["All"]
    )
    assert "FifoQueue" not in attributes["Attributes"]
    assert not system.resources.refs["OrderEventsTopic"].endswith(".fifo")
    environments = system.resources.environments(load_template(ROOT / "template.yaml"))
    assert environments["OutboxRelayFunction"]["OUTBOX_ORDERED_BY_KEY"] == "false"


# --- publishing in stream order -------------------------------------------------------------------


def test_a_paid_order_reaches_both_queues_grouped_by_stream_and_deduplicated_by_message_id(
    ordered_system: LocalSystem,
) -> None:
    # Given a created order
    order = ordered_system.create_order("128.50")
    # When it is paid (the after-commit publish sends its two messages)
    assert ordered_system.pay(order).status == 200
    # Then each queue holds its message, grouped by the stream and deduplicated by the envelope's id
    points = receive_all(ordered_system.resources.queue_url("PointsQueue"))
    sms = receive_all(ordered_system.resources.queue_url("SmsQueue"))
    for messages, topic in ((points, TOPIC_POINTS), (sms, TOPIC_SMS)):
        [message] = messages
        assert message["Attributes"]["MessageGroupId"] == f"{order['orderNo']}|{topic}"
        assert message["Attributes"]["MessageDeduplicationId"] == json.loads(message["Body"])["messageId"]


def test_a_row_published_twice_reaches_the_queue_once(ordered_system: LocalSystem) -> None:
    # Given a paid order whose messages the after-commit publish sent
    order = ordered_system.create_order("20.00")
    ordered_system.pay(order)
    # When its rows are put back to pending and the relay publishes them again (a lease that ran out)
    with ordered_system.engine.begin() as conn:
        conn.execute(text("UPDATE message_record SET status = 0, next_retry_at = :now"), {"now": utc_now()})
    assert ordered_system.run_relay()["published"] == 2
    # Then the FIFO topic dropped the copies: each queue holds its message once
    assert len(receive_all(ordered_system.resources.queue_url("PointsQueue"))) == 1
    assert len(receive_all(ordered_system.resources.queue_url("SmsQueue"))) == 1


def test_a_stream_keeps_its_order_through_a_publish_failure_in_the_middle(
    ordered_system: LocalSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given four points messages of one order, the second failing its first publish, and the order's
    # SMS message written after them
    stream = write_stream(ordered_system, "PO-ORDERED-1", 4)
    [sms] = write_stream(ordered_system, "PO-ORDERED-1", 1, topic=TOPIC_SMS)
    FailingOnce(monkeypatch, stream[1])

    # When the relay runs
    first_run = ordered_system.run_relay()
    # Then the first message went out, the failed one waits for its retry and holds the rest of its
    # stream, and the SMS (another stream) was not held
    assert first_run["published"] == 2
    assert message_ids(receive_all(ordered_system.resources.queue_url("SmsQueue"))) == [sms]
    rows = {r["message_id"]: r for r in ordered_system.outbox_rows()}
    assert [rows[m]["status"] for m in stream] == [1, 0, 0, 0]
    assert rows[stream[1]]["retry_count"] == 1

    # When the retry is due and the relay runs again
    make_pending_rows_due(ordered_system)
    ordered_system.run_relay()
    # Then the stream arrived on the queue whole and in the order written
    assert message_ids(receive_all(ordered_system.resources.queue_url("PointsQueue"))) == stream


def test_the_after_commit_publish_leaves_a_message_behind_a_pending_one_of_its_stream_to_the_relay(
    ordered_system: LocalSystem,
) -> None:
    # Given an order, and an earlier points message of its stream that is retrying (due later)
    order = ordered_system.create_order("50.00")
    [earlier] = write_stream(ordered_system, order["orderNo"], 1)
    with ordered_system.engine.begin() as conn:
        conn.execute(
            text("UPDATE message_record SET next_retry_at = :later, retry_count = 1 WHERE message_id = :id"),
            {"later": utc_now() + timedelta(minutes=5), "id": earlier},
        )

    # When the order is paid
    assert ordered_system.pay(order).status == 200

    # Then the after-commit publish sent the SMS (its stream has nothing pending) but not the points
    # message, which waits behind the earlier one: pending, untried, and due at once
    assert len(receive_all(ordered_system.resources.queue_url("SmsQueue"))) == 1
    assert receive_all(ordered_system.resources.queue_url("PointsQueue")) == []
    [later] = [
        r for r in ordered_system.outbox_rows() if r["topic"] == TOPIC_POINTS and r["message_id"] != earlier
    ]
    assert (later["status"], later["retry_count"]) == (0, 0)
    assert later["next_retry_at"] <= utc_now()
    # When the earlier message is due and the relay runs
    make_pending_rows_due(ordered_system)
    ordered_system.run_relay()
    # Then both points messages arrive, the earlier first
    assert message_ids(receive_all(ordered_system.resources.queue_url("PointsQueue"))) == [
        earlier,
        later["message_id"],
    ]


# --- consuming in stream order --------------------------------------------------------------------


class ConsumerLog:
    """Records, in order, every points credit the consumer attempts; fails the given messages' first
    attempt (a DynamoDB hiccup in the middle of a stream)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *fail_first: str) -> None:
        self.attempts: list[str] = []
        self.credited: list[str] = []
        self._fail_first = set(fail_first)
        original = DynamoDbPointsLedger.credit
        log = self

        def credit(self: DynamoDbPointsLedger, credit: PointsCredit) -> bool:
            log.attempts.append(credit.message_id)
            if credit.message_id in log._fail_first:
                log._fail_first.discard(credit.message_id)
                raise RuntimeError("DynamoDB is throttling")
            applied = original(self, credit)
            log.credited.append(credit.message_id)
            return applied

        monkeypatch.setattr(DynamoDbPointsLedger, "credit", credit)


def test_one_key_through_a_consumer_failure_in_the_middle_keeps_its_order_at_the_consumer(
    ordered_system: LocalSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given five points messages of one order (one stream), and three of another order, published in
    # order to the FIFO queue
    stream = write_stream(ordered_system, "PO-ORDERED-A", 5, user_id=7)
    other = write_stream(ordered_system, "PO-ORDERED-B", 3, user_id=8)
    ordered_system.run_relay()
    # And a points consumer that fails on the stream's second message the first time
    log = ConsumerLog(monkeypatch, stream[1])
    queue = ordered_system.resources.queue_url("PointsQueue")

    # When the consumer takes its first batch (all eight messages)
    first = ordered_system.functions.deliver(queue, "PointsConsumerFunction")

    # Then it credited the first message, failed the second, and did not touch the rest of the stream:
    # they are reported failed with it and go back to the queue behind it
    assert first.received == 8
    assert [m for m in log.attempts if m in stream] == stream[:2]
    assert log.credited[0] == stream[0]
    failed = {
        json.loads(m["Body"])["messageId"] for m in first.messages if m["MessageId"] in first.failed_ids
    }
    assert failed == set(stream[1:])
    # And the other order's stream went on regardless
    assert [m for m in log.credited if m in other] == other

    # When the queue redelivers
    while ordered_system.functions.deliver(queue, "PointsConsumerFunction").received:
        pass

    # Then the stream was credited whole, each message once, in the order written
    assert [m for m in log.credited if m in stream] == stream
    assert ordered_system.points_balance(7) == sum(range(1, 6))
    assert ordered_system.points_balance(8) == sum(range(1, 4))
    # And no message after the failed one was attempted before it succeeded on redelivery
    succeeded_at = len(log.attempts) - 1 - log.attempts[::-1].index(stream[1])
    assert min(log.attempts.index(m) for m in stream[2:]) > succeeded_at


def test_a_requeue_within_the_deduplication_window_reaches_the_consumers_once_in_effect(
    ordered_system: LocalSystem,
) -> None:
    # Given a paid order whose points message went out a moment ago (its copy still on the queue:
    # moto forgets a deduplication id once its message is deleted, SNS FIFO remembers it 5 minutes)
    order = ordered_system.create_order("30.00")
    assert ordered_system.pay(order).status == 200
    points_row = next(r for r in ordered_system.outbox_rows() if r["topic"] == TOPIC_POINTS)
    assert points_row["status"] == 1
    assert ordered_system.queue_depth("PointsQueue") == 1

    # When an operator requeues it, well within the deduplication window, and the relay publishes it
    requeued = ordered_system.api(
        "POST",
        f"/admin/messages/{points_row['message_id']}/requeue",
        json.dumps({"includeSent": True, "reason": "consumer state restored from backup"}),
    )
    assert requeued.status == 200, requeued.body
    assert ordered_system.run_relay()["published"] == 1

    # Then the queue does receive it again (a new deduplication id per requeue), not silently dropped
    assert ordered_system.queue_depth("PointsQueue") == 2
    # And both copies carry the same envelope messageId: the consumer applies it once
    assert ordered_system.drain("PointsQueue", "PointsConsumerFunction") == 2
    assert ordered_system.points_balance(order["userId"]) == 30
    assert len(ordered_system.ledger_entries(order["userId"])) == 1
