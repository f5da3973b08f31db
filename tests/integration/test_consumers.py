"""The points and SMS consumers on moto, fed with messages the real pipeline published: the envelope's
messageId reaches them, duplicates apply once, poison messages end in the dead-letter queue, and no
full phone number is logged."""

from __future__ import annotations

import json
import logging
import traceback
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from sqlalchemy import text

from payment_outbox.domain.outbox import OutboxMessage
from payment_outbox.ports import PointsCredit
from payment_outbox.services.relay import RelayAfterCommitPublisher
from payment_outbox_dev.checks.template import load_template
from payment_outbox_dev.local.harness import ACCOUNT, REGION, sqs_event
from tests.support import ROOT, LocalSystem, points_ledger, utc_now

pytestmark = pytest.mark.integration

PHONE = "+8613812345678"
MASKED_PHONE = "+86*******5678"
QUEUE_OF_TOPIC = {"topic.points": "PointsQueue", "topic.sms": "SmsQueue"}
CONSUMER_OF_QUEUE = {"PointsQueue": "PointsConsumerFunction", "SmsQueue": "SmsConsumerFunction"}


# --- helpers ------------------------------------------------------------------------------------------


def sms_sent() -> dict[str, tuple[str, str]]:
    """What moto's SNS has sent as SMS so far: provider message id -> (phone, text)."""
    from moto.sns.models import sns_backends

    sent: dict[str, tuple[str, str]] = sns_backends[ACCOUNT][REGION].sms_messages
    return sent


def take_messages(system: LocalSystem, queue: str) -> list[dict[str, Any]]:
    """Receive and delete every visible message of the queue, with attributes."""
    sqs, url = boto3.client("sqs"), system.resources.queue_url(queue)
    taken: list[dict[str, Any]] = []
    while True:
        batch = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], AttributeNames=["All"]
        ).get("Messages", [])
        if not batch:
            return taken
        for message in batch:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        taken.extend(batch)


def queue_arn(system: LocalSystem, queue: str) -> str:
    return system.resources.attributes[(queue, "Arn")]


def paid_order(system: LocalSystem, amount: str = "128.50") -> dict[str, Any]:
    order = system.create_order(amount=amount, phone=PHONE)
    response = system.pay(order)
    assert response.status == 200, response.body
    return order


def one_published_message(system: LocalSystem, queue: str) -> dict[str, Any]:
    """Pay an order and take the single message the after-commit publish put in ``queue``; drain the other."""
    paid_order(system)
    messages = take_messages(system, queue)
    assert len(messages) == 1
    for other in QUEUE_OF_TOPIC.values():
        if other != queue:
            take_messages(system, other)
    return messages[0]


def copy_with_new_sqs_id(message: dict[str, Any]) -> dict[str, Any]:
    """The same body as SQS would deliver it again after a second publish: a new SQS message id."""
    return {**message, "MessageId": str(uuid.uuid4()), "ReceiptHandle": uuid.uuid4().hex}


def clear_idempotency_records(system: LocalSystem) -> int:
    dynamodb, table = boto3.client("dynamodb"), system.resources.refs["IdempotencyTable"]
    items = dynamodb.scan(TableName=table)["Items"]
    for item in items:
        dynamodb.delete_item(TableName=table, Key={"id": item["id"]})
    return len(items)


def max_receive_count(queue: str) -> int:
    template = load_template(ROOT / "template.yaml")
    return int(template["Resources"][queue]["Properties"]["RedrivePolicy"]["maxReceiveCount"])


# --- the envelope's messageId reaches the consumers -------------------------------------------------


