"""Test helpers: the whole system assembled on MariaDB + moto from template.yaml."""

from __future__ import annotations

import http.server
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pytest
from sqlalchemy import Engine, text

from payment_outbox import timeouts
from payment_outbox.adapters.aws import AwsClients
from payment_outbox.adapters.db.database import Database
from payment_outbox.adapters.dynamodb_points import DynamoDbPointsLedger
from payment_outbox.clock import SystemClock
from payment_outbox.composition.database import connect_database
from payment_outbox.domain.signature import sign
from payment_outbox.settings import DatabaseSettings, PointsSettings
from payment_outbox_dev.checks.template import load_template
from payment_outbox_dev.local.harness import ApiResponse, Delivery, LocalFunctions
from payment_outbox_dev.local.provision import Provisioned, provision

ROOT = Path(__file__).resolve().parents[1]
TEST_WEBHOOK_SECRET = "test-webhook-secret-of-32-characters"


def signed_headers(body: str, *, secret: str = TEST_WEBHOOK_SECRET, at: int | None = None) -> dict[str, str]:
    return {"X-Signature": sign(body.encode(), secret, int(time.time()) if at is None else at)}


def utc_now() -> datetime:
    """Now as the database stores it (naive UTC), from the clock the runtime reads."""
    return SystemClock().now()


def recent_paid_at(seconds_ago: int = 60) -> str:
    """A callback's paidAt a little before now (RFC 3339, whole seconds): inside the accepted window."""
    moment = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=seconds_ago)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def pay_time_of(paid_at: str) -> str:
    """How the API shows a paidAt given as ``recent_paid_at()`` (milliseconds, Z)."""
    return paid_at.replace("Z", ".000Z")


def notify_body(
    order_no: str,
    amount: str,
    transaction_id: str = "txn-1",
    paid_at: str | None = None,
    currency: str = "CNY",
) -> str:
    return json.dumps(
        {
            "orderNo": order_no,
            "transactionId": transaction_id,
            "amount": amount,
            "currency": currency,
            "paidAt": paid_at or recent_paid_at(),
        }
    )


@dataclass
class LocalSystem:
    engine: Engine
    resources: Provisioned
    functions: LocalFunctions

    @classmethod
    def start(
        cls,
        engine: Engine,
        monkeypatch: pytest.MonkeyPatch,
        parameters: dict[str, str] | None = None,
        environment: dict[str, str] | None = None,
    ) -> LocalSystem:
        """``environment``: settings every function gets on top of the template's (CALLER_IDENTITY…)."""
        template = load_template(ROOT / "template.yaml")
        resources = provision(template, parameters=parameters)
        overrides = {
            "DATABASE_URL": engine.url.render_as_string(hide_password=False),
            "WEBHOOK_SECRET": TEST_WEBHOOK_SECRET,
            **(environment or {}),
        }
        environments = resources.environments(template, overrides)
        functions = LocalFunctions(ROOT, template, environments)
        # Tests also call use cases directly: give the test process every function's settings too.
        for environment in environments.values():
            for name, value in environment.items():
                monkeypatch.setenv(name, value)
        return cls(engine, resources, functions)

    # --- driving ----------------------------------------------------------------------------------

    def api(
        self,
        method: str,
        path: str,
        body: str | None = None,
        headers: dict[str, str] | None = None,
        *,
        user: str | None = None,
    ) -> ApiResponse:
        """``user``: call as this user, as a Cognito user-pool authorizer reports its ID token: the pool
        the stack creates keeps the order user id in ``custom:user_id`` (the template's
        CognitoUserIdClaim), beside a ``sub`` of the pool's own that is no user id."""
        authorizer = None
        if user is not None:
            subject = str(uuid.uuid5(uuid.NAMESPACE_URL, f"user-pool/{user}"))
            authorizer = {"claims": {"sub": subject, "custom:user_id": user, "token_use": "id"}}
        return self.functions.call_api(method, path, body, headers, authorizer=authorizer)

    def create_order(
        self, amount: str = "128.50", user_id: int = 42, phone: str = "+8613812345678"
    ) -> dict[str, Any]:
        response = self.api(
            "POST", "/orders", json.dumps({"userId": user_id, "phone": phone, "amount": amount})
        )
        assert response.status == 201, response.body
        created: dict[str, Any] = response.body
        return created

    def notify(self, body: str, headers: dict[str, str] | None = None) -> ApiResponse:
        return self.api(
            "POST", "/payments/notify", body, signed_headers(body) if headers is None else headers
        )

    def pay(
        self, order: dict[str, Any], transaction_id: str = "txn-1", paid_at: str | None = None
    ) -> ApiResponse:
        return self.notify(notify_body(order["orderNo"], order["amount"], transaction_id, paid_at))

    def run_relay(self) -> dict[str, Any]:
        result: dict[str, Any] = self.functions.run_scheduled("OutboxRelayFunction")
        return result

    def drain(self, queue: str, function: str, rounds: int = 20) -> int:
        """Deliver from ``queue`` to ``function`` until the queue answers empty; returns records handled."""
        handled = 0
        for _ in range(rounds):
            delivery: Delivery = self.functions.deliver(self.resources.queue_url(queue), function)
            if delivery.received == 0:
                break
            handled += delivery.received
        return handled

    def drain_consumers(self) -> None:
        self.drain("PointsQueue", "PointsConsumerFunction")
        self.drain("SmsQueue", "SmsConsumerFunction")

    # --- observing --------------------------------------------------------------------------------

    def outbox_rows(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(text("SELECT * FROM message_record ORDER BY id"))]

    def count(self, table: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one())  # noqa: S608

    def points_balance(self, user_id: int) -> int:
        return points_ledger().balance(user_id)

    def ledger_entries(self, user_id: int) -> list[dict[str, Any]]:
        items = boto3.client("dynamodb").query(
            TableName=self.resources.refs["PointsTable"],
            KeyConditionExpression="pk = :pk AND begins_with(sk, :c)",
            ExpressionAttributeValues={":pk": {"S": f"USER#{user_id}"}, ":c": {"S": "CREDIT#"}},
        )["Items"]
        return items

    def sms_deliveries(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = boto3.client("dynamodb").scan(
            TableName=self.resources.refs["SmsDeliveriesTable"]
        )["Items"]
        return items

    def queue_depth(self, queue: str) -> int:
        attributes = boto3.client("sqs").get_queue_attributes(
            QueueUrl=self.resources.queue_url(queue),
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(
            attributes["ApproximateNumberOfMessagesNotVisible"]
        )


def points_ledger() -> DynamoDbPointsLedger:
    """The points table the environment names, read as the consumer reads it."""
    return DynamoDbPointsLedger(
        AwsClients().factory("dynamodb", timeouts.DYNAMODB), PointsSettings().points_table_name
    )


@contextmanager
def configured_database() -> Iterator[Database]:
    """The database the environment configures (DATABASE_URL), built as the functions build it."""
    database = connect_database(DatabaseSettings(), AwsClients())
    try:
        yield database
    finally:
        database.engine.dispose()


def floor_points(amount: str) -> int:
    return int(Decimal(amount))


@contextmanager
def cfn_response_server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A loopback stand-in for CloudFormation's pre-signed response URL: (url, answers received)."""
    received: list[dict[str, Any]] = []

    class Answers(http.server.BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/cfn-response", received
    finally:
        server.shutdown()
        server.server_close()
