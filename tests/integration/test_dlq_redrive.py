"""DLQ redrive through the admin API on MariaDB + moto: each DLQ's depth and oldest message, and a
bounded, audited move back to its queue after which the consumers apply nothing twice."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from sqlalchemy import text

from tests.integration.test_admin_api import OPERATOR, admin
from tests.support import LocalSystem

pytestmark = pytest.mark.integration

REDRIVE = "/admin/dlqs/PointsDeadLetterQueue/redrive"


def dead_letter(system: LocalSystem, message: dict[str, Any], dlq: str) -> None:
    """Put a message into a DLQ with its body and attributes, as SQS does past maxReceiveCount."""
    boto3.client("sqs").send_message(
        QueueUrl=system.resources.queue_url(dlq),
        MessageBody=message["Body"],
        MessageAttributes={
            name: {"DataType": value["DataType"], "StringValue": value["StringValue"]}
            for name, value in message.get("MessageAttributes", {}).items()
        },
    )


def take_one(system: LocalSystem, queue: str) -> dict[str, Any]:
    sqs = boto3.client("sqs")
    url = system.resources.queue_url(queue)
    [message] = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["All"], MaxNumberOfMessages=10)[
        "Messages"
    ]
    sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return message


def audit_rows(system: LocalSystem) -> list[dict[str, Any]]:
    with system.engine.connect() as conn:
        return [
            dict(r._mapping)
            for r in conn.execute(text("SELECT * FROM outbox_audit WHERE action = 'dlq_redrive' ORDER BY id"))
        ]


def test_redrive_after_the_records_were_applied_shows_no_doubled_effect(system: LocalSystem) -> None:
    with system.engine.begin() as conn:
        conn.execute(text("DELETE FROM outbox_audit"))
    # Given an order whose points message was applied, and then also dead-lettered (its delete was
    # lost, say: the copy in the DLQ is a message whose effect already happened)
    applied = system.create_order("128.50", user_id=501)
    assert system.pay(applied).status == 200
    applied_copy = take_one(system, "PointsQueue")
    dead_letter(system, applied_copy, "PointsDeadLetterQueue")
    assert system.functions.invoke("PointsConsumerFunction", _event(system, applied_copy)) == {
        "batchItemFailures": []
    }
    assert system.points_balance(501) == 128
    # And an order whose points message went to the DLQ unapplied (the consumer failed it five times)
    unapplied = system.create_order("20.00", user_id=502)
    assert system.pay(unapplied, transaction_id="txn-2").status == 200
    dead_letter(system, take_one(system, "PointsQueue"), "PointsDeadLetterQueue")
    system.drain("SmsQueue", "SmsConsumerFunction")
    assert system.points_balance(502) == 0

    # When the operator looks at the DLQs
    status, listed = admin(system, "GET", "/admin/dlqs")
    # Then each DLQ of the stack is there with its depth, oldest message and target
    assert status == 200, listed
    by_name = {item["name"]: item for item in listed["items"]}
    assert set(by_name) == {
        "PointsDeadLetterQueue",
        "SmsDeadLetterQueue",
        "PointsSubscriptionDeadLetterQueue",
        "SmsSubscriptionDeadLetterQueue",
    }
    points, sms = by_name["PointsDeadLetterQueue"], by_name["SmsDeadLetterQueue"]
    assert (points["depth"], sms["depth"]) == (2, 0)
    assert points["oldestSentAt"] is not None and sms["oldestSentAt"] is None
    assert points["targetUrl"] == system.resources.queue_url("PointsQueue")
    assert by_name["SmsSubscriptionDeadLetterQueue"]["targetUrl"] == system.resources.queue_url("SmsQueue")

    # When the operator rehearses the redrive: nothing moves, nothing is audited
    status, dry = admin(
        system,
        "POST",
        REDRIVE,
        body={"dryRun": True, "reason": "bug fixed"},
    )
    assert (status, dry["wouldMove"], dry["more"], dry["auditId"]) == (200, 2, False, None)
    assert system.queue_depth("PointsDeadLetterQueue") == 2 and audit_rows(system) == []

    # When it redrives one message at a time
    body = {"dryRun": False, "reason": "points consumer fixed", "maxMessages": 1}
    _, first = admin(system, "POST", REDRIVE, body=body)
    _, second = admin(system, "POST", REDRIVE, body=body)
    # Then each call moved one, the first saying there is more; the DLQ is empty, the queue holds both
    assert (first["moved"], first["more"], second["moved"], second["more"]) == (1, True, 1, False)
    assert system.queue_depth("PointsDeadLetterQueue") == 0
    assert system.queue_depth("PointsQueue") == 2
    # And each call is audited with who, why and what it moved
    audits = audit_rows(system)
    assert [(a["actor"], a["affected_count"], a["reason"]) for a in audits] == [
        (OPERATOR, 1, "points consumer fixed"),
        (OPERATOR, 1, "points consumer fixed"),
    ]
    assert json.loads(audits[0]["filters"])["dlq"] == "PointsDeadLetterQueue"

    # When the consumer takes them
    assert system.drain("PointsQueue", "PointsConsumerFunction") == 2
    # Then the applied one was recognised (no doubled effect) and the other applied once
    assert system.points_balance(501) == 128
    assert len(system.ledger_entries(501)) == 1
    assert system.points_balance(502) == 20


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/admin/dlqs/nosuch/redrive", {"dryRun": True, "reason": "why not"}, 404, "dlq_not_found"),
        ("/admin/dlqs/not.a.name/redrive", {"dryRun": True, "reason": "why not"}, 404, "dlq_not_found"),
        (
            REDRIVE,
            {"reason": "no dry run stated"},
            422,
            "invalid_request",
        ),
        (
            REDRIVE,
            {"dryRun": False, "reason": "big", "maxMessages": 0},
            422,
            "invalid_request",
        ),
        (
            REDRIVE,
            {"dryRun": False, "reason": "big", "maxMessages": 1001},
            422,
            "invalid_request",
        ),
    ],
)
def test_bad_redrive_requests_are_refused_and_move_nothing(
    system: LocalSystem, path: str, body: dict[str, Any], status: int, code: str
) -> None:
    order = system.create_order("10.00", user_id=503)
    assert system.pay(order).status == 200
    dead_letter(system, take_one(system, "PointsQueue"), "PointsDeadLetterQueue")
    answered, answer = admin(system, "POST", path, body=body)
    assert (answered, answer["error"]["code"]) == (status, code)
    assert system.queue_depth("PointsDeadLetterQueue") == 1
    assert system.queue_depth("PointsQueue") == 0


def _event(system: LocalSystem, message: dict[str, Any]) -> dict[str, Any]:
    from payment_outbox_dev.local.harness import sqs_event

    arn = boto3.client("sqs").get_queue_attributes(
        QueueUrl=system.resources.queue_url("PointsQueue"), AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    return sqs_event([{**message, "ReceiptHandle": "applied", "Attributes": {}}], arn)