@pytest.mark.parametrize("published_by", ["relay", "after-commit-publish"])
def test_seed_bug_consumers_receive_the_message_id(
    system: LocalSystem, monkeypatch: pytest.MonkeyPatch, published_by: str
) -> None:
    # Given a paid order whose rows were published by the scheduled relay or right after commit
    if published_by == "relay":

        def skip(self: RelayAfterCommitPublisher, messages: Sequence[OutboxMessage]) -> None:
            return None

        monkeypatch.setattr(RelayAfterCommitPublisher, "__call__", skip)
    paid_order(system)
    if published_by == "relay":
        assert system.queue_depth("PointsQueue") == system.queue_depth("SmsQueue") == 0
        with system.engine.begin() as conn:
            conn.execute(
                text("UPDATE message_record SET next_retry_at = :due"),
                {"due": utc_now() - timedelta(seconds=1)},
            )
        assert system.run_relay()["published"] == 2

    # When each queue is read
    rows = {row["topic"]: row for row in system.outbox_rows()}
    assert [row["status"] for row in rows.values()] == [1, 1]
    for topic, queue in QUEUE_OF_TOPIC.items():
        messages = take_messages(system, queue)

        # Then it holds exactly its row's message, carrying the row's message_id in the body and attributes
        assert len(messages) == 1, queue
        message = messages[0]
        body = json.loads(message["Body"])
        assert body["messageId"] == rows[topic]["message_id"]
        assert body["topic"] == topic
        assert message["MessageAttributes"]["messageId"]["StringValue"] == rows[topic]["message_id"]
        assert message["MessageAttributes"]["topic"]["StringValue"] == topic


# --- duplicates apply once --------------------------------------------------------------------------


def test_points_message_delivered_twice_credits_once(system: LocalSystem) -> None:
    # Given the points message the pipeline delivered for a paid order of 128.50
    message = one_published_message(system, "PointsQueue")
    arn = queue_arn(system, "PointsQueue")

    # When the consumer gets it twice, and then once more under another SQS message id
    responses = [
        system.functions.invoke("PointsConsumerFunction", sqs_event([message], arn)),
        system.functions.invoke("PointsConsumerFunction", sqs_event([message], arn)),
        system.functions.invoke("PointsConsumerFunction", sqs_event([copy_with_new_sqs_id(message)], arn)),
    ]

    # Then every delivery succeeds, and there is one ledger entry and 128 points
    assert responses == [{"batchItemFailures": []}] * 3
    entries = system.ledger_entries(42)
    assert len(entries) == 1
    assert entries[0]["messageId"]["S"] == json.loads(message["Body"])["messageId"]
    assert system.points_balance(42) == 128


def test_sms_message_delivered_twice_sends_one_sms(system: LocalSystem) -> None:
    # Given the SMS message the pipeline delivered for a paid order
    message = one_published_message(system, "SmsQueue")
    arn = queue_arn(system, "SmsQueue")
    sent_before = len(sms_sent())

    # When the consumer gets it twice, and then once more under another SQS message id
    responses = [
        system.functions.invoke("SmsConsumerFunction", sqs_event([message], arn)),
        system.functions.invoke("SmsConsumerFunction", sqs_event([message], arn)),
        system.functions.invoke("SmsConsumerFunction", sqs_event([copy_with_new_sqs_id(message)], arn)),
    ]

    # Then every delivery succeeds, one SMS went out, and one delivery record holds the masked phone
    assert responses == [{"batchItemFailures": []}] * 3
    assert len(sms_sent()) == sent_before + 1
    phone, sms_text = list(sms_sent().values())[-1]
    assert phone == PHONE
    assert "128.50" in sms_text
    deliveries = system.sms_deliveries()
    assert len(deliveries) == 1
    assert deliveries[0]["messageId"]["S"] == json.loads(message["Body"])["messageId"]
    assert deliveries[0]["maskedPhone"]["S"] == MASKED_PHONE


