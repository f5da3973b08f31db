"""One trace from the payment callback to both consumers' effects, by either publish path."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text

from payment_outbox.domain.outbox import OutboxMessage
from payment_outbox.services.relay import RelayAfterCommitPublisher
from tests.support import LocalSystem, notify_body, signed_headers

pytestmark = pytest.mark.e2e

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


SERVICES = ("payment-api", "outbox-relay", "points-consumer", "sms-consumer")


def _capture_service_logs() -> None:
    """Powertools configures a service's logger once per process: a test after the first finds its
    handler still writing to the stream of the test that configured it. Point it at this test's."""
    for service in SERVICES:
        for handler in logging.getLogger(service).handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.stream = sys.stdout  # not setStream: it flushes the closed stream first


def _log_lines(out: str) -> list[dict[str, Any]]:
    lines = []
    for line in out.splitlines():
        try:
            parsed = json.loads(line)
        except ValueError:
            continue
        if isinstance(parsed, dict) and "service" in parsed and "level" in parsed:
            lines.append(parsed)
    return lines


@pytest.mark.parametrize("path", ["after-commit publish", "scheduled relay"])
def test_the_callbacks_correlation_id_is_in_both_consumers_log_lines(
    system: LocalSystem, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    if path == "scheduled relay":
        # Given a payment API that dies after its commit, so the scheduled relay publishes the rows
        def dies_after_commit(self: RelayAfterCommitPublisher, messages: Sequence[OutboxMessage]) -> None:
            return None

        monkeypatch.setattr(RelayAfterCommitPublisher, "__call__", dies_after_commit)
    _capture_service_logs()
    order = system.create_order()
    capsys.readouterr()

    # When the provider's callback, carrying a W3C traceparent, pays the order
    body = notify_body(order["orderNo"], order["amount"])
    paid = system.notify(body, {**signed_headers(body), "traceparent": TRACEPARENT})
    assert paid.status == 200, paid.body
    if path == "scheduled relay":
        with system.engine.begin() as conn:
            conn.execute(
                text("UPDATE message_record SET next_retry_at = :now"),
                {"now": datetime.now(UTC).replace(tzinfo=None)},
            )
        assert system.run_relay()["published"] == 2
    system.drain_consumers()
    lines = _log_lines(capsys.readouterr().out)

    # Then the outbox rows kept the request's trace and correlation id
    callback = [
        line for line in lines if line["service"] == "payment-api" and line["message"] == "payment accepted"
    ]
    assert len(callback) == 1
    correlation_id = callback[0]["correlation_id"]
    assert correlation_id
    stored = [json.loads(row["trace_context"]) for row in system.outbox_rows()]
    assert [s["correlationId"] for s in stored] == [correlation_id, correlation_id]
    assert all(s["traceparent"].startswith(f"00-{TRACE_ID}-") for s in stored)

    # And every log line both consumers wrote for the order's messages carries that correlation id
    # and continues the callback's trace under a span of its own
    message_ids = {row["message_id"] for row in system.outbox_rows()}
    for service in ("points-consumer", "sms-consumer"):
        consumer = [line for line in lines if line["service"] == service]
        assert {line["message"] for line in consumer} >= {
            f"{service.split('-')[0]}: message received",
            f"{service.split('-')[0]}: message handled",
        }
        assert {line["correlation_id"] for line in consumer} == {correlation_id}
        assert {line["trace_id"] for line in consumer} == {TRACE_ID}
        assert {line["message_id"] for line in consumer} <= message_ids
        assert all(line["traceparent"] != stored[0]["traceparent"] for line in consumer)

    # And the effects happened once
    assert system.points_balance(order["userId"]) == 128
    assert len(system.sms_deliveries()) == 1
