"""Outbox rows for the benchmarks: real envelopes, inserted in bulk, and a queue drainer."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, insert, text

from payment_outbox.adapters.db.repositories import message_record_values
from payment_outbox.adapters.db.schema import MessageRecordRow
from payment_outbox.clock import SystemClock
from payment_outbox.domain.orders import Order, OrderStatus
from payment_outbox.domain.outbox import OutboxMessage, order_paid_envelopes, pending_message

_INSERT_CHUNK = 1_000


def paid_order(number: int, now: Any) -> Order:
    return Order(
        id=number,
        order_no=f"PO{number:018d}",
        user_id=1_000 + number % 97,
        user_phone=f"+86138{number % 100_000_000:08d}",
        amount=Decimal("128.50"),
        currency="CNY",
        status=OrderStatus.PAID,
        pay_time=now,
        payment_txn_id=f"txn-{number}",
        created_at=now,
        updated_at=now,
    )


def due_messages(count: int, *, first_order: int = 1) -> list[OutboxMessage]:
    """``count`` due rows, as a paid order writes them: a points message and an SMS message per order."""
    now = SystemClock().now()
    messages: list[OutboxMessage] = []
    number = first_order
    while len(messages) < count:
        order = paid_order(number, now)
        for envelope in order_paid_envelopes(order, now=now, new_id=lambda: uuid.uuid4().hex):
            messages.append(pending_message(envelope, now=now, due_at=now - timedelta(seconds=1)))
        number += 1
    return messages[:count]


def reset_outbox(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM message_record"))


def reset_orders(engine: Engine) -> None:
    """No orders: what an earlier section paid would otherwise stand in a later one's tables."""
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM orders"))


def insert_messages(engine: Engine, messages: list[OutboxMessage]) -> None:
    rows = [message_record_values(m) for m in messages]
    with engine.begin() as conn:
        for start in range(0, len(rows), _INSERT_CHUNK):
            conn.execute(insert(MessageRecordRow), rows[start : start + _INSERT_CHUNK])


def count_by_status(engine: Engine) -> dict[int, int]:
    with engine.connect() as conn:
        return {
            int(status): int(n)
            for status, n in conn.execute(text("SELECT status, COUNT(*) FROM message_record GROUP BY status"))
        }


class QueueDrainer:
    """Purges the subscribed queues every ``interval`` seconds while a measurement runs.

    moto's SendMessage scans the whole queue to refresh its attributes, so a queue that fills up
    makes every later publish slower; real SQS does not. Draining keeps that out of the figures.
    """

    def __init__(self, queue_urls: list[str], interval: float = 0.05) -> None:
        import boto3

        self._sqs: Any = boto3.client("sqs")
        self._urls = queue_urls
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def purge(self) -> None:
        for url in self._urls:
            self._sqs.purge_queue(QueueUrl=url)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.purge()

    def __enter__(self) -> QueueDrainer:
        self.purge()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.purge()


#: Rows written through the ORM before the backlog is multiplied inside the database.
_BACKLOG_SEED = 2_000


def insert_backlog(engine: Engine, rows: int, *, first_order: int = 1) -> int:
    """At least ``rows`` due rows, fast: a seed of real rows (``due_messages``), then copies of them
    made by the database itself (INSERT … SELECT over MariaDB's sequence table), each with a message
    id of its own. Returns how many rows there are."""
    import math

    seed = min(rows, _BACKLOG_SEED)
    insert_messages(engine, due_messages(seed, first_order=first_order))
    copies = math.ceil(rows / seed) - 1
    if copies > 0:
        columns = [c.name for c in MessageRecordRow.__table__.columns if c.name not in ("id", "message_id")]
        listed = ", ".join(columns)
        with engine.begin() as conn:
            conn.exec_driver_sql(
                f"INSERT INTO message_record (message_id, {listed}) "  # noqa: S608 - our own column names
                f"SELECT CONCAT(m.message_id, '-', s.seq), {', '.join('m.' + c for c in columns)} "
                f"FROM message_record m CROSS JOIN seq_1_to_{copies} s"
            )
    return seed * (copies + 1)