def test_duplicates_after_the_idempotency_record_expired_still_apply_once(system: LocalSystem) -> None:
    # Given both messages of a paid order, each handled once
    paid_order(system)
    messages = {queue: take_messages(system, queue) for queue in QUEUE_OF_TOPIC.values()}
    for queue, batch in messages.items():
        assert len(batch) == 1
        system.functions.invoke(CONSUMER_OF_QUEUE[queue], sqs_event(batch, queue_arn(system, queue)))
    sent_before = len(sms_sent())

    # When the idempotency records are gone (expired) and both messages arrive again
    assert clear_idempotency_records(system) == 2
    for queue, batch in messages.items():
        response = system.functions.invoke(
            CONSUMER_OF_QUEUE[queue], sqs_event([copy_with_new_sqs_id(batch[0])], queue_arn(system, queue))
        )
        assert response == {"batchItemFailures": []}

    # Then the ledger entry and the delivery record still make them no-ops
    assert system.points_balance(42) == 128
    assert len(system.ledger_entries(42)) == 1
    assert len(sms_sent()) == sent_before
    assert len(system.sms_deliveries()) == 1


def test_ledger_credits_a_message_once_without_the_idempotency_layer(system: LocalSystem) -> None:
    # Given the ledger as the points consumer builds it, and one credit
    ledger = points_ledger()
    credit = PointsCredit(message_id="msg-1", user_id=7, order_id=1, points=128, credited_at=utc_now())

    # When the same message is credited twice
    first, second = ledger.credit(credit), ledger.credit(credit)

    # Then only the first applied: the balance counts it once and one ledger entry exists
    assert (first, second) == (True, False)
    assert ledger.balance(7) == 128
    assert len(system.ledger_entries(7)) == 1

    # And another message for the same user does add up
    assert ledger.credit(PointsCredit("msg-2", 7, 2, 5, utc_now())) is True
    assert ledger.balance(7) == 133


# --- poison messages --------------------------------------------------------------------------------

POISON_BODIES = {
    "not-json": "this is not json",
    "json-array": "[1, 2, 3]",
    "envelope-without-fields": json.dumps({"messageId": "poison-1"}),
    "wrong-topic": json.dumps(
        {
            "messageId": "poison-2",
            "topic": "topic.sms",
            "businessKey": "PO1",
            "businessType": "ORDER_PAID",
            "occurredAt": "2026-11-27T10:15:00Z",
            "payload": {"userId": 42, "orderId": 1, "points": 5},
        }
    ),
    "invalid-payload": json.dumps(
        {
            "messageId": "poison-3",
            "topic": "topic.points",
            "businessKey": "PO1",
            "businessType": "ORDER_PAID",
            "occurredAt": "2026-11-27T10:15:00Z",
            "payload": {"userId": "someone", "points": -1},
        }
    ),
}


def test_poison_records_fail_alone_and_end_in_the_dead_letter_queue(system: LocalSystem) -> None:
    # Given the points queue holding a good message (a paid order of 128.50) and one poison message of
    # each kind
    paid_order(system)
    take_messages(system, "SmsQueue")
    sqs, url = boto3.client("sqs"), system.resources.queue_url("PointsQueue")
    poison_ids = {
        sqs.send_message(QueueUrl=url, MessageBody=body)["MessageId"]: kind
        for kind, body in POISON_BODIES.items()
    }

    # When the consumer gets them all in one batch
    first = system.functions.deliver(url, "PointsConsumerFunction")

    # Then only the poison records are reported failed, and the good one is credited
    assert first.received == 1 + len(POISON_BODIES)
    assert {f["itemIdentifier"] for f in first.response["batchItemFailures"]} == set(poison_ids)
    assert system.points_balance(42) == 128

    # When the poller keeps delivering until the queue answers empty (a batch of only poison fails
    # as a whole: the handler raises, and the messages come back when their visibility ends)
    attempts = 1
    for _ in range(20):
        try:
            delivery = system.functions.deliver(url, "PointsConsumerFunction", visibility_timeout=0)
        except BatchProcessingError:
            attempts += 1
            continue
        if delivery.received == 0:
            break
        pytest.fail(f"a poison batch did not fail: {delivery.response}")

    # Then each poison was received maxReceiveCount times and then moved to the dead-letter queue
    assert attempts == max_receive_count("PointsQueue")
    assert system.queue_depth("PointsQueue") == 0
    dead = take_messages(system, "PointsDeadLetterQueue")
    assert {m["MessageId"]: m["Body"] for m in dead} == {
        message_id: POISON_BODIES[kind] for message_id, kind in poison_ids.items()
    }
    # And the good message was credited exactly once along the way
    assert system.points_balance(42) == 128
    assert len(system.ledger_entries(42)) == 1


