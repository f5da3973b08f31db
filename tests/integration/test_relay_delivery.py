"""The scheduled relay function on MariaDB + moto: due rows reach SNS and, by the topic attribute, the
right SQS queue; failed sends are retried until delivered (the seed's bug 2) or, at the last attempt,
given up loudly; and a row published twice after a crash still has one effect."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import boto3
import pytest
from sqlalchemy import text

from payment_outbox.adapters.db.engine import make_session_factory
from payment_outbox.adapters.db.repositories import SqlOutboxRepository
from payment_outbox.adapters.db.unit_of_work import SqlUnitOfWork
from payment_outbox.adapters.sns_publisher import SnsPublisher
from payment_outbox.clock import SystemClock
from payment_outbox.domain.envelope import BUSINESS_TYPE_ORDER_PAID, TOPIC_POINTS, TOPIC_SMS, Envelope
from payment_outbox.domain.outbox import pending_message
from payment_outbox_dev.local.harness import LocalFunctions
from tests.support import LocalSystem, floor_points

pytestmark = pytest.mark.integration

MISSING_TOPIC_ARN = "arn:aws:sns:us-east-1:123456789012:no-such-topic"


# --- helpers ---------------------------------------------------------------------------------------


def now() -> datetime:
    return SystemClock().now()


def envelope(topic: str, payload: dict[str, Any], business_key: str = "PO20261127000001") -> Envelope:
    return Envelope(
        message_id=uuid.uuid4().hex,
        topic=topic,
        business_key=business_key,
        business_type=BUSINESS_TYPE_ORDER_PAID,
        occurred_at=now(),
        payload=payload,
    )


def points_envelope(user_id: int = 7, points: int = 10) -> Envelope:
    return envelope(TOPIC_POINTS, {"userId": user_id, "orderId": 1, "points": points})


def sms_envelope() -> Envelope:
    return envelope(
        TOPIC_SMS, {"phone": "+8613812345678", "templateId": "ORDER_PAY_SUCCESS", "params": ["PO1", "10.00"]}
    )


def insert(system: LocalSystem, envelopes: Sequence[Envelope], *, due_at: datetime | None = None) -> None:
    created = now()
    with SqlUnitOfWork(make_session_factory(system.engine)) as tx:
        due = due_at or created - timedelta(seconds=1)
        tx.outbox.add_all([pending_message(e, now=created, due_at=due) for e in envelopes])
        tx.commit()


def make_pending_rows_due(system: LocalSystem) -> None:
    """Stands in for waiting: the retry time (or the lease) of every pending row is reached."""
    with system.engine.begin() as conn:
        conn.execute(
            text("UPDATE message_record SET next_retry_at = :past WHERE status = 0"),
            {"past": now() - timedelta(seconds=1)},
        )


def row(system: LocalSystem, message_id: str) -> dict[str, Any]:
    [found] = [r for r in system.outbox_rows() if r["message_id"] == message_id]
    return found


def receive_all(system: LocalSystem, queue: str) -> list[Any]:
    """Receive and delete everything on the queue."""
    sqs, url = boto3.client("sqs"), system.resources.queue_url(queue)
    received: list[Any] = []
    while batch := sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, MessageAttributeNames=["All"]
    ).get("Messages", []):
        received.extend(batch)
        for message in batch:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return received


@pytest.fixture
def sns(system: LocalSystem, monkeypatch: pytest.MonkeyPatch) -> Iterator[SnsSwitch]:
    switch = SnsSwitch(monkeypatch, system.functions)
    yield switch
    # Leave nothing on the queues for moto to carry around.
    receive_all(system, "PointsQueue")
    receive_all(system, "SmsQueue")


class SnsSwitch:
    """Makes every SNS publish of the application fail for real (moto answers NotFound: the publishers
    are built for a topic that does not exist), and makes SNS healthy again.

    The handlers run with their own environment from the template, so the topic ARN is swapped where
    the publishers are built rather than in the environment; a cold start makes every function build
    its relays afresh, as a new container would."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, functions: LocalFunctions) -> None:
        self._monkeypatch = monkeypatch
        self._functions = functions
        self._healthy_init = SnsPublisher.__init__

    def down(self) -> None:
        healthy_init = self._healthy_init

        def init_for_missing_topic(publisher: SnsPublisher, client_factory: Any, topic_arn: str) -> None:
            healthy_init(publisher, client_factory, MISSING_TOPIC_ARN)

        self._monkeypatch.setattr(SnsPublisher, "__init__", init_for_missing_topic)
        self._functions.cold_start()

    def up(self) -> None:
        self._monkeypatch.setattr(SnsPublisher, "__init__", self._healthy_init)
        self._functions.cold_start()


def emf_documents(stdout: str) -> list[dict[str, Any]]:
    documents = []
    for line in stdout.splitlines():
        if line.startswith("{"):
            document = json.loads(line)
            if "_aws" in document:
                documents.append(document)
    return documents


def metric_value(documents: list[dict[str, Any]], name: str) -> float:
    [value] = [d[name] for d in documents if name in d]
    return float(sum(value) if isinstance(value, list) else value)


