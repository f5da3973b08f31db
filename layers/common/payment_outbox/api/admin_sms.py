"""The admin API's routes for SMS parked as uncertain (``payment_outbox.services.sms``): resend one, or
mark it delivered — each audited with the caller and a reason. A Powertools ``Router`` the admin
resolver includes; the routes get their use case from ``operations``, built on first use."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from pydantic import BaseModel, ConfigDict

from payment_outbox.api.admin import Reason, message_id_from_path
from payment_outbox.api.http import actor, json_response, parse_body, request_body, responses
from payment_outbox.services.sms import SmsDecision, SmsOperations


class SmsDecisionBody(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    reason: Reason


class SmsDecisionView(BaseModel):
    model_config = ConfigDict(extra="forbid")
    messageId: str
    action: str
    providerMessageId: str
    auditId: int


def decision_view(decision: SmsDecision) -> dict[str, Any]:
    return SmsDecisionView(
        messageId=decision.message_id,
        action=decision.action,
        providerMessageId=decision.provider_message_id,
        auditId=decision.audit_id,
    ).model_dump()


def sms_router(operations: Callable[[], SmsOperations]) -> APIGatewayRouter:
    router = APIGatewayRouter()  # type: ignore[no-untyped-call]

    @router.post(
        "/admin/sms/<message_id>/resend",
        summary="Send an SMS parked as uncertain once more (it may be a second SMS)",
        tags=["admin"],
        openapi_extensions=request_body(SmsDecisionBody, "why it is resent"),
        responses=responses(
            200, SmsDecisionView, "sent; the decision is audited", 400, 404, 409, 413, 422, 502, 504
        ),
    )
    def resend_sms(message_id: str) -> Response[dict[str, Any]]:
        known_id = message_id_from_path(message_id)
        body = parse_body(SmsDecisionBody, router.current_event.decoded_body)
        decision = operations().resend(known_id, actor=actor(router.current_event), reason=body.reason)
        return json_response(200, decision_view(decision))

    @router.post(
        "/admin/sms/<message_id>/mark-delivered",
        summary="Record an SMS parked as uncertain as delivered (the provider's logs show it went out)",
        tags=["admin"],
        openapi_extensions=request_body(SmsDecisionBody, "how its delivery was confirmed"),
        responses=responses(
            200, SmsDecisionView, "recorded SENT; the decision is audited", 400, 404, 409, 413, 422
        ),
    )
    def mark_sms_delivered(message_id: str) -> Response[dict[str, Any]]:
        known_id = message_id_from_path(message_id)
        body = parse_body(SmsDecisionBody, router.current_event.decoded_body)
        decision = operations().mark_delivered(
            known_id, actor=actor(router.current_event), reason=body.reason
        )
        return json_response(200, decision_view(decision))

    return router
