"""In-memory fakes of the ports in ``payment_outbox.ports``, for unit tests of the use cases.

They keep the behaviour the use cases rely on (a unit of work that rolls back unless committed, rows
that change only while pending, a ledger that credits a message once), and nothing more.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from types import TracebackType
from typing import Self

from payment_outbox.domain.envelope import BUSINESS_TYPE_ORDER_PAID, TOPIC_POINTS, Envelope
from payment_outbox.domain.orders import Order
from payment_outbox.domain.outbox import OutboxMessage, OutboxStatus, pending_message, truncate_error
from payment_outbox.errors import TransactionAlreadyUsed
from payment_outbox.ports import (
    PointsCredit,
    PublishFailure,
    PublishOutcome,
    SmsDelivery,
    SmsIntent,
    SmsIntentState,
)

START = datetime(2026, 11, 27, 10, 0, 0)


# --- clock ---------------------------------------------------------------------------------------


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, now: datetime = START) -> None:
        self._now = now

    def now(self) -> datetime:
        return self._now

    def set(self, moment: datetime) -> None:
        self._now = moment

    def advance(self, **delta: float) -> datetime:
        self._now += timedelta(**delta)
        return self._now


# --- database: orders + outbox behind a unit of work ------------------------------------------


@dataclass
class _Tables:
    orders: dict[int, Order] = field(default_factory=dict)
    outbox: dict[str, OutboxMessage] = field(default_factory=dict)
    next_order_id: int = 1
    next_message_row_id: int = 1


class InMemoryOrders:
    def __init__(self, tables: _Tables) -> None:
        self._t = tables

    def add(self, order: Order) -> Order:
        if any(o.order_no == order.order_no for o in self._t.orders.values()):
            raise ValueError(f"duplicate order_no {order.order_no}")
        order_id = self._t.next_order_id
        self._t.next_order_id += 1
        stored = replace(order, id=order_id)
        self._t.orders[order_id] = stored
        return stored

    def get(self, order_id: int) -> Order | None:
        return self._t.orders.get(order_id)

    def get_by_order_no_for_update(self, order_no: str) -> Order | None:
        return next((o for o in self._t.orders.values() if o.order_no == order_no), None)

    def find_by_transaction(self, transaction_id: str) -> Order | None:
        return next((o for o in self._t.orders.values() if o.payment_txn_id == transaction_id), None)

    def save_payment(self, order: Order) -> None:
        other = self.find_by_transaction(order.payment_txn_id or "")
        if other is not None and other.id != order.id:
            raise TransactionAlreadyUsed(f"transaction {order.payment_txn_id} already paid another order")
        assert order.id is not None and order.id in self._t.orders, "save_payment on an unknown order"
        self._t.orders[order.id] = order


class InMemoryOutbox:
    def __init__(self, tables: _Tables) -> None:
        self._t = tables

    def add_all(self, messages: Sequence[OutboxMessage]) -> None:
        for message in messages:
            if message.message_id in self._t.outbox:
                raise ValueError(f"duplicate message_id {message.message_id}")
            self._t.outbox[message.message_id] = replace(message, id=self._t.next_message_row_id)
            self._t.next_message_row_id += 1

    def claim_due(
        self, *, now: datetime, limit: int, lease_until: datetime, ordered_by_key: bool = False
    ) -> list[OutboxMessage]:
        pending = [m for m in self._t.outbox.values() if m.status is OutboxStatus.PENDING]
        due = [m for m in pending if m.due_at <= now]
        if ordered_by_key:
            due = [m for m in due if not _earlier_pending_in_stream(m, pending)]
        claimed = sorted(due, key=lambda m: (m.due_at, _row_id(m)))[:limit]
        for message in claimed:
            self._t.outbox[message.message_id] = replace(message, due_at=lease_until, update_time=now)
        return claimed

    def release_waiting(self, message_ids: Sequence[str], *, now: datetime) -> set[str]:
        pending = [m for m in self._t.outbox.values() if m.status is OutboxStatus.PENDING]
        waiting = {
            m.message_id
            for m in pending
            if m.message_id in message_ids and _earlier_pending_in_stream(m, pending)
        }
        for message_id in waiting:
            self._update_pending(message_id, due_at=now, update_time=now)
        return waiting

    def mark_sent(self, message_ids: Sequence[str], *, now: datetime) -> int:
        changed = 0
        for message_id in message_ids:
            changed += self._update_pending(
                message_id, status=OutboxStatus.SENT, sent_time=now, update_time=now, last_error=None
            )
        return changed

    def schedule_retry(
        self, message_id: str, *, attempts: int, due_at: datetime, error: str, now: datetime
    ) -> bool:
        return self._update_pending(
            message_id,
            attempts=attempts,
            due_at=due_at,
            last_error=truncate_error(error),
            update_time=now,
        )

    def mark_failed(self, message_id: str, *, attempts: int, error: str, now: datetime) -> bool:
        return self._update_pending(
            message_id,
            status=OutboxStatus.FAILED,
            attempts=attempts,
            last_error=truncate_error(error),
            update_time=now,
        )

    def oldest_due_at(self, now: datetime) -> datetime | None:
        due = [
            m.due_at for m in self._t.outbox.values() if m.status is OutboxStatus.PENDING and m.due_at <= now
        ]
        return min(due, default=None)

    def next_due_at(self, *, after: datetime) -> datetime | None:
        upcoming = [
            m.due_at for m in self._t.outbox.values() if m.status is OutboxStatus.PENDING and m.due_at > after
        ]
        return min(upcoming, default=None)

    def count_due(self, now: datetime, *, limit: int) -> int:
        due = [m for m in self._t.outbox.values() if m.status is OutboxStatus.PENDING and m.due_at <= now]
        return min(len(due), limit)

    def get(self, message_id: str) -> OutboxMessage | None:
        return self._t.outbox.get(message_id)

    def list_for_business_key(self, business_key: str) -> list[OutboxMessage]:
        return sorted((m for m in self._t.outbox.values() if m.business_key == business_key), key=_row_id)

    def _update_pending(self, message_id: str, **values: object) -> bool:
        message = self._t.outbox.get(message_id)
        if message is None or message.status is not OutboxStatus.PENDING:
            return False
        self._t.outbox[message_id] = replace(message, **values)  # type: ignore[arg-type]
        return True


def _earlier_pending_in_stream(message: OutboxMessage, pending: Sequence[OutboxMessage]) -> bool:
    """The stream rule of SqlOutboxRepository: same business key and topic, a lower row id."""
    return bool(message.business_key) and any(
        o.business_key == message.business_key and o.topic == message.topic and _row_id(o) < _row_id(message)
        for o in pending
    )


def _row_id(message: OutboxMessage) -> int:
    assert message.id is not None
    return message.id


class FakeUnitOfWork:
    """Works on a private copy of the tables; ``commit()`` makes it the database's state."""

    orders: InMemoryOrders
    outbox: InMemoryOutbox

    def __init__(self, database: InMemoryDatabase) -> None:
        self._database = database

    def __enter__(self) -> Self:
        if self._database.fail_next_enter is not None:
            error, self._database.fail_next_enter = self._database.fail_next_enter, None
            raise error
        self._tables = copy.deepcopy(self._database.tables)
        self.orders = InMemoryOrders(self._tables)
        self.outbox = InMemoryOutbox(self._tables)
        self._database.opened += 1
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Whatever was not committed is dropped with the private copy.
        del self._tables

    def commit(self) -> None:
        self._database.tables = copy.deepcopy(self._tables)
        self._database.commits += 1


