"""``payment-outbox demo``: a narrated scenario against a running local stack.

It talks to the stack only the way a client and an operator would: HTTP to the API, the AWS API of
the emulator (boto3 with its endpoint) and the stack's local-only controls under ``/_local/``:

1. a paid order: create, pay with a signed callback, watch the points and the SMS arrive;
2. a duplicate callback (same transaction) and a duplicate delivery (the points message again):
   both absorbed, nothing applied twice;
3. an SNS outage: the payment still answers 200, the relay retries with backoff, and when SNS is
   back the points arrive;
4. a message driven to FAILED: SNS rejects it permanently, the relay gives up, emits MessagesFailed
   and the template's alarm goes to ALARM;
5. a poison message on the topic: its consumer fails it on every receive until the queue's redrive
   moves it to the dead-letter queue.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import boto3

from payment_outbox.domain.signature import sign
from payment_outbox_dev.local.auth import LocalCredentials
from payment_outbox_dev.local.callback import callback_body

T = TypeVar("T")
STATUS_NAMES = {0: "PENDING", 1: "SENT", 2: "FAILED"}


class DemoError(RuntimeError):
    pass


class StackClient:
    def __init__(self, api_url: str, secret: str, credentials: LocalCredentials) -> None:
        if not api_url.startswith(("http://", "https://")):
            raise DemoError(f"--api-url must be an http(s) URL, got {api_url!r}")
        self.api_url = api_url.rstrip("/")
        self.secret = secret
        self.credentials = credentials

    def http(
        self, method: str, path: str, body: str | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        data = body.encode() if body is not None else b""
        # The order and admin routes as an IAM caller: SigV4 by the stack's local credentials.
        signed = self.credentials.sign(
            method, self.api_url + path, data, {"Content-Type": "application/json", **(headers or {})}
        )
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked in __init__
            self.api_url + path,
            data=data if body is not None else None,
            method=method,
            headers=signed,
        )
        try:
            with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310 - checked scheme  # nosec B310
                return int(response.status), json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return int(error.code), json.loads(error.read() or b"null")

    def state(self) -> dict[str, Any]:
        status, body = self.http("GET", "/_local/state")
        if status != 200:
            raise DemoError(f"GET /_local/state answered {status}: is this a payment-outbox local stack?")
        state: dict[str, Any] = body
        return state

    def fault(self, sns: str | None) -> None:
        status, body = self.http("POST", "/_local/faults", json.dumps({"sns": sns}))
        if status != 200:
            raise DemoError(f"POST /_local/faults answered {status}: {body}")

    def create_order(self, user_id: int, amount: str) -> dict[str, Any]:
        payload = json.dumps(
            {"userId": user_id, "phone": "+8613812345678", "amount": amount, "currency": "CNY"}
        )
        status, body = self.http("POST", "/orders", payload)
        if status != 201:
            raise DemoError(f"POST /orders answered {status}: {body}")
        order: dict[str, Any] = body
        return order

    def pay(self, order: dict[str, Any], transaction_id: str) -> tuple[int, Any]:
        payload = callback_body(order["orderNo"], order["amount"], order["currency"], transaction_id)
        header = sign(payload.encode(), self.secret, int(time.time()))
        return self.http("POST", "/payments/notify", payload, {"X-Signature": header})

    def rows_of(self, order: dict[str, Any]) -> list[dict[str, Any]]:
        return [r for r in self.state()["outbox"] if r["businessKey"] == order["orderNo"]]


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, interval: float = 0.5) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise DemoError(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def _say(line: str = "") -> None:
    print(line, flush=True)


def _step(title: str) -> None:
    _say(f"\n▶ {title}")


def run_demo(
    api_url: str, secret: str, *, timeout: float = 60.0, data_dir: Path = Path(".local-stack")
) -> int:
    try:
        _run(StackClient(api_url, secret, LocalCredentials.load_or_create(data_dir)), timeout)
    except (DemoError, OSError) as exc:
        _say(f"\n✗ {exc}")
        _say("  Is the stack running?  payment-outbox local   (then: payment-outbox demo)")
        return 1
    _say("\n✓ demo finished: every outcome above was observed, none was assumed.")
    return 0


def _run(stack: StackClient, timeout: float) -> None:
    state = stack.state()
    resources = state["resources"]
    session: Any = boto3.session.Session(
        # The emulator accepts any credentials; these keep the caller's own out of it.
        aws_access_key_id="local",
        aws_secret_access_key="local",  # noqa: S106  # nosec B106 - dummy, emulator only
        region_name="us-east-1",
    )
    dynamodb: Any = session.client("dynamodb", endpoint_url=state["emulator"])
    sqs: Any = session.client("sqs", endpoint_url=state["emulator"])
    sns: Any = session.client("sns", endpoint_url=state["emulator"])
    stack.fault(None)
    user_id = 10_000 + int(time.time()) % 90_000  # a fresh user: the balance starts at 0

    def balance() -> int:
        item = dynamodb.get_item(
            TableName=resources["PointsTable"],
            Key={"pk": {"S": f"USER#{user_id}"}, "sk": {"S": "BALANCE"}},
            ConsistentRead=True,
        ).get("Item")
        return int(item["balance"]["N"]) if item else 0

    def sms_record(message_id: str) -> dict[str, Any] | None:
        item: dict[str, Any] | None = dynamodb.get_item(
            TableName=resources["SmsDeliveriesTable"],
            Key={"messageId": {"S": message_id}},
            ConsistentRead=True,
        ).get("Item")
        return item

    def in_queue(queue: str) -> int:
        attributes = sqs.get_queue_attributes(
            QueueUrl=resources[queue],
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(
            attributes["ApproximateNumberOfMessagesNotVisible"]
        )

    _say(f"stack: API {stack.api_url} · emulator {state['emulator']} · user {user_id}")

    # 1 ---------------------------------------------------------------------------------------------
    _step("1. A paid order: its points and its SMS follow")
    order = stack.create_order(user_id, "128.50")
    _say(
        f"  POST /orders → 201  order {order['orderId']} {order['orderNo']}"
        f" {order['amount']} {order['status']}"
    )
    status, paid = stack.pay(order, f"txn-{order['orderNo']}")
    _say(f"  POST /payments/notify (signed) → {status}  status {paid.get('status')}")
    rows = wait_for(
        "the order's two outbox rows",
        lambda: stack.rows_of(order) if len(stack.rows_of(order)) == 2 else None,
        timeout,
    )
    for row in rows:
        _say(f"  outbox {row['messageId']} {row['topic']:<13} {STATUS_NAMES.get(row['status'])}")
    expected = int(Decimal(order["amount"]))
    wait_for(f"{expected} points", lambda: balance() == expected, timeout)
    _say(f"  ✓ points balance of user {user_id}: {balance()}")
    sms_id = next(r["messageId"] for r in rows if r["topic"] == "topic.sms")
    record = wait_for("the SMS delivery record", lambda: sms_record(sms_id), timeout)
    _say(f"  ✓ SMS sent to {record['maskedPhone']['S']} (template {record['templateId']['S']}, once)")

    # 2 ---------------------------------------------------------------------------------------------
    _step("2. A duplicate callback and a duplicate delivery are absorbed")
    status, again = stack.pay(order, f"txn-{order['orderNo']}")
    _say(f"  POST /payments/notify again (same transaction) → {status}  status {again.get('status')}")
    _say(f"  ✓ outbox rows of the order: still {len(stack.rows_of(order))}")
    points_row = next(r for r in rows if r["topic"] == "topic.points")
    sqs.send_message(
        QueueUrl=resources["PointsQueue"],
        MessageBody=points_row["content"],
        MessageAttributes={
            "topic": {"DataType": "String", "StringValue": "topic.points"},
            "messageId": {"DataType": "String", "StringValue": points_row["messageId"]},
        },
    )
    _say(f"  the points message {points_row['messageId']} delivered again (as SNS/SQS may)")
    wait_for("PointsQueue to drain", lambda: in_queue("PointsQueue") == 0, timeout)
    _say(f"  ✓ consumed, and the balance is still {balance()} (idempotency on the envelope's messageId)")

    # 3 ---------------------------------------------------------------------------------------------
    _step("3. SNS outage: the payment still succeeds, the relay retries, recovery delivers")
    stack.fault("outage")
    _say('  POST /_local/faults {"sns": "outage"}: every publish to the topic now fails')
    second = stack.create_order(user_id, "20.00")
    status, paid = stack.pay(second, f"txn-{second['orderNo']}")
    _say(
        f"  order {second['orderNo']}: POST /payments/notify → {status} {paid.get('status')}"
        " (its publish right after commit failed)"
    )
    seen: dict[str, str | None] = {}

    def held_by_the_outage() -> bool:
        rows = stack.rows_of(second)
        for row in rows:
            if row["nextRetryAt"] != seen.get(row["messageId"]):
                seen[row["messageId"]] = row["nextRetryAt"]
                _say(
                    f"  outbox {row['messageId']} {row['topic']:<13} {STATUS_NAMES.get(row['status'])}"
                    f" retries={row['retryCount']} next={row['nextRetryAt']} error={row['lastError']}"
                )
        return bool(rows) and all(r["lastError"] and r["retryCount"] == 0 for r in rows)

    wait_for("the relay to meet the outage", held_by_the_outage, timeout)
    _say("  an outage charges no attempt: the rows back off, retries=0, and wait for SNS")
    stack.fault(None)
    _say('  POST /_local/faults {"sns": null}: SNS is back')
    total = expected + 20
    wait_for(f"a balance of {total}", lambda: balance() == total, timeout)
    _say(f"  ✓ relay delivered at its next due time; balance now {balance()}")
    for row in stack.rows_of(second):
        _say(
            f"  outbox {row['messageId']} {row['topic']:<13} {STATUS_NAMES.get(row['status'])}"
            f" after {row['retryCount']} attempt(s) charged"
        )

    # 4 ---------------------------------------------------------------------------------------------
    _step("4. A message driven to FAILED raises the MessagesFailed alarm")
    failed_before = state.get("metrics", {}).get("MessagesFailed", 0)
    stack.fault("outage")
    third = stack.create_order(user_id, "5.00")
    stack.pay(third, f"txn-{third['orderNo']}")
    stack.fault("reject")
    _say('  POST /_local/faults {"sns": "reject"}: SNS now refuses each message (InvalidParameter)')
    failed = wait_for(
        "the rows to be FAILED",
        lambda: (
            [r for r in stack.rows_of(third) if r["status"] == 2]
            if all(r["status"] == 2 for r in stack.rows_of(third))
            else None
        ),
        timeout,
    )
    stack.fault(None)
    for row in failed:
        _say(f"  outbox {row['messageId']} {row['topic']:<13} FAILED: {row['lastError']}")
    after = wait_for(
        "the MessagesFailed metric",
        lambda: stack.state() if stack.state()["metrics"].get("MessagesFailed", 0) > failed_before else None,
        timeout,
    )
    _say(
        f"  ✓ MessagesFailed (relay EMF) total {after['metrics']['MessagesFailed']:g};"
        f" MessagesFailedAlarm {after['alarms'].get('MessagesFailedAlarm')}"
    )
    _say("    an operator requeues it once the cause is fixed (docs/operations.md)")

    # 5 ---------------------------------------------------------------------------------------------
    _step("5. A poison message ends in the dead-letter queue")
    before = in_queue("SmsDeadLetterQueue")
    sns.publish(
        TopicArn=resources["OrderEventsTopic"],
        Message="this is not an envelope",
        MessageAttributes={"topic": {"DataType": "String", "StringValue": "topic.sms"}},
    )
    _say("  published a body that is not an envelope to the topic (attribute topic=topic.sms)")
    wait_for("the SMS dead-letter queue", lambda: in_queue("SmsDeadLetterQueue") > before, timeout * 2)
    dead = sqs.receive_message(
        QueueUrl=resources["SmsDeadLetterQueue"],
        AttributeNames=["All"],
        MaxNumberOfMessages=10,
        VisibilityTimeout=0,
    ).get("Messages", [])
    poison = next((m for m in dead if m["Body"] == "this is not an envelope"), None)
    if poison is not None:
        receives = poison["Attributes"]["ApproximateReceiveCount"]
        _say(f"  ✓ in SmsDeadLetterQueue (ApproximateReceiveCount {receives}); other messages never waited")
        sqs.delete_message(QueueUrl=resources["SmsDeadLetterQueue"], ReceiptHandle=poison["ReceiptHandle"])
        _say("  (deleted from the DLQ to leave the stack clean)")
