"""The embedded demo: the real handlers, end to end, on SQLite and an in-process AWS emulator.

    python -m payment_outbox_dev.demo.embedded             # SQLite in a temporary folder, moto in-process
    DATABASE_URL=mysql+pymysql://... python -m payment_outbox_dev.demo.embedded   # the same on MySQL

It creates an order, sends a signed payment callback, runs the relay, lets both consumers drain their
queues, and prints the order, the outbox rows, the points balance and the SMS sent.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from payment_outbox import timeouts
from payment_outbox_dev.arguments import root_of
from payment_outbox_dev.local.callback import callback_body
from payment_outbox_dev.local.harness import ACCOUNT_VARIABLES, emulator_environment

DEMO_WEBHOOK_SECRET = "local-webhook-secret-for-this-machine-only"  # noqa: S105 - the demo signs its own callbacks  # nosec B105


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m payment_outbox_dev.demo.embedded",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--root", type=Path, default=None, help="project folder holding template.yaml")
    parser.add_argument("--amount", default="128.50", help="order amount, a decimal string")
    args = parser.parse_args(argv)
    root = root_of(args)

    # Dummy credentials and a region before any client exists: the emulator is in-process.
    for name in ACCOUNT_VARIABLES:
        os.environ.pop(name, None)
    os.environ.update({**emulator_environment("demo"), "POWERTOOLS_LOG_LEVEL": "WARNING"})
    with tempfile.TemporaryDirectory(prefix="payment-outbox-demo-") as scratch:
        database_url = os.environ.get("DATABASE_URL") or f"sqlite:///{scratch}/payment_outbox.db"
        _run(root, database_url, args.amount)


def _run(root: Path, database_url: str, amount: str) -> None:
    from moto import mock_aws
    from moto.sns.models import sns_backends
    from sqlalchemy import text

    from payment_outbox.adapters.aws import AwsClients
    from payment_outbox.adapters.db.engine import make_engine
    from payment_outbox.adapters.db.migration import upgrade
    from payment_outbox.adapters.dynamodb_points import DynamoDbPointsLedger
    from payment_outbox.adapters.sms import DynamoDbSmsDeliveryLog
    from payment_outbox.domain.signature import sign
    from payment_outbox.settings import PointsSettings, SmsSettings
    from payment_outbox_dev.checks.template import load_template
    from payment_outbox_dev.local.harness import ACCOUNT, REGION, LocalFunctions
    from payment_outbox_dev.local.provision import provision

    template = load_template(root / "template.yaml")
    with mock_aws():
        resources = provision(template)
        overrides = {
            "DATABASE_URL": database_url,
            "WEBHOOK_SECRET": DEMO_WEBHOOK_SECRET,
            # The demo narrates; the handlers' JSON logs and metrics would drown it.
            "POWERTOOLS_LOG_LEVEL": "WARNING",
            "POWERTOOLS_METRICS_DISABLED": "true",
        }
        functions = LocalFunctions(root, template, resources.environments(template, overrides))
        engine = make_engine(database_url)
        upgrade(engine)
        _say(f"database: {engine.url.render_as_string()}  (schema migrated)")

        created = functions.call_api(
            "POST",
            "/orders",
            json.dumps({"userId": 42, "phone": "+8613812345678", "amount": amount, "currency": "CNY"}),
        )
        _step("POST /orders", created.status, created.body)
        order = created.body

        body = callback_body(order["orderNo"], order["amount"], order["currency"])
        headers = {"X-Signature": sign(body.encode(), DEMO_WEBHOOK_SECRET, int(time.time()))}
        paid = functions.call_api("POST", "/payments/notify", body, headers)
        _step("POST /payments/notify (signed)", paid.status, paid.body)

        replay = functions.call_api("POST", "/payments/notify", body, headers)
        _step(
            "POST /payments/notify again (same transaction)", replay.status, {"status": replay.body["status"]}
        )

        relay = functions.run_scheduled("OutboxRelayFunction")
        _step("OutboxRelay (scheduled run)", None, relay)

        for queue, function in (
            ("PointsQueue", "PointsConsumerFunction"),
            ("SmsQueue", "SmsConsumerFunction"),
        ):
            while (delivery := functions.deliver(resources.queue_url(queue), function)).received:
                _step(
                    f"{function} ← {queue}", None, {"records": delivery.received, "failed": delivery.failed}
                )

        fetched = functions.call_api("GET", f"/orders/{order['orderId']}")
        _step(f"GET /orders/{order['orderId']}", fetched.status, fetched.body)

        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT message_id, topic, status, retry_count, sent_time FROM message_record ORDER BY id"
                )
            ).all()
            rows_of_sms = [row.message_id for row in rows if row.topic == "topic.sms"]
            _say("outbox rows (message_record):")
            for row in rows:
                _say(
                    f"  {row.message_id}  {row.topic:<13} status={row.status} "
                    f"retries={row.retry_count} sent={row.sent_time}"
                )

        dynamodb = AwsClients().factory("dynamodb", timeouts.DYNAMODB)
        with functions.environment("PointsConsumerFunction"):
            ledger = DynamoDbPointsLedger(dynamodb, PointsSettings().points_table_name)
            _say(f"points balance of user 42: {ledger.balance(42)}")
        with functions.environment("SmsConsumerFunction"):
            deliveries = DynamoDbSmsDeliveryLog(dynamodb, SmsSettings().sms_deliveries_table_name)
            for row in rows_of_sms:
                _say(f"SMS delivery record: {deliveries.find(row)}")
        # What the SMS provider (SNS direct-to-phone, emulated) actually sent:
        for _phone, message, *_ in sns_backends[ACCOUNT][REGION].sms_messages.values():
            _say(f"SMS sent: {message!r}")
        engine.dispose()


def _step(title: str, status: int | None, body: Any) -> None:
    _say(f"\n▶ {title}" + (f"  → HTTP {status}" if status is not None else ""))
    _say("  " + json.dumps(body, indent=2, default=str).replace("\n", "\n  "))


def _say(line: str) -> None:
    print(line, flush=True)


if __name__ == "__main__":
    main()