class InMemoryDatabase:
    """The orders and message_record tables; call it to open a unit of work (a ``UnitOfWorkFactory``)."""

    def __init__(self) -> None:
        self.tables = _Tables()
        self.opened = 0
        self.commits = 0
        #: Set to an exception to make the next ``with uow():`` raise it (a lost connection).
        self.fail_next_enter: Exception | None = None

    def __call__(self) -> FakeUnitOfWork:
        return FakeUnitOfWork(self)

    # Reading committed state, as a test would query the table.
    def message(self, message_id: str) -> OutboxMessage:
        return self.tables.outbox[message_id]

    def messages(self) -> list[OutboxMessage]:
        return sorted(self.tables.outbox.values(), key=_row_id)

    def order(self, order_id: int) -> Order:
        return self.tables.orders[order_id]

    # Seeding committed rows.
    def insert_messages(self, messages: Sequence[OutboxMessage]) -> list[OutboxMessage]:
        with self() as tx:
            tx.outbox.add_all(messages)
            tx.commit()
        return [self.message(m.message_id) for m in messages]


def outbox_message(
    message_id: str,
    *,
    now: datetime = START,
    due_at: datetime | None = None,
    topic: str = TOPIC_POINTS,
    business_key: str = "PO-1",
    payload: dict[str, object] | None = None,
    attempts: int = 0,
    padding: int = 0,
) -> OutboxMessage:
    """A pending row holding a real envelope; ``padding`` adds that many bytes to its body."""
    body: dict[str, object] = dict(payload or {"userId": 7, "orderId": 1, "points": 10})
    if padding:
        body["padding"] = "x" * padding
    envelope = Envelope(
        message_id=message_id,
        topic=topic,
        business_key=business_key,
        business_type=BUSINESS_TYPE_ORDER_PAID,
        occurred_at=now,
        payload=body,
    )
    message = pending_message(envelope, now=now, due_at=now if due_at is None else due_at)
    return replace(message, attempts=attempts) if attempts else message