# --- no full phone numbers in logs ------------------------------------------------------------------


def test_sms_consumer_never_logs_the_full_phone_number(
    system: LocalSystem, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    # Given the SMS message of a paid order, and every log record at INFO and above captured
    message = one_published_message(system, "SmsQueue")
    assert PHONE in message["Body"]
    capfd.readouterr()
    caplog.clear()
    caplog.set_level(logging.INFO)

    # When the SMS consumer handles it, and then a duplicate of it
    arn = queue_arn(system, "SmsQueue")
    system.functions.invoke("SmsConsumerFunction", sqs_event([message], arn))
    system.functions.invoke("SmsConsumerFunction", sqs_event([copy_with_new_sqs_id(message)], arn))

    # Then the SMS went out, yet no log line (records, stdout, stderr) holds the full phone number
    assert len(system.sms_deliveries()) == 1
    captured = capfd.readouterr()
    logged = "\n".join([caplog.text, *(r.getMessage() for r in caplog.records), captured.out, captured.err])
    assert MASKED_PHONE in logged  # the consumer's log lines were captured, with the masked form
    assert PHONE not in logged
    assert PHONE[1:] not in logged
    # And the delivery record keeps only the masked form
    record = system.sms_deliveries()[0]
    assert record["maskedPhone"]["S"] == MASKED_PHONE
    assert PHONE not in json.dumps(record)


def invalid_sms_envelope(message_id: str) -> str:
    """An SMS message whose payload lacks its params: it can never be sent, yet it holds a phone."""
    return json.dumps(
        {
            "messageId": message_id,
            "topic": "topic.sms",
            "businessKey": "PO1",
            "businessType": "ORDER_PAID",
            "occurredAt": "2026-11-27T10:15:00Z",
            "payload": {"phone": PHONE, "templateId": "ORDER_PAY_SUCCESS"},
        }
    )


@pytest.mark.parametrize("batch", ["poison-alone", "poison-with-a-good-message"])
def test_sms_consumer_does_not_log_the_phone_of_a_poison_message(
    system: LocalSystem, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, batch: str
) -> None:
    # Given an invalid SMS message carrying a phone number, alone or next to a good SMS message
    good = [one_published_message(system, "SmsQueue")] if batch == "poison-with-a-good-message" else []
    poison = {
        "MessageId": str(uuid.uuid4()),
        "ReceiptHandle": uuid.uuid4().hex,
        "Body": invalid_sms_envelope("poison-sms"),
        "MessageAttributes": {},
    }
    capfd.readouterr()
    caplog.clear()
    caplog.set_level(logging.INFO)

    # When the SMS consumer gets the batch
    event = sqs_event([*good, poison], queue_arn(system, "SmsQueue"))
    try:
        response = system.functions.invoke("SmsConsumerFunction", event)
    except BatchProcessingError as exc:
        # What the Lambda runtime would write to the log for the failed invocation
        response, reported = None, "".join(traceback.format_exception(exc))
    else:
        reported = ""

    # Then the poison is refused (alone: the whole invocation fails; mixed: only it is reported)
    if good:
        assert response == {"batchItemFailures": [{"itemIdentifier": poison["MessageId"]}]}
        assert len(system.sms_deliveries()) == 1
    else:
        assert response is None
        assert "SmsPayload" in reported
    # And neither the log records, nor stdout/stderr, nor the reported error quote the phone number
    captured = capfd.readouterr()
    logged = "\n".join(
        [caplog.text, *(r.getMessage() for r in caplog.records), captured.out, captured.err, reported]
    )
    assert PHONE not in logged
    assert PHONE[1:] not in logged