# --- delivery --------------------------------------------------------------------------------------


def test_relay_publishes_due_rows_to_the_queue_of_their_topic_with_raw_delivery(
    system: LocalSystem, sns: SnsSwitch
) -> None:
    # Given a due points row, a due SMS row and a points row not due yet
    points, sms, not_due = points_envelope(), sms_envelope(), points_envelope()
    insert(system, [points, sms])
    insert(system, [not_due], due_at=now() + timedelta(minutes=5))

    # When the relay function runs
    result = system.run_relay()

    # Then the two due rows were published and are marked sent; the other still waits
    assert result == {"claimed": 2, "published": 2, "retried": 0, "failed": []}
    for message_id in (points.message_id, sms.message_id):
        sent = row(system, message_id)
        assert (sent["status"], sent["retry_count"], sent["last_error"]) == (1, 0, None)
        assert sent["sent_time"] is not None
    assert row(system, not_due.message_id)["status"] == 0

    # And the points queue got only the points message, its body the envelope JSON exactly as stored
    [on_points] = receive_all(system, "PointsQueue")
    assert on_points["Body"] == points.to_json()
    assert json.loads(on_points["Body"])["messageId"] == points.message_id
    assert on_points["MessageAttributes"]["topic"]["StringValue"] == TOPIC_POINTS
    assert on_points["MessageAttributes"]["messageId"]["StringValue"] == points.message_id
    # And the SMS queue got only the SMS message, the same way
    [on_sms] = receive_all(system, "SmsQueue")
    assert on_sms["Body"] == sms.to_json()
    assert on_sms["MessageAttributes"]["topic"]["StringValue"] == TOPIC_SMS
    assert on_sms["MessageAttributes"]["messageId"]["StringValue"] == sms.message_id


def test_relay_run_with_nothing_due_publishes_nothing(system: LocalSystem, sns: SnsSwitch) -> None:
    # Given only a row whose retry is not due yet
    insert(system, [points_envelope()], due_at=now() + timedelta(minutes=1))

    # When the relay function runs
    result = system.run_relay()

    # Then nothing was claimed and nothing reached the queues
    assert result == {"claimed": 0, "published": 0, "retried": 0, "failed": []}
    assert system.queue_depth("PointsQueue") == 0


def test_a_failed_publish_keeps_the_row_pending_and_backs_off(system: LocalSystem, sns: SnsSwitch) -> None:
    # Given a due row and SNS failing every publish
    message = points_envelope()
    insert(system, [message])
    sns.down()

    # When the relay function runs
    started = now()
    result = system.run_relay()
    finished = now()

    # Then the row was counted for a retry, not given up
    assert result == {"claimed": 1, "published": 0, "retried": 1, "failed": []}
    failed = row(system, message.message_id)
    assert (failed["status"], failed["retry_count"]) == (0, 1)
    assert "NotFound" in failed["last_error"]
    # And its next attempt is after the failure, within the first backoff step (2 s)
    assert started < failed["next_retry_at"] <= finished + timedelta(seconds=2)
    assert failed["sent_time"] is None


def test_seed_bug_failed_send_is_retried_and_delivered(system: LocalSystem, sns: SnsSwitch) -> None:
    # Given an order, and SNS failing while it is paid: the publish right after the commit fails
    order = system.create_order(amount="128.50", user_id=77)
    sns.down()
    before = now()
    paid = system.pay(order)
    assert paid.status == 200, paid.body

    # Then the failed send is not given up (the seed set status 2, which its retry job never selected):
    # both rows stay pending with one failure counted, the error kept, and a later retry time
    rows = system.outbox_rows()
    assert len(rows) == 2
    for failed in rows:
        assert (failed["status"], failed["retry_count"]) == (0, 1)
        assert "NotFound" in failed["last_error"]
        # due again after the first backoff step (2 s), well before the 60 s after-commit lease would end
        assert before < failed["next_retry_at"] <= now() + timedelta(seconds=2)
    assert system.queue_depth("PointsQueue") == 0

    # When SNS is healthy again, the retry time has come, and the relay runs
    sns.up()
    make_pending_rows_due(system)
    result = system.run_relay()

    # Then it delivers both rows, which end sent
    assert result == {"claimed": 2, "published": 2, "retried": 0, "failed": []}
    for sent in system.outbox_rows():
        assert (sent["status"], sent["last_error"]) == (1, None)
        assert sent["sent_time"] is not None

    # And the consumers credit the points and send the SMS
    system.drain_consumers()
    assert system.points_balance(77) == floor_points("128.50") == 128
    assert len(system.ledger_entries(77)) == 1
    assert len(system.sms_deliveries()) == 1


