"""The local stack's own routes, beside the template's API: ``/_local/*`` (what runs, its state, the
faults) and the API's OpenAPI document. Not in the template, not in AWS.

``Control.routes()`` gives the HTTP front each route with its handler; the handlers read the parts of
the stack they are handed, never the stack itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from payment_outbox_dev.checks.template import Route
from payment_outbox_dev.local.emulator import Faults
from payment_outbox_dev.local.http_front import Answer, LocalRoute, Request
from payment_outbox_dev.local.observe import LogJournal, MetricsBoard, Narrator
from payment_outbox_dev.local.provision import Provisioned
from payment_outbox_dev.local.timing import Timing

#: The API's OpenAPI document (docs/openapi.json), served beside the routes.
OPENAPI_PATH = "/openapi.json"
#: The interactive page for it (Powertools' own Swagger UI, its assets inline: no network needed).
SWAGGER_PATH = "/swagger"
#: One order's journey: its rows, effects and every log line of it across functions, in time order.
TRACE_PATH = "/_local/trace"

OUTBOX_QUERY = (
    "SELECT message_id, topic, business_key, status, retry_count, next_retry_at, last_error,"
    " sent_time, content FROM message_record ORDER BY id"
)


@dataclass
class Control:
    root: Path
    routes_served: Callable[[], list[Route]]
    workers: Callable[[], list[dict[str, Any]]]
    faults: Faults
    metrics: MetricsBoard
    resources: Provisioned
    timing: Timing
    narrator: Narrator
    engine: Any
    emulator_url: str
    journal: LogJournal = field(default_factory=LogJournal)

    def routes(self) -> list[LocalRoute]:
        return [
            LocalRoute(
                "GET", "/_local/routes", "the API routes served, from template.yaml", self.list_routes
            ),
            LocalRoute(
                "GET",
                "/_local/state",
                "faults, metrics, alarms, resources, timing, workers and outbox rows",
                lambda _: Answer.json(200, self.state()),
            ),
            LocalRoute(
                "GET",
                "/_local/workers",
                "each function's worker processes (pid, busy)",
                lambda _: Answer.json(200, {"workers": self.workers(), "timing": self.timing.describe()}),
            ),
            LocalRoute(
                "POST",
                "/_local/faults",
                'set or clear a fault: {"sns": "outage" | "reject" | null}',
                self.set_faults,
            ),
            LocalRoute(
                "GET",
                TRACE_PATH,
                "?orderNo=…: the order's rows, effects and log lines across functions, in time order",
                self.trace,
            ),
            LocalRoute("GET", OPENAPI_PATH, "the API's OpenAPI document (docs/openapi.json)", self.openapi),
            LocalRoute("GET", SWAGGER_PATH, "the API's OpenAPI document as a page to try it", self.swagger),
        ]

    def list_routes(self, _: Request) -> Answer:
        return Answer.json(
            200,
            {
                "routes": [
                    {"method": r.method, "path": r.path, "function": r.function} for r in self.routes_served()
                ],
                "control": [
                    {"method": r.method, "path": r.path, "what": r.what}
                    for r in self.routes()
                    if r.path not in (OPENAPI_PATH, SWAGGER_PATH)
                ],
            },
        )

    def set_faults(self, request: Request) -> Answer:
        try:
            requested = json.loads(request.body or b"{}")
            if not isinstance(requested, dict):
                raise ValueError("expected a JSON object")
            if "sns" in requested:
                self.faults.set_sns_publish(requested["sns"])
        except ValueError as exc:
            return Answer.json(400, {"message": str(exc)})
        current = self.faults.snapshot()
        self.narrator.say("fault", f"SNS publish to topics: {current['sns'] or 'healthy'}")
        return Answer.json(200, {"faults": current})

    def openapi(self, _: Request) -> Answer:
        """The checked-in OpenAPI document (a test keeps it equal to what the handlers declare)."""
        document = self.root / "docs" / "openapi.json"
        if not document.exists():
            return Answer.json(404, {"message": "docs/openapi.json is missing"})
        return Answer(200, [("Content-Type", "application/json")], document.read_bytes())

    def swagger(self, request: Request) -> Answer:
        """Powertools' Swagger UI page over docs/openapi.json (``?format=json``: the document)."""
        from aws_lambda_powertools.event_handler.openapi.swagger_ui import html

        document = self.root / "docs" / "openapi.json"
        if not document.exists():
            return Answer.json(404, {"message": "docs/openapi.json is missing"})
        if request.query.get("format") == ["json"]:
            return self.openapi(request)
        assets = Path(html.__file__).parent
        page = html.generate_swagger_html(
            document.read_text(),
            (assets / "swagger-ui-bundle.min.js").read_text(),
            (assets / "swagger-ui.min.css").read_text(),
            "",
            None,
        )
        return Answer(200, [("Content-Type", "text/html; charset=utf-8")], page.encode())

    def trace(self, request: Request) -> Answer:
        """One order's journey: its outbox rows (written, sent), its effects (points ledger entries,
        SMS deliveries) and every log line of it — each function's line whose correlation id is the
        callback's, whose message id is one of the order's, or which names the order — in time order."""
        order_no = (request.query.get("orderNo") or [""])[-1]
        if not order_no:
            return Answer.json(400, {"message": "orderNo is required: /_local/trace?orderNo=PO…"})
        return Answer.json(200, order_journey(self.engine, self.resources, self.journal.lines(), order_no))

    def state(self) -> dict[str, Any]:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            rows = conn.execute(text(OUTBOX_QUERY)).all()
        outbox = [
            {
                "messageId": r.message_id,
                "topic": r.topic,
                "businessKey": r.business_key,
                "status": r.status,
                "retryCount": r.retry_count,
                "nextRetryAt": _iso(r.next_retry_at),
                "lastError": r.last_error,
                "sentTime": _iso(r.sent_time),
                "content": r.content,
            }
            for r in rows
        ]
        return {
            "faults": self.faults.snapshot(),
            **self.metrics.snapshot(),
            "resources": dict(self.resources.refs),
            "timing": self.timing.describe(),
            "workers": self.workers(),
            "emulator": self.emulator_url,
            "outbox": outbox,
        }


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    return str(value)


