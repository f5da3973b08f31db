"""``payment-outbox invoke``: what ``sam local invoke`` does, in this process and without a container.

The template's handler runs with its own environment, resolved against the template's resources
provisioned in an in-process AWS emulator (moto), on a fresh SQLite database migrated to head (or the
database at ``database_url``). The handler's logs go to ``log_stream``; the response is returned.

So that every shipped event works as a new user runs it, the event is prepared first, and each step
is said on ``log_stream``:

* a payment callback is signed now with the webhook secret (a recorded signature is stale after
  300 s), its ``paidAt`` moved to now when it is outside the accepted window (``sign=False`` keeps
  the event as it is);
* a fresh database is seeded with the sample order the shipped events name (``SAMPLE_ORDER``: id 1,
  order number ``PO20261127000001``, 128.50 CNY), so the get-order, trace and callback events find
  it (``seed=False`` starts empty; a given database is never seeded);
* a CloudFormation custom-resource event gets a loopback stand-in for its pre-signed ``ResponseURL``
  (never the real S3 URL of the recorded event); the answer it receives is reported.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from payment_outbox.clock import SystemClock
from payment_outbox.domain import grammar
from payment_outbox.domain.signature import sign as signature_of
from payment_outbox_dev.checks.template import find_function, load_template


@contextlib.contextmanager
def _scoped_environment() -> Iterator[None]:
    """Whatever the invocation sets in ``os.environ`` is undone afterwards."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@dataclass(frozen=True)
class SampleOrder:
    order_no: str = "PO20261127000001"
    user_id: int = 42
    phone: str = "+8613812345678"
    amount: Decimal = Decimal("128.50")
    currency: str = "CNY"


SAMPLE_ORDER = SampleOrder()


