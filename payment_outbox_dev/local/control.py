"""The local stack's own routes, beside the template's API: ``/_local/*`` (what runs, its state, the
faults) and the API's OpenAPI document. Not in the template, not in AWS.

``Control.routes()`` gives the HTTP front each route with its handler; the handlers read the parts of
the stack they are handed, never the stack itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from payment_outbox_dev.checks.template import Route
from payment_outbox_dev.local.emulator import Faults
from payment_outbox_dev.local.http_front import Answer, LocalRoute, Request
from payment_outbox_dev.local.observe import MetricsBoard, Narrator
from payment_outbox_dev.local.provision import Provisioned
from payment_outbox_dev.local.timing import Timing

#: The API's OpenAPI document (docs/openapi.json), served beside the routes.
OPENAPI_PATH = "/openapi.json"

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
            LocalRoute("GET", OPENAPI_PATH, "the API's OpenAPI document (docs/openapi.json)", self.openapi),
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
                    if r.path != OPENAPI_PATH
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
