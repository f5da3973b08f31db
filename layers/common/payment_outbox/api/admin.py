"""The admin API's HTTP contract: query and body models, the opaque paging cursor, and the views.

Errors go through the same table as the payment API (``payment_outbox.api.payments.status_for``). Message
content is never returned: it carries the customer's phone number.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from payment_outbox.api.payments import order_view
from payment_outbox.clock import to_naive_utc
from payment_outbox.domain.outbox import OutboxMessage, OutboxStatus
from payment_outbox.errors import InvalidRequest
from payment_outbox.ports import MessageFilter, StuckIdempotencyRecord
from payment_outbox.services.operations import (
    MAX_PAGE_SIZE,
    MessagePage,
    OrderTrace,
    OutboxStats,
    RequeueRequest,
    RequeueResult,
)

DEFAULT_PAGE_SIZE = 50
_STATUS_NAMES = {s.name.lower(): int(s) for s in OutboxStatus}

Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=500)]


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid", str_strip_whitespace=True)


class _Filters(_Model):
    status: tuple[int, ...] = ()
    topic: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None
    business_key: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = Field(
        default=None, alias="businessKey"
    )
    created_from: datetime | None = Field(default=None, alias="from")
    created_to: datetime | None = Field(default=None, alias="to")

    @field_validator("status", mode="before")
    @classmethod
    def _statuses(cls, value: Any) -> tuple[int, ...]:
        """0/1/2 or pending/sent/failed; one value, a comma-separated list, or a JSON list."""
        if value is None or value == "":
            return ()
        items = value if isinstance(value, list) else str(value).split(",")
        statuses: list[int] = []
        for item in items:
            text = str(item).strip().lower()
            code = _STATUS_NAMES.get(text, int(text) if text.isdigit() else -1)
            if code not in _STATUS_NAMES.values():
                raise ValueError("status must be 0/1/2 or pending/sent/failed")
            statuses.append(code)
        return tuple(sorted(set(statuses)))

    def to_filter(self) -> MessageFilter:
        return MessageFilter(
            statuses=self.status,
            topic=self.topic,
            business_key=self.business_key,
            created_from=to_naive_utc(self.created_from) if self.created_from else None,
            created_to=to_naive_utc(self.created_to) if self.created_to else None,
        )


class MessageQuery(_Filters):
    limit: int = Field(default=DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)
    cursor: str | None = None

    def after_id(self) -> int | None:
        return decode_cursor(self.cursor) if self.cursor else None


class BulkRequeueBody(_Filters):
    #: Required: a bulk action states whether it is a rehearsal.
    dry_run: bool = Field(alias="dryRun", strict=True)
    include_sent: bool = Field(default=False, alias="includeSent", strict=True)
    reason: Reason

    def to_request(self, actor: str) -> RequeueRequest:
        return RequeueRequest(
            where=self.to_filter(),
            reason=self.reason,
            actor=actor,
            dry_run=self.dry_run,
            include_sent=self.include_sent,
        )


class RequeueMessageBody(_Model):
    dry_run: bool = Field(default=False, alias="dryRun", strict=True)
    include_sent: bool = Field(default=False, alias="includeSent", strict=True)
    reason: Reason


def parse_query(raw: Mapping[str, str] | None) -> MessageQuery:
    try:
        return MessageQuery.model_validate(dict(raw or {}))
    except ValidationError as exc:
        raise InvalidRequest("query has invalid parameters", details=_details(exc)) from None


def encode_cursor(after_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{after_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    prefix, _, number = text.partition(":")
    if prefix != "id" or not number.isdigit():
        raise InvalidRequest("cursor is not one this API returned", details=[{"field": "cursor"}])
    return int(number)


# --- views ------------------------------------------------------------------------------------------


def message_view(message: OutboxMessage) -> dict[str, Any]:
    return {
        "id": message.id,
        "messageId": message.message_id,
        "topic": message.topic,
        "status": message.status.name,
        "statusCode": int(message.status),
        "businessKey": message.business_key,
        "businessType": message.business_type,
        "retryCount": message.retry_count,
        "nextRetryAt": _iso(message.next_retry_at),
        "lastError": message.last_error,
        "createTime": _iso(message.create_time),
        "updateTime": _iso(message.update_time),
        "sentTime": _iso(message.sent_time),
    }


def page_view(page: MessagePage, limit: int) -> dict[str, Any]:
    return {
        "items": [message_view(m) for m in page.items],
        "limit": limit,
        "nextCursor": encode_cursor(page.next_after_id) if page.next_after_id is not None else None,
    }


def requeue_view(result: RequeueResult) -> dict[str, Any]:
    return {
        "dryRun": result.dry_run,
        ("wouldRequeue" if result.dry_run else "requeued"): result.count,
        "messageIds": result.message_ids,
        "maxRowsPerCall": result.max_rows,
        "more": result.more,
        "auditId": result.audit_id,
    }


def stats_view(stats: OutboxStats) -> dict[str, Any]:
    counts = stats.counts
    return {
        "counts": {"pending": counts.pending, "sent": counts.sent, "failed": counts.failed},
        "dueBacklog": counts.due,
        "oldestDueAgeSeconds": stats.oldest_due_age_seconds,
        "at": _iso(stats.now),
    }


def trace_view(trace: OrderTrace) -> dict[str, Any]:
    deliveries = [
        {
            "messageId": message_id,
            "delivered": delivery is not None,
            "maskedPhone": delivery.masked_phone if delivery else None,
            "templateId": delivery.template_id if delivery else None,
            "providerMessageId": delivery.provider_message_id if delivery else None,
            "sentAt": _iso(delivery.sent_at) if delivery else None,
        }
        for message_id, delivery in trace.sms_deliveries.items()
    ]
    return {
        "order": order_view(trace.order),
        "messages": [message_view(m) for m in trace.messages],
        "effects": {
            "points": {"credited": bool(trace.points_entries), "entries": trace.points_entries},
            "sms": {"sent": any(d["delivered"] for d in deliveries), "deliveries": deliveries},
        },
    }


def stuck_view(records: list[StuckIdempotencyRecord]) -> dict[str, Any]:
    return {
        "items": [
            {
                "id": r.key,
                "status": r.status,
                "expiration": r.expiration,
                "inProgressExpiration": r.in_progress_expiration,
            }
            for r in records
        ],
        "count": len(records),
    }


def _details(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"field": ".".join(str(p) for p in e["loc"]) or "query", "problem": e["msg"]}
        for e in exc.errors(include_url=False, include_input=False)
    ]


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return to_naive_utc(moment).isoformat(timespec="milliseconds") + "Z"