def test_a_row_failing_its_last_attempt_is_failed_and_alarmed(
    system: LocalSystem, sns: SnsSwitch, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    # Given the relay's OUTBOX_MAX_ATTEMPTS as the template sets it, a due row, and SNS failing every publish
    max_attempts = int(system.resources.parameters["OutboxMaxAttempts"])
    assert max_attempts > 1
    message = points_envelope()
    insert(system, [message])
    sns.down()

    # When the relay fails to publish it on every attempt but the last
    for attempt in range(1, max_attempts):
        capsys.readouterr()
        result = system.run_relay()

        # Then each time the row stays pending, the failure counted, and no failure is alarmed
        assert result["retried"] == 1
        assert result["failed"] == []
        retrying = row(system, message.message_id)
        assert (retrying["status"], retrying["retry_count"]) == (0, attempt)
        assert metric_value(emf_documents(capsys.readouterr().out), "MessagesFailed") == 0
        make_pending_rows_due(system)

    # When the last attempt fails too
    caplog.clear()
    result = system.run_relay()
    stdout = capsys.readouterr().out

    # Then the row is given up: FAILED with its attempts and last error
    assert result["failed"] == [message.message_id]
    given_up = row(system, message.message_id)
    assert (given_up["status"], given_up["retry_count"]) == (2, max_attempts)
    assert "NotFound" in given_up["last_error"]
    # And the run's metrics report it for the alarm
    assert metric_value(emf_documents(stdout), "MessagesFailed") >= 1
    # And the relay function logs an error naming the message (as a structured messageId key)
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    handler_errors = [r for r in errors if r.name == "outbox-relay"]
    assert any(getattr(r, "messageId", None) == message.message_id for r in handler_errors)
    assert any(message.message_id in r.getMessage() for r in errors)

    # And, even once SNS is healthy again, a given-up row is left for an operator, not republished
    sns.up()
    assert system.run_relay()["claimed"] == 0
    assert row(system, message.message_id)["status"] == 2


def test_a_row_too_large_for_sns_fails_while_the_others_are_sent(system: LocalSystem, sns: SnsSwitch) -> None:
    # Given a due row whose content exceeds SNS's 256 KiB, between two ordinary due rows
    small_before = points_envelope()
    too_large = envelope(TOPIC_POINTS, {"userId": 7, "orderId": 1, "points": 1, "note": "x" * (257 * 1024)})
    small_after = sms_envelope()
    insert(system, [small_before, too_large, small_after])
    assert len(too_large.to_json().encode()) > 256 * 1024

    # When the relay function runs
    result = system.run_relay()

    # Then the large row is given up at once (no retry can help), and the other rows are sent
    assert result["failed"] == [too_large.message_id]
    assert (result["published"], result["retried"]) == (2, 0)
    failed = row(system, too_large.message_id)
    assert (failed["status"], failed["retry_count"]) == (2, 1)
    assert "bytes" in failed["last_error"]
    assert row(system, small_before.message_id)["status"] == 1
    assert row(system, small_after.message_id)["status"] == 1
    # And only the ordinary rows reached the queues
    points = [json.loads(m["Body"])["messageId"] for m in receive_all(system, "PointsQueue")]
    sms = [json.loads(m["Body"])["messageId"] for m in receive_all(system, "SmsQueue")]
    assert (points, sms) == ([small_before.message_id], [small_after.message_id])


def test_a_relay_crash_after_publish_republishes_but_credits_once(
    system: LocalSystem, sns: SnsSwitch, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a paid order whose rows wait for the relay (the publish after the commit failed)
    order = system.create_order(amount="99.90", user_id=88)
    sns.down()
    assert system.pay(order).status == 200
    sns.up()
    make_pending_rows_due(system)
    # And a relay that dies after publishing, before it marks the rows sent
    original_mark_sent = SqlOutboxRepository.mark_sent
    crashes: list[Sequence[str]] = []

    def mark_sent_crashing_once(
        self: SqlOutboxRepository, message_ids: Sequence[str], *, now: datetime
    ) -> int:
        if not crashes:
            crashes.append(message_ids)
            raise RuntimeError("relay container died after publishing")
        return original_mark_sent(self, message_ids, now=now)

    monkeypatch.setattr(SqlOutboxRepository, "mark_sent", mark_sent_crashing_once)

    # When the relay runs and dies
    with pytest.raises(RuntimeError, match="died after publishing"):
        system.run_relay()

    # Then the messages are out, but the rows are still pending, under the dead relay's lease
    assert len(crashes[0]) == 2
    assert system.queue_depth("PointsQueue") == 1
    assert system.queue_depth("SmsQueue") == 1
    for pending in system.outbox_rows():
        assert pending["status"] == 0
        assert pending["next_retry_at"] > now()
    assert system.run_relay()["claimed"] == 0

    # When the lease passes and the relay runs again
    make_pending_rows_due(system)
    result = system.run_relay()

    # Then it publishes the rows a second time and marks them sent
    assert result["published"] == 2
    assert [r["status"] for r in system.outbox_rows()] == [1, 1]
    # And the consumers receive each message twice, yet credit points once and send one SMS
    assert system.drain("PointsQueue", "PointsConsumerFunction") == 2
    assert system.drain("SmsQueue", "SmsConsumerFunction") == 2
    assert len(system.ledger_entries(88)) == 1
    assert system.points_balance(88) == floor_points("99.90") == 99
    assert len(system.sms_deliveries()) == 1
