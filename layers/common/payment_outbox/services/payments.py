"""Orders and the payment callback: ``create_order``, ``get_order``, ``pay_order``, and the callback's
signature check (``CallbackSignatures``)."""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Protocol

from payment_outbox.clock import epoch_seconds, to_naive_utc
from payment_outbox.domain import grammar, signature
from payment_outbox.domain.callers import Caller
from payment_outbox.domain.money import DEFAULT_MONEY_RULES, MoneyRules
from payment_outbox.domain.orders import (
    Order,
    PaymentDecision,
    PaymentNotice,
    decide_payment,
    mark_paid,
    new_order,
)
from payment_outbox.domain.outbox import OutboxMessage, order_paid_envelopes, pending_message
from payment_outbox.domain.tracing import TraceContext
from payment_outbox.errors import InvalidRequest, OrderNotFound, OrderNumberTaken
from payment_outbox.ports import Clock, UnitOfWorkFactory, WebhookSecrets

logger = logging.getLogger(__name__)


class AfterCommitPublisher(Protocol):
    """The after-commit publish as the payment service calls it (``RelayAfterCommitPublisher``)."""

    def __call__(self, messages: Sequence[OutboxMessage]) -> None:
        """Try to publish freshly committed messages now; must never raise."""
        ...


def new_message_id() -> str:
    return uuid.uuid4().hex


#: Draws of a fresh order number before giving up. Two draws collide with probability 1e-6 within one
#: second; the unique key on order_no refuses the second, and the order is simply drawn again.
MAX_ORDER_NO_DRAWS = 5


def new_order_no(clock: Clock) -> str:
    """ "PO" + UTC time to the second + 6 random digits (22 ASCII characters)."""
    return f"PO{clock.now():%Y%m%d%H%M%S}{secrets.randbelow(10**6):06d}"


@dataclass(frozen=True)
class NewOrder:
    user_id: int
    phone: str
    amount: Decimal
    currency: str


class PaymentService:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        clock: Clock,
        *,
        after_commit_lease: timedelta,
        after_commit: AfterCommitPublisher | None = None,
        message_ids: Callable[[], str] = new_message_id,
        order_numbers: Callable[[], str] | None = None,
        money: MoneyRules = DEFAULT_MONEY_RULES,
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._after_commit_lease = after_commit_lease
        self._after_commit = after_commit
        self._message_ids = message_ids
        self._order_numbers = order_numbers or (lambda: new_order_no(clock))
        self._money = money

    def create_order(self, request: NewOrder, caller: Caller | None = None) -> Order:
        """Store a new CREATED order under a fresh order number, drawing again if that number is taken.

        Refused, with nothing written, when the caller is a user other than the order's
        (``ForbiddenForCaller``) or the deployment does not accept its currency (``CurrencyNotAccepted``).
        """
        (caller or Caller.trusted_service()).require_may_act_for(request.user_id)
        self._money.require_accepted(request.currency)
        for draw in range(1, MAX_ORDER_NO_DRAWS + 1):
            try:
                return self._insert_order(request, self._order_numbers())
            except OrderNumberTaken:
                if draw == MAX_ORDER_NO_DRAWS:
                    raise
                logger.warning("order number taken, drawing another (draw %d)", draw)
        raise AssertionError("unreachable")  # pragma: no cover

    def _insert_order(self, request: NewOrder, order_no: str) -> Order:
        now = self._clock.now()
        with self._uow() as tx:
            order = tx.orders.add(
                new_order(
                    order_no=order_no,
                    user_id=request.user_id,
                    phone=request.phone,
                    amount=request.amount,
                    currency=request.currency,
                    now=now,
                )
            )
            tx.commit()
        return order

    def get_order(self, order_id: int, caller: Caller | None = None) -> Order:
        """The order, if the caller may see it: another user's order is not found, exactly like a
        missing one (the same error, the same message)."""
        with self._uow() as tx:
            order = tx.orders.get(order_id)
        if order is None or not (caller or Caller.trusted_service()).may_see(order):
            raise OrderNotFound(f"order {order_id} not found")
        return order

    def pay_order(self, notice: PaymentNotice, *, trace: TraceContext | None = None) -> Order:
        """Mark the order PAID and write its outbox rows in ONE transaction; publish only after commit.

        The rows keep ``trace``, the request's trace context, which travels with each message to the
        consumers. A replay of the same transaction answers with the order as it is and writes nothing.
        """
        now = self._clock.now()
        if not grammar.matches(grammar.ORDER_NO_PATTERN, notice.order_no):
            raise OrderNotFound("order not found")  # no order of ours can carry this number
        problem = grammar.paid_at_problem(notice.paid_at, now)
        if problem is not None:
            raise InvalidRequest(problem, details=[{"field": "paidAt", "problem": problem}])
        self._money.require_accepted(notice.currency)
        with self._uow() as tx:
            order = tx.orders.get_by_order_no_for_update(notice.order_no)
            if order is None:
                raise OrderNotFound(f"order {notice.order_no} not found")
            if decide_payment(order, notice) is PaymentDecision.ALREADY_APPLIED:
                return order
            # A transaction id already used by another order is refused by the unique key on
            # payment_txn_id: save_payment raises TransactionAlreadyUsed (one round trip fewer).
            paid = mark_paid(
                order,
                PaymentNotice(
                    notice.order_no,
                    notice.transaction_id,
                    notice.amount,
                    to_naive_utc(notice.paid_at),
                    notice.currency,
                ),
                now,
            )
            tx.orders.save_payment(paid)
            # Due only after the after-commit lease: the after-commit publish below owns the rows until then,
            # and if this process dies before it finishes, the relay takes them over when it ends.
            messages = [
                pending_message(envelope, now=now, due_at=now + self._after_commit_lease, trace=trace)
                for envelope in order_paid_envelopes(
                    paid, now=now, new_id=self._message_ids, money=self._money
                )
            ]
            tx.outbox.add_all(messages)
            tx.commit()
        if self._after_commit is not None:
            self._after_commit(messages)
        return paid


class CallbackSignatures:
    """Accepts a payment callback only when it is signed with a current webhook secret, recently."""

    def __init__(self, secrets: WebhookSecrets, clock: Clock, *, tolerance_seconds: int) -> None:
        self._secrets = secrets
        self._clock = clock
        self._tolerance_seconds = tolerance_seconds

    def verify(self, header: str | None, raw_body: bytes) -> None:
        """Raise ``SignatureRejected`` unless ``header`` signs ``raw_body`` within the tolerance."""
        signature.verify(
            header,
            raw_body,
            self._secrets.current(),
            now=epoch_seconds(self._clock.now()),
            tolerance_seconds=self._tolerance_seconds,
        )
