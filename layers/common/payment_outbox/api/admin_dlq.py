"""The admin API's dead-letter queue routes (``payment_outbox.services.dead_letters``): each DLQ's
depth and oldest message, and a redrive back to its queue — dry run first, bounded, audited. A
Powertools ``Router`` the admin resolver includes; the routes get their use case from ``redrive``,
built on first use."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from pydantic import BaseModel, ConfigDict, Field

from payment_outbox.api.admin import Reason
from payment_outbox.api.http import actor, iso_time, json_response, parse_body, request_body, responses
from payment_outbox.domain import grammar
from payment_outbox.errors import DeadLetterQueueNotFound
from payment_outbox.ports import DeadLetterQueueState
from payment_outbox.services.dead_letters import MAX_REDRIVE_MESSAGES, DeadLetterRedrive, RedriveResult

#: A DLQ is named after its queue, without a ".fifo" suffix: letters, digits, "-" and "_".
DLQ_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,80}$"


class RedriveBody(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid", str_strip_whitespace=True)

    #: Required: a bulk action states whether it is a rehearsal.
    dry_run: bool = Field(alias="dryRun", strict=True)
    max_messages: int = Field(
        default=MAX_REDRIVE_MESSAGES, alias="maxMessages", ge=1, le=MAX_REDRIVE_MESSAGES, strict=True
    )
    reason: Reason


class _View(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeadLetterQueueView(_View):
    name: str
    dlqUrl: str
    targetUrl: str
    depth: int
    inFlight: int
    oldestSentAt: str | None
    peeked: int


class DeadLetterQueuesView(_View):
    items: list[DeadLetterQueueView]


class RedriveView(_View):
    """``moved`` for a real run, ``wouldMove`` for a dry run (exactly one of them)."""

    name: str
    dryRun: bool
    depth: int
    moved: int | None = None
    wouldMove: int | None = None
    failed: int
    maxMessages: int
    more: bool
    auditId: int | None


def queue_view(state: DeadLetterQueueState) -> dict[str, Any]:
    return {
        "name": state.name,
        "dlqUrl": state.dlq_url,
        "targetUrl": state.target_url,
        "depth": state.depth,
        "inFlight": state.in_flight,
        "oldestSentAt": iso_time(state.oldest_sent_at),
        "peeked": state.peeked,
    }


def redrive_view(result: RedriveResult) -> dict[str, Any]:
    return {
        "name": result.name,
        "dryRun": result.dry_run,
        "depth": result.depth,
        ("wouldMove" if result.dry_run else "moved"): result.count,
        "failed": result.failed,
        "maxMessages": result.max_messages,
        "more": result.more,
        "auditId": result.audit_id,
    }


def dlq_name_from_path(text: str) -> str:
    if not grammar.matches(DLQ_NAME_PATTERN, text):
        raise DeadLetterQueueNotFound("dead-letter queue not found")
    return text


def dlq_router(redrive: Callable[[], DeadLetterRedrive]) -> APIGatewayRouter:
    router = APIGatewayRouter()  # type: ignore[no-untyped-call]

    @router.get(
        "/admin/dlqs",
        summary="Each dead-letter queue: depth, in flight, oldest message, and where a redrive sends it",
        tags=["admin"],
        responses=responses(200, DeadLetterQueuesView, "every DLQ the stack configures"),
    )
    def dead_letter_queues() -> Response[dict[str, Any]]:
        return json_response(200, {"items": [queue_view(s) for s in redrive().states()]})

    @router.post(
        "/admin/dlqs/<name>/redrive",
        summary="Move a DLQ's messages back to their queue (bounded); dry run first",
        tags=["admin"],
        openapi_extensions=request_body(RedriveBody, "dryRun (required), the reason, maxMessages"),
        responses=responses(200, RedriveView, "what was (or would be) moved", 400, 404, 413, 422),
    )
    def redrive_dead_letter_queue(name: str) -> Response[dict[str, Any]]:
        known = dlq_name_from_path(name)
        body = parse_body(RedriveBody, router.current_event.decoded_body)
        result = redrive().redrive(
            known,
            reason=body.reason,
            actor=actor(router.current_event),
            dry_run=body.dry_run,
            max_messages=body.max_messages,
        )
        return json_response(200, redrive_view(result))

    return router
