"""The outbox (local message table) model and the messages a paid order produces."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum

from payment_outbox.domain.envelope import (
    BUSINESS_TYPE_ORDER_PAID,
    TOPIC_POINTS,
    TOPIC_SMS,
    Envelope,
)
from payment_outbox.domain.money import DEFAULT_MONEY_RULES, MoneyRules
from payment_outbox.domain.orders import Order
from payment_outbox.domain.sms import TEMPLATE_ORDER_PAY_SUCCESS
from payment_outbox.domain.tracing import TraceContext

#: last_error is stored in a VARCHAR(1000).
LAST_ERROR_MAX = 1000


class OutboxStatus(IntEnum):
    """Status codes of the seed table, unchanged. A retrying row stays PENDING with a later due time."""

    PENDING = 0
    SENT = 1
    FAILED = 2


@dataclass(frozen=True)
class OutboxMessage:
    """One row of ``message_record``. ``content`` is the envelope JSON exactly as published."""

    message_id: str
    topic: str
    content: str
    business_key: str
    business_type: str
    status: OutboxStatus
    attempts: int
    due_at: datetime
    create_time: datetime
    update_time: datetime
    id: int | None = None
    last_error: str | None = None
    sent_time: datetime | None = None
    #: The trace context of the request that wrote the row (None for rows written before traces).
    trace: TraceContext | None = None
    #: Operator requeues so far: a FIFO topic gets a fresh deduplication id for each one.
    requeue_count: int = 0
    #: When an operator marked this FAILED row resolved (it stays FAILED, and leaves triage).
    resolved_at: datetime | None = None

    @property
    def deduplication_id(self) -> str:
        """SNS FIFO's deduplication id: the message id, plus the requeue generation after a requeue.

        A publish that outlives its lease goes out again under the same id, so SNS drops the copy
        within its 5-minute window; an operator's requeue is a deliberate new delivery and gets a new
        id, so SNS passes it on. Consumers still deduplicate on the envelope's messageId.
        """
        return self.message_id if self.requeue_count == 0 else f"{self.message_id}.r{self.requeue_count}"


def pending_message(
    envelope: Envelope, *, now: datetime, due_at: datetime, trace: TraceContext | None = None
) -> OutboxMessage:
    return OutboxMessage(
        message_id=envelope.message_id,
        topic=envelope.topic,
        content=envelope.to_json(),
        business_key=envelope.business_key,
        business_type=envelope.business_type,
        status=OutboxStatus.PENDING,
        attempts=0,
        due_at=due_at,
        create_time=now,
        update_time=now,
        trace=trace,
    )


def order_paid_envelopes(
    order: Order,
    *,
    now: datetime,
    new_id: Callable[[], str],
    money: MoneyRules = DEFAULT_MONEY_RULES,
) -> list[Envelope]:
    """The side effects of a paid order: credit points (by its currency's rule), send the payment SMS."""
    if order.id is None:
        raise ValueError("order must be stored before its messages are built")
    common = {
        "business_key": order.order_no,
        "business_type": BUSINESS_TYPE_ORDER_PAID,
        "occurred_at": now,
    }
    return [
        Envelope(
            message_id=new_id(),
            topic=TOPIC_POINTS,
            payload={
                "userId": order.user_id,
                "orderId": order.id,
                "points": money.points_for(order.amount, order.currency),
            },
            **common,
        ),
        Envelope(
            message_id=new_id(),
            topic=TOPIC_SMS,
            payload={
                "phone": order.user_phone,
                "templateId": TEMPLATE_ORDER_PAY_SUCCESS,
                "params": [order.order_no, f"{order.amount:.2f}"],
            },
            **common,
        ),
    ]


def truncate_error(error: str) -> str:
    return error if len(error) <= LAST_ERROR_MAX else error[: LAST_ERROR_MAX - 1] + "…"
