"""Order rules: creation and payment confirmation (points per currency: ``domain.money``)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from payment_outbox.domain.grammar import MAX_AMOUNT
from payment_outbox.errors import AlreadyPaid, AmountMismatch, CurrencyMismatch

__all__ = ["MAX_AMOUNT"]


class OrderStatus(StrEnum):
    CREATED = "CREATED"
    PAID = "PAID"


@dataclass(frozen=True)
class Order:
    id: int | None
    order_no: str
    user_id: int
    user_phone: str
    amount: Decimal
    currency: str
    status: OrderStatus
    created_at: datetime
    updated_at: datetime
    pay_time: datetime | None = None
    payment_txn_id: str | None = None


@dataclass(frozen=True)
class PaymentNotice:
    """What the payment provider tells us: this order was paid by this transaction."""

    order_no: str
    transaction_id: str
    amount: Decimal
    paid_at: datetime
    #: The provider's currency code (ISO 4217), which must be the order's.
    currency: str


class PaymentDecision(StrEnum):
    #: First successful callback: the order becomes PAID and its side effects are scheduled.
    PAY = "PAY"
    #: The same transaction reported again: answer as before, write nothing.
    ALREADY_APPLIED = "ALREADY_APPLIED"


def new_order(
    *, order_no: str, user_id: int, phone: str, amount: Decimal, currency: str, now: datetime
) -> Order:
    return Order(
        id=None,
        order_no=order_no,
        user_id=user_id,
        user_phone=phone,
        amount=amount,
        currency=currency,
        status=OrderStatus.CREATED,
        created_at=now,
        updated_at=now,
    )


def decide_payment(order: Order, notice: PaymentNotice) -> PaymentDecision:
    """Decide what a payment callback does to an order, or raise why it must be refused."""
    if order.status is OrderStatus.PAID:
        if order.payment_txn_id == notice.transaction_id:
            return PaymentDecision.ALREADY_APPLIED
        raise AlreadyPaid(f"order {order.order_no} is already paid by another transaction")
    if notice.amount != order.amount:
        raise AmountMismatch(f"paid amount {notice.amount} does not match order amount {order.amount}")
    if notice.currency != order.currency:
        raise CurrencyMismatch(
            f"paid currency {notice.currency} does not match order currency {order.currency}"
        )
    return PaymentDecision.PAY


def mark_paid(order: Order, notice: PaymentNotice, now: datetime) -> Order:
    return replace(
        order,
        status=OrderStatus.PAID,
        pay_time=notice.paid_at,
        payment_txn_id=notice.transaction_id,
        updated_at=now,
    )