def sign_callback(event: dict[str, Any], webhook_secret: str, say: Callable[[str], None]) -> dict[str, Any]:
    """The callback event signed now (and its paidAt moved to now if the window refuses it)."""
    if event.get("path") != "/payments/notify" or not isinstance(event.get("body"), str):
        return event
    body = event["body"]
    try:
        document = json.loads(body)
        paid_at = grammar.parse_timestamp(document.get("paidAt"))
    except (ValueError, AttributeError):
        document, paid_at = None, None
    now = SystemClock().now()
    if isinstance(document, dict) and paid_at is not None and grammar.paid_at_problem(paid_at, now):
        document["paidAt"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        body = json.dumps(document)
        say(f"invoke: paidAt moved to {document['paidAt']} (the recorded one is outside the accepted window)")
    signature = signature_of(body.encode(), webhook_secret, int(time.time()))
    headers = {k: v for k, v in (event.get("headers") or {}).items() if k.lower() != "x-signature"}
    multi = {k: v for k, v in (event.get("multiValueHeaders") or {}).items() if k.lower() != "x-signature"}
    say("invoke: callback signed now with the webhook secret (pass --no-sign to keep the event's signature)")
    return {
        **event,
        "body": body,
        "headers": {**headers, "X-Signature": signature},
        "multiValueHeaders": {**multi, "X-Signature": [signature]},
    }


def seed_sample_order(url: str, say: Callable[[str], None]) -> None:
    """Store ``SAMPLE_ORDER`` (id 1 on the fresh database) through the payment use case."""
    from payment_outbox.adapters.db.database import Database
    from payment_outbox.services.payments import NewOrder, PaymentService

    database = Database.at_url(url)
    try:
        service = PaymentService(
            database.unit_of_work,
            SystemClock(),
            after_commit_lease=timedelta(seconds=60),
            order_numbers=lambda: SAMPLE_ORDER.order_no,
        )
        order = service.create_order(
            NewOrder(SAMPLE_ORDER.user_id, SAMPLE_ORDER.phone, SAMPLE_ORDER.amount, SAMPLE_ORDER.currency)
        )
    finally:
        database.engine.dispose()
    say(
        f"invoke: fresh database seeded with order {order.id} ({order.order_no}, {order.amount} "
        f"{order.currency}) for the events that name it (--no-seed to start empty)"
    )


@contextlib.contextmanager
def cfn_response_stand_in(say: Callable[[str], None]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A loopback HTTP server standing in for CloudFormation's pre-signed S3 response URL."""
    received: list[dict[str, Any]] = []

    class Answers(http.server.BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                received.append(json.loads(self.rfile.read(length) or b"{}"))
            except ValueError:
                received.append({"Status": "UNREADABLE"})
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            """Reported by the caller instead."""

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/cloudformation-response", received
    finally:
        server.shutdown()
        server.server_close()
    for answer in received:
        reason = answer.get("Reason") or ""
        say(f"invoke: CloudFormation stand-in received {answer.get('Status')} {reason}".rstrip())


def invoke(
    root: Path,
    function: str,
    event: dict[str, Any],
    *,
    log_stream: TextIO,
    database_url: str | None = None,
    webhook_secret: str,
    sign: bool = True,
    seed: bool = True,
) -> tuple[str, Any]:
    """Invoke ``function`` (logical id or short form) with ``event``; returns (logical id, response)."""

    def say(line: str) -> None:
        print(line, file=log_stream)

    template = load_template(root / "template.yaml")
    logical_id = find_function(template, function).logical_id
    if sign:
        event = sign_callback(event, webhook_secret, say)
    with contextlib.ExitStack() as stack:
        if "ResponseURL" in event and "RequestType" in event:
            url, _ = stack.enter_context(cfn_response_stand_in(say))
            say("invoke: the CloudFormation answer goes to a local stand-in, not the event's ResponseURL")
            event = {**event, "ResponseURL": url}
        return logical_id, _invoke(
            root, template, logical_id, event, log_stream=log_stream, database_url=database_url,
            webhook_secret=webhook_secret, say=say,
            # Only API events name stored orders; a given database is the user's own.
            seed=seed and database_url is None and "httpMethod" in event,
        )  # fmt: skip


def _invoke(
    root: Path,
    template: dict[str, Any],
    logical_id: str,
    event: dict[str, Any],
    *,
    log_stream: TextIO,
    database_url: str | None,
    webhook_secret: str,
    seed: bool,
    say: Callable[[str], None],
) -> Any:
    from moto import mock_aws

    from payment_outbox.adapters.db.engine import make_engine
    from payment_outbox.adapters.db.migration import upgrade
    from payment_outbox_dev.local.harness import REGION, LocalFunctions
    from payment_outbox_dev.local.provision import provision

    with _scoped_environment(), tempfile.TemporaryDirectory(prefix="payment-outbox-invoke-") as scratch:
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL"):
            os.environ.pop(name, None)
        os.environ.update(
            {
                "AWS_ACCESS_KEY_ID": "local",  # emulator credentials  # nosec B105
                "AWS_SECRET_ACCESS_KEY": "local",  # nosec B105
                "AWS_DEFAULT_REGION": REGION,
                "AWS_REGION": REGION,
                "POWERTOOLS_TRACE_DISABLED": "true",
            }
        )
        url = database_url or f"sqlite:///{Path(scratch) / 'payment_outbox.db'}"
        with mock_aws():
            resources = provision(template, region=REGION)
            engine = make_engine(url)
            upgrade(engine)
            engine.dispose()
            if seed:
                seed_sample_order(url, say)
            overrides = {
                "DATABASE_URL": url,
                "WEBHOOK_SECRET": webhook_secret,
                "POWERTOOLS_TRACE_DISABLED": "true",
            }
            functions = LocalFunctions(root, template, resources.environments(template, overrides))
            # Handlers log to stdout (Powertools binds the stream when the handler is loaded).
            with contextlib.redirect_stdout(log_stream), warnings.catch_warnings():
                # A handler that emits no metric of its own makes Powertools warn; nothing is wrong.
                warnings.filterwarnings("ignore", message="No application metrics to publish")
                response = functions.invoke(logical_id, event)
    return response
