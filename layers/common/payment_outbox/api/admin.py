"""The admin API's HTTP contract: query and body models, the opaque paging cursor, and the views.

Errors go through the same table as the payment API (``payment_outbox.api.http.status_for``). Message
content is never returned: it carries the customer's phone number.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    field_validator,
)

from payment_outbox.api.http import iso_time
from payment_outbox.api.payments import OrderView, Timestamp, order_view
from payment_outbox.clock import to_naive_utc
from payment_outbox.domain import grammar
from payment_outbox.domain.outbox import OutboxMessage, OutboxStatus
from payment_outbox.errors import InvalidRequest, MessageNotFound
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


_STATUS = "(0|1|2|pending|sent|failed|PENDING|SENT|FAILED)"
#: One status or a comma-separated list, no spaces: "failed", "0,2".
STATUS_LIST_PATTERN = f"^{_STATUS}(,{_STATUS})*$"
_STATUS_QUERY_SCHEMA = {"type": "string", "pattern": STATUS_LIST_PATTERN}


class _Filters(_Model):
    status: Annotated[
        tuple[int, ...],
        WithJsonSchema(
            {
                "anyOf": [
                    _STATUS_QUERY_SCHEMA,
                    {
                        "type": "array",
                        "items": {
                            "anyOf": [
                                {"type": "integer", "enum": [0, 1, 2]},
                                {"type": "string", "pattern": f"^{_STATUS}$"},
                            ]
                        },
                    },
                ]
            }
        ),
    ] = ()
    topic: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None
    business_key: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = Field(
        default=None, alias="businessKey"
    )
    created_from: Timestamp | None = Field(default=None, alias="from")
    created_to: Timestamp | None = Field(default=None, alias="to")

    @field_validator("status", mode="before")
    @classmethod
    def _statuses(cls, value: Any) -> tuple[int, ...]:
        """0/1/2 or pending/sent/failed; one value, a comma-separated list, or a JSON list."""
        if value is None or value == "":
            return ()
        if isinstance(value, str):
            if not grammar.matches(STATUS_LIST_PATTERN, value):
                raise ValueError("status must be 0/1/2 or pending/sent/failed, comma-separated")
            items: list[Any] = value.split(",")
        elif isinstance(value, list):
            items = value
        else:
            raise ValueError("status must be a string or a list")
        statuses: list[int] = []
        for item in items:
            if isinstance(item, bool) or not isinstance(item, int | str):
                raise ValueError("status must be 0/1/2 or pending/sent/failed")
            text = str(item)
            if not grammar.matches(f"^{_STATUS}$", text):
                raise ValueError("status must be 0/1/2 or pending/sent/failed")
            # The pattern let through a name or one ASCII digit 0-2.
            statuses.append(_STATUS_NAMES[text.lower()] if text.isalpha() else int(text))
        return tuple(sorted(set(statuses)))

    def to_filter(self) -> MessageFilter:
        return MessageFilter(
            statuses=self.status,
            topic=self.topic,
            business_key=self.business_key,
            created_from=to_naive_utc(self.created_from) if self.created_from else None,
            created_to=to_naive_utc(self.created_to) if self.created_to else None,
        )


def _page_size(value: Any) -> Any:
    """Query strings carry text: only plain ASCII digits (no "+5", " 5", "1_0") make a page size."""
    if isinstance(value, str) and not grammar.matches(r"^[1-9][0-9]{0,3}$", value):
        raise ValueError(f"limit must be a whole number from 1 to {MAX_PAGE_SIZE}")
    return value


class MessageQuery(_Filters):
    limit: Annotated[
        int,
        BeforeValidator(_page_size),
        WithJsonSchema({"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE}),
        Field(ge=1, le=MAX_PAGE_SIZE),
    ] = DEFAULT_PAGE_SIZE
    cursor: str | None = None

    def after_id(self) -> int | None:
        return decode_cursor(self.cursor) if self.cursor else None


class BulkRequeueBody(_Filters):
    #: Required: a bulk action states whether it is a rehearsal.
    dry_run: bool = Field(alias="dryRun", strict=True)
    include_sent: bool = Field(default=False, alias="includeSent", strict=True)
    #: Explicit only: a fresh attempt budget (retry_count 0); otherwise a requeue is one more attempt.
    reset_attempts: bool = Field(default=False, alias="resetAttempts", strict=True)
    reason: Reason

    def to_request(self, actor: str) -> RequeueRequest:
        return RequeueRequest(
            where=self.to_filter(),
            reason=self.reason,
            actor=actor,
            dry_run=self.dry_run,
            include_sent=self.include_sent,
            reset_attempts=self.reset_attempts,
        )


class RequeueMessageBody(_Model):
    dry_run: bool = Field(default=False, alias="dryRun", strict=True)
    include_sent: bool = Field(default=False, alias="includeSent", strict=True)
    reset_attempts: bool = Field(default=False, alias="resetAttempts", strict=True)
    reason: Reason


def message_id_from_path(text: str) -> str:
    """The message id a path segment names; ``MessageNotFound`` (404) when no message can have it."""
    if not grammar.matches(grammar.MESSAGE_ID_PATTERN, text):
        raise MessageNotFound("message not found")
    return text


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
    after_id = grammar.parse_id(number) if prefix == "id" else None
    if after_id is None:
        raise InvalidRequest("cursor is not one this API returned", details=[{"field": "cursor"}])
    return after_id


# --- response models (the OpenAPI document states these; the views below produce them) ---------------


class _View(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MessageView(_View):
    id: int
    messageId: str
    topic: str
    status: Literal["PENDING", "SENT", "FAILED"]
    statusCode: Literal[0, 1, 2]
    businessKey: str
    businessType: str
    retryCount: int
    nextRetryAt: str | None
    lastError: str | None
    createTime: str | None
    updateTime: str | None
    sentTime: str | None


class MessagePageView(_View):
    items: list[MessageView]
    limit: int
    nextCursor: str | None


class _FromTo(_View):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: Any = Field(alias="from")
    to: Any


class RequeueChangeView(_View):
    messageId: str
    status: _FromTo
    retryCount: _FromTo
    nextRetryAt: _FromTo


class RequeueView(_View):
    """``requeued`` for a real run, ``wouldRequeue`` for a dry run (exactly one of them)."""

    dryRun: bool
    requeued: int | None = None
    wouldRequeue: int | None = None
    messageIds: list[str]
    maxRowsPerCall: int
    more: bool
    auditId: int | None
    changes: list[RequeueChangeView]


class _Counts(_View):
    pending: int
    sent: int
    failed: int


class StatsView(_View):
    counts: _Counts
    dueBacklog: int
    oldestDueAgeSeconds: float | None
    at: str | None


class _Delivery(_View):
    messageId: str
    delivered: bool
    maskedPhone: str | None
    templateId: str | None
    providerMessageId: str | None
    sentAt: str | None


class _PointsEffect(_View):
    credited: bool
    entries: list[dict[str, Any]]


class _SmsEffect(_View):
    sent: bool
    deliveries: list[_Delivery]


class _Effects(_View):
    points: _PointsEffect
    sms: _SmsEffect


class TraceView(_View):
    order: OrderView
    messages: list[MessageView]
    effects: _Effects


class _StuckRecord(_View):
    id: str
    status: str
    expiration: int | None
    inProgressExpiration: int | None


class StuckView(_View):
    items: list[_StuckRecord]
    count: int


#: The list's query parameters, as OpenAPI parameters built from ``MessageQuery`` itself.
def query_parameters() -> list[dict[str, Any]]:
    schema = MessageQuery.model_json_schema(by_alias=True)
    return [
        {
            "name": name,
            "in": "query",
            "required": False,
            "schema": _STATUS_QUERY_SCHEMA if name == "status" else _non_null(prop),
        }
        for name, prop in schema["properties"].items()
    ]


def _non_null(prop: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is absent or a string: drop the ``null`` branch of an optional field."""
    options = [p for p in prop.get("anyOf", []) if p.get("type") != "null"]
    if len(options) == 1:
        return {**{k: v for k, v in prop.items() if k not in ("anyOf", "default")}, **options[0]}
    return {k: v for k, v in prop.items() if k != "default"}


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
        "retryCount": message.attempts,
        "nextRetryAt": iso_time(message.due_at),
        "lastError": message.last_error,
        "createTime": iso_time(message.create_time),
        "updateTime": iso_time(message.update_time),
        "sentTime": iso_time(message.sent_time),
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
        "changes": [
            {
                "messageId": c.message_id,
                "status": {"from": c.status_from.name, "to": OutboxStatus.PENDING.name},
                "retryCount": {"from": c.attempts_from, "to": c.attempts_to},
                "nextRetryAt": {"from": iso_time(c.due_at_from), "to": iso_time(c.due_at_to)},
            }
            for c in result.changes
        ],
    }


def stats_view(stats: OutboxStats) -> dict[str, Any]:
    counts = stats.counts
    return {
        "counts": {"pending": counts.pending, "sent": counts.sent, "failed": counts.failed},
        "dueBacklog": counts.due,
        "oldestDueAgeSeconds": stats.oldest_due_age_seconds,
        "at": iso_time(stats.now),
    }


def trace_view(trace: OrderTrace) -> dict[str, Any]:
    deliveries = [
        {
            "messageId": message_id,
            "delivered": delivery is not None,
            "maskedPhone": delivery.masked_phone if delivery else None,
            "templateId": delivery.template_id if delivery else None,
            "providerMessageId": delivery.provider_message_id if delivery else None,
            "sentAt": iso_time(delivery.sent_at) if delivery else None,
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