def order_journey(
    engine: Any, resources: Provisioned, lines: list[dict[str, Any]], order_no: str
) -> dict[str, Any]:
    from sqlalchemy import text

    from payment_outbox.domain.tracing import TraceContext

    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT message_id, topic, status, retry_count, create_time, sent_time, last_error,"
                " trace_context FROM message_record WHERE business_key = :key ORDER BY id"
            ),
            {"key": order_no},
        ).all()
    message_ids = {r.message_id for r in rows}
    traces = [TraceContext.from_column(r.trace_context) for r in rows]
    correlation_ids = {t.correlation_id for t in traces if t is not None and t.correlation_id}
    trace_ids = {t.trace_id for t in traces if t is not None}
    events: list[dict[str, Any]] = []
    for r in rows:
        written = f"{r.topic} {r.message_id} written"
        events.append({"at": _moment(r.create_time), "kind": "outbox", "what": written})
        if r.sent_time is not None:
            sent = f"{r.topic} {r.message_id} sent"
            events.append({"at": _moment(r.sent_time), "kind": "outbox", "what": sent})
    for effect in _effects(resources, message_ids):
        events.append(effect)
    for line in lines:
        if (
            line.get("correlation_id") in correlation_ids
            or line.get("message_id") in message_ids
            or line.get("order_no") == order_no
        ):
            events.append({"at": _log_time(line.get("timestamp")), "kind": "log", **line})
    events.sort(key=lambda e: str(e.get("at") or ""))
    return {
        "orderNo": order_no,
        "correlationIds": sorted(correlation_ids),
        "traceIds": sorted(trace_ids),
        "messages": [
            {
                "messageId": r.message_id,
                "topic": r.topic,
                "status": r.status,
                "retryCount": r.retry_count,
                "lastError": r.last_error,
            }
            for r in rows
        ],
        "events": events,
    }


def _effects(resources: Provisioned, message_ids: set[str]) -> list[dict[str, Any]]:
    """The consumers' effects recorded for these messages: points ledger entries, SMS deliveries."""
    import boto3

    dynamodb = boto3.client("dynamodb")
    found: list[dict[str, Any]] = []
    for logical_id, kind in (("PointsTable", "points"), ("SmsDeliveriesTable", "sms")):
        table = resources.refs.get(logical_id)
        if not table:
            continue
        for page in dynamodb.get_paginator("scan").paginate(TableName=table):
            for item in page.get("Items", []):
                text = json.dumps(item)
                hit = next((m for m in message_ids if m in text), None)
                if hit is None:
                    continue
                stamp = next(
                    (v.get("S") for k, v in item.items() if k.lower().endswith(("at", "time")) and "S" in v),
                    None,
                )
                found.append({"at": _moment(stamp), "kind": kind, "what": f"{kind} effect of {hit}"})
    return found


def _log_time(stamp: Any) -> str | None:
    """Powertools' ``2026-12-06 18:03:01,123+0000``, as ``_moment`` writes every time here."""
    if not isinstance(stamp, str):
        return None
    try:
        return _moment(datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f%z"))
    except ValueError:
        return _moment(stamp)


def _moment(value: Any) -> str | None:
    """A time as naive UTC ISO 8601 to the millisecond, so that every event sorts as text."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return str(value)
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return str(value.isoformat(timespec="milliseconds"))
