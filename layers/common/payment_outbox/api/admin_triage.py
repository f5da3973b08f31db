"""The admin API's failure triage routes (``payment_outbox.services.triage``): failed and retrying
messages grouped by error fingerprint, and requeue or mark-resolved by group — dry run first, bounded,
audited. A Powertools ``Router`` the admin resolver includes; the routes get their use case from
``triage``, built on first use."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from pydantic import BaseModel, ConfigDict, Field

from payment_outbox.api.admin import Reason
from payment_outbox.api.http import actor, iso_time, json_response, parse_body, request_body, responses
from payment_outbox.domain import grammar
from payment_outbox.domain.triage import FINGERPRINT_PATTERN
from payment_outbox.errors import FailureGroupNotFound
from payment_outbox.services.triage import FailureGroup, FailureTriage, GroupActionResult, TriageReport


class _Body(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid", str_strip_whitespace=True)


class GroupRequeueBody(_Body):
    #: Required: a bulk action states whether it is a rehearsal.
    dry_run: bool = Field(alias="dryRun", strict=True)
    reset_attempts: bool = Field(default=False, alias="resetAttempts", strict=True)
    reason: Reason


class GroupResolveBody(_Body):
    dry_run: bool = Field(alias="dryRun", strict=True)
    reason: Reason


class _View(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FailureGroupView(_View):
    fingerprint: str
    pattern: str
    count: int
    failed: int
    retrying: int
    firstSeen: str
    lastSeen: str
    topics: list[str]
    sampleMessageId: str
    sampleError: str | None


class TriageView(_View):
    groups: list[FailureGroupView]
    scanned: int
    truncated: bool
    scanLimit: int
    at: str


class GroupActionView(_View):
    """``affected`` for a real run, ``wouldAffect`` for a dry run (exactly one of them)."""

    action: str
    fingerprint: str
    pattern: str
    dryRun: bool
    affected: int | None = None
    wouldAffect: int | None = None
    messageIds: list[str]
    retryingLeft: int
    maxRowsPerCall: int
    more: bool
    auditId: int | None


def group_view(group: FailureGroup) -> dict[str, Any]:
    return {
        "fingerprint": group.fingerprint,
        "pattern": group.pattern,
        "count": group.count,
        "failed": group.failed,
        "retrying": group.retrying,
        "firstSeen": iso_time(group.first_seen),
        "lastSeen": iso_time(group.last_seen),
        "topics": group.topics,
        "sampleMessageId": group.sample_message_id,
        "sampleError": group.sample_error,
    }


def triage_view(report: TriageReport) -> dict[str, Any]:
    return {
        "groups": [group_view(g) for g in report.groups],
        "scanned": report.scanned,
        "truncated": report.truncated,
        "scanLimit": report.scan_limit,
        "at": iso_time(report.at),
    }


def group_action_view(result: GroupActionResult) -> dict[str, Any]:
    return {
        "action": result.action,
        "fingerprint": result.fingerprint,
        "pattern": result.pattern,
        "dryRun": result.dry_run,
        ("wouldAffect" if result.dry_run else "affected"): result.count,
        "messageIds": result.message_ids,
        "retryingLeft": result.retrying_left,
        "maxRowsPerCall": result.max_rows,
        "more": result.more,
        "auditId": result.audit_id,
    }


def fingerprint_from_path(text: str) -> str:
    """The group a path segment names; ``FailureGroupNotFound`` (404) when no group can have it."""
    if not grammar.matches(FINGERPRINT_PATTERN, text):
        raise FailureGroupNotFound("failure group not found")
    return text


def triage_router(triage: Callable[[], FailureTriage]) -> APIGatewayRouter:
    router = APIGatewayRouter()  # type: ignore[no-untyped-call]

    @router.get(
        "/admin/failures",
        summary="Failed and retrying messages grouped by error fingerprint (ids, numbers, times removed)",
        tags=["admin"],
        responses=responses(200, TriageView, "the groups, largest first, with a sample of each"),
    )
    def failure_groups() -> Response[dict[str, Any]]:
        return json_response(200, triage_view(triage().groups()))

    @router.post(
        "/admin/failures/<fingerprint>/requeue",
        summary="Requeue a failure group's FAILED messages; dry run first",
        tags=["admin"],
        openapi_extensions=request_body(GroupRequeueBody, "dryRun (required), the reason, resetAttempts"),
        responses=responses(200, GroupActionView, "what was (or would be) requeued", 400, 404, 413, 422),
    )
    def requeue_failure_group(fingerprint: str) -> Response[dict[str, Any]]:
        group = fingerprint_from_path(fingerprint)
        body = parse_body(GroupRequeueBody, router.current_event.decoded_body)
        result = triage().requeue_group(
            group,
            reason=body.reason,
            actor=actor(router.current_event),
            dry_run=body.dry_run,
            reset_attempts=body.reset_attempts,
        )
        return json_response(200, group_action_view(result))

    @router.post(
        "/admin/failures/<fingerprint>/resolve",
        summary="Mark a failure group's FAILED messages resolved (they stay FAILED); dry run first",
        tags=["admin"],
        openapi_extensions=request_body(GroupResolveBody, "dryRun (required) and the reason"),
        responses=responses(
            200, GroupActionView, "what was (or would be) marked resolved", 400, 404, 413, 422
        ),
    )
    def resolve_failure_group(fingerprint: str) -> Response[dict[str, Any]]:
        group = fingerprint_from_path(fingerprint)
        body = parse_body(GroupResolveBody, router.current_event.decoded_body)
        result = triage().resolve_group(
            group, reason=body.reason, actor=actor(router.current_event), dry_run=body.dry_run
        )
        return json_response(200, group_action_view(result))

    return router