# --- message bus -------------------------------------------------------------------------------


@dataclass
class _Script:
    failures_left: int  # -1: forever
    error: str
    permanent: bool


class ScriptedPublisher:
    """Publishes everything unless told otherwise, per message id; records every call."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.published: list[str] = []
        self._scripts: dict[str, _Script] = {}
        self._raise: Exception | None = None
        self._silent: set[str] = set()
        self._outage: str | None = None

    def fail(self, message_id: str, times: int = 1, error: str = "Throttled: slow down") -> None:
        """Fail this message's next ``times`` publishes (transient), then publish it."""
        self._scripts[message_id] = _Script(times, error, permanent=False)

    def fail_always(self, message_id: str, error: str = "InternalError: SNS is down") -> None:
        self._scripts[message_id] = _Script(-1, error, permanent=False)

    def fail_permanently(self, message_id: str, error: str = "message too large") -> None:
        self._scripts[message_id] = _Script(-1, error, permanent=True)

    def outage(self, error: str = "ServiceUnavailable: 503") -> None:
        """Refuse every request whole, as SNS does in an outage, until ``recover``."""
        self._outage = error

    def recover(self) -> None:
        self._outage = None

    def forget(self, message_id: str) -> None:
        """Report nothing at all for this message (neither published nor failed)."""
        self._silent.add(message_id)

    def raise_on_publish(self, error: Exception) -> None:
        """Break the contract: raise from ``publish`` instead of reporting outcomes."""
        self._raise = error

    def publish(self, messages: Sequence[OutboxMessage]) -> PublishOutcome:
        self.calls.append([m.message_id for m in messages])
        if self._raise is not None:
            raise self._raise
        outcome = PublishOutcome()
        if self._outage is not None:
            for message in messages:
                outcome.failed[message.message_id] = PublishFailure(self._outage, outage=True)
            return outcome
        for message in messages:
            if message.message_id in self._silent:
                continue
            script = self._scripts.get(message.message_id)
            if script is not None and script.failures_left != 0:
                if script.failures_left > 0:
                    script.failures_left -= 1
                outcome.failed[message.message_id] = PublishFailure(script.error, permanent=script.permanent)
                continue
            outcome.published.append(message.message_id)
            self.published.append(message.message_id)
        return outcome


# --- consumers' side ----------------------------------------------------------------------------


class FakePointsLedger:
    def __init__(self) -> None:
        self.entries: dict[str, PointsCredit] = {}
        self.balances: dict[int, int] = {}

    def credit(self, credit: PointsCredit) -> bool:
        if credit.message_id in self.entries:
            return False
        self.entries[credit.message_id] = credit
        self.balances[credit.user_id] = self.balances.get(credit.user_id, 0) + credit.points
        return True

    def balance(self, user_id: int) -> int:
        return self.balances.get(user_id, 0)


class FakeSmsSender:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def send(self, phone: str, text: str) -> str:
        self.sent.append((phone, text))
        return f"sms-{len(self.sent)}"


class FakeSmsDeliveryLog:
    """SENT records in ``records``; intents not (yet) SENT in ``intents``: one item per message, as
    in the table."""

    def __init__(self) -> None:
        self.records: dict[str, SmsDelivery] = {}
        self.intents: dict[str, SmsIntent] = {}

    def find(self, message_id: str) -> SmsDelivery | None:
        return self.records.get(message_id)

    def intent(self, message_id: str) -> SmsIntent | None:
        if message_id in self.records:
            sent = self.records[message_id]
            return SmsIntent(
                message_id, SmsIntentState.SENT, sent.masked_phone, sent.template_id, sent.sent_at
            )
        return self.intents.get(message_id)

    def begin(self, intent: SmsIntent) -> bool:
        if self.intent(intent.message_id) is not None:
            return False
        self.intents[intent.message_id] = intent
        return True

    def move(self, message_id: str, *, from_state: SmsIntentState, to: SmsIntent) -> bool:
        current = self.intent(message_id)
        if current is None or current.state is not from_state:
            return False
        self.records.pop(message_id, None)
        self.intents[message_id] = to
        return True

    def clear(self, message_id: str) -> None:
        current = self.intents.get(message_id)
        if current is not None and current.state is SmsIntentState.SENDING:
            del self.intents[message_id]

    def record(self, delivery: SmsDelivery, *, only_from: SmsIntentState | None = None) -> bool:
        current = self.intent(delivery.message_id)
        if only_from is not None and (current is None or current.state is not only_from):
            return False
        self.intents.pop(delivery.message_id, None)
        self.records[delivery.message_id] = delivery
        return True
