"""Several relays draining one backlog at the same time on MariaDB: every row is published exactly once.

Each relay is what one Lambda container runs: its own OutboxRelay, its own SNS publisher and its own
database connection. They start together on a barrier and claim in small batches, so their claims
interleave for the whole run.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from typing import Any

import boto3
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from payment_outbox.adapters.db.engine import make_engine, make_session_factory
from payment_outbox.adapters.db.unit_of_work import SqlUnitOfWork
from payment_outbox.adapters.sns_publisher import SnsPublisher
from payment_outbox.clock import SystemClock
from payment_outbox.domain.backoff import RetryPolicy
from payment_outbox.domain.envelope import BUSINESS_TYPE_ORDER_PAID, TOPIC_POINTS, TOPIC_SMS, Envelope
from payment_outbox.domain.outbox import OutboxMessage, pending_message
from payment_outbox.ports import MessagePublisher, PublishFailure, PublishOutcome
from payment_outbox.services.relay import OutboxRelay, RelayReport
from tests.support import LocalSystem

pytestmark = pytest.mark.integration

BATCH_SIZE = 10


class RecordingPublisher:
    """Wraps a publisher and records, thread-safely, every message id it was asked to publish and
    every one that was published."""

    def __init__(self, inner: MessagePublisher, log: list[str], lock: threading.Lock) -> None:
        self._inner = inner
        self._log = log
        self._lock = lock

    def publish(self, messages: Sequence[OutboxMessage]) -> PublishOutcome:
        outcome = self._inner.publish(messages)
        with self._lock:
            self._log.extend(outcome.published)
        return outcome


class AlwaysPublishes:
    """An SNS stand-in that accepts everything (used where moto is not involved)."""

    def publish(self, messages: Sequence[OutboxMessage]) -> PublishOutcome:
        return PublishOutcome(published=[m.message_id for m in messages])


def insert_backlog(engine: Engine, count: int) -> list[str]:
    """``count`` rows all due a minute ago, half points and half SMS."""
    now = SystemClock().now()
    rows = []
    for i in range(count):
        envelope = Envelope(
            message_id=uuid.uuid4().hex,
            topic=TOPIC_POINTS if i % 2 == 0 else TOPIC_SMS,
            business_key=f"PO{i:010d}",
            business_type=BUSINESS_TYPE_ORDER_PAID,
            occurred_at=now,
            payload={"n": i},
        )
        rows.append(pending_message(envelope, now=now, due_at=now - timedelta(minutes=1)))
    with SqlUnitOfWork(make_session_factory(engine)) as tx:
        tx.outbox.add_all(rows)
        tx.commit()
    return [m.message_id for m in rows]


def run_relays_together(relays: list[OutboxRelay]) -> list[RelayReport]:
    """Run every relay in its own thread, all starting at once; re-raise the first error."""
    barrier = threading.Barrier(len(relays))
    reports: list[RelayReport | None] = [None] * len(relays)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=10)
            reports[index] = relays[index].relay_due_messages()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(relays))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a relay did not finish"
    if errors:
        raise errors[0]
    return [r for r in reports if r is not None]


def relay(engine: Engine, publisher: MessagePublisher) -> OutboxRelay:
    sessions: sessionmaker[Session] = make_session_factory(engine)
    return OutboxRelay(
        lambda: SqlUnitOfWork(sessions),
        publisher,
        SystemClock(),
        policy=RetryPolicy(max_attempts=5),
        claim_size=BATCH_SIZE,
        lease=timedelta(seconds=60),
    )


def statuses(engine: Engine) -> Counter[int]:
    with engine.connect() as conn:
        return Counter(int(s) for (s,) in conn.execute(text("SELECT status FROM message_record")))


def receive_all(queue_url: str) -> list[Any]:
    """Receive and delete everything on the queue (drains it)."""
    sqs = boto3.client("sqs")
    received: list[Any] = []
    while True:
        batch = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0, MessageAttributeNames=["All"]
        ).get("Messages", [])
        if not batch:
            return received
        received.extend(batch)
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)],
        )


@pytest.fixture
def container_engines(db: Engine) -> Iterator[Callable[[int], list[Engine]]]:
    """Engines built as each relay container builds its own: one pooled connection, READ COMMITTED."""
    made: list[Engine] = []

    def make(count: int) -> list[Engine]:
        engines = [make_engine(db.url.render_as_string(hide_password=False)) for _ in range(count)]
        made.extend(engines)
        return engines

    yield make
    for engine in made:
        engine.dispose()


def test_concurrent_relays_publish_each_row_of_a_backlog_exactly_once_through_sns(
    system: LocalSystem, db: Engine, container_engines: Callable[[int], list[Engine]]
) -> None:
    # Given a backlog of 300 due rows
    ids = insert_backlog(db, 300)
    # And three relays, each with its own SNS client publishing to the order events topic
    published: list[str] = []
    lock = threading.Lock()
    topic_arn = system.resources.refs["OrderEventsTopic"]
    clients = [boto3.client("sns") for _ in range(3)]  # made here: creating clients is not thread-safe
    relays = [
        relay(engine, RecordingPublisher(SnsPublisher(_const(client), topic_arn), published, lock))
        for engine, client in zip(container_engines(3), clients, strict=True)
    ]

    # When they drain the backlog at the same time
    reports = run_relays_together(relays)

    # Then every row is sent and none failed or waits
    assert statuses(db) == Counter({1: 300})
    # And each message id was published exactly once, across all relays
    assert sorted(published) == sorted(ids)
    assert sum(r.claimed for r in reports) == 300
    assert sum(r.published for r in reports) == 300
    # And the work really was shared
    assert sum(1 for r in reports if r.claimed) >= 2
    # And the queues received each envelope once: points rows on one queue, SMS rows on the other
    points = receive_all(system.resources.queue_url("PointsQueue"))
    sms = receive_all(system.resources.queue_url("SmsQueue"))
    delivered = Counter(json.loads(m["Body"])["messageId"] for m in points + sms)
    assert set(delivered) == set(ids)
    assert max(delivered.values()) == 1
    assert {json.loads(m["Body"])["topic"] for m in points} == {TOPIC_POINTS}
    assert {json.loads(m["Body"])["topic"] for m in sms} == {TOPIC_SMS}
    assert (len(points), len(sms)) == (150, 150)


def test_many_concurrent_relays_never_publish_a_row_twice(
    db: Engine, container_engines: Callable[[int], list[Engine]]
) -> None:
    # Given a backlog of 600 due rows
    ids = insert_backlog(db, 600)
    # And six relays whose publisher accepts everything and records what it published
    published: list[str] = []
    lock = threading.Lock()
    relays = [
        relay(engine, RecordingPublisher(AlwaysPublishes(), published, lock))
        for engine in container_engines(6)
    ]

    # When they drain the backlog at the same time
    reports = run_relays_together(relays)

    # Then each row was published by exactly one relay, once, and is marked sent
    counts = Counter(published)
    assert set(counts) == set(ids)
    assert max(counts.values()) == 1
    assert statuses(db) == Counter({1: 600})
    assert sum(r.published for r in reports) == 600
    assert sum(1 for r in reports if r.claimed) >= 2


def _const(client: Any) -> Callable[[], Any]:
    return lambda: client


# --- stream order ---------------------------------------------------------------------------------


class StreamWatchingPublisher:
    """Accepts everything except each row's first attempt when told to fail it; records, per stream
    (business key x topic), the order rows were published in, and any moment two rows of one stream
    were being published at the same time."""

    def __init__(self, fail_first_attempt: set[str]) -> None:
        self._lock = threading.Lock()
        self._fail_first_attempt = set(fail_first_attempt)
        self._in_flight: set[tuple[str, str]] = set()
        self.overlaps: list[tuple[str, str]] = []
        self.published: dict[tuple[str, str], list[str]] = {}
        self.failed: list[str] = []

    def publish(self, messages: Sequence[OutboxMessage]) -> PublishOutcome:
        streams = [(m.business_key, m.topic) for m in messages]
        with self._lock:
            self.overlaps.extend(s for s in streams if s in self._in_flight or streams.count(s) > 1)
            self._in_flight.update(streams)
        time.sleep(0.005)  # a publish takes time: other relays run meanwhile
        outcome = PublishOutcome()
        with self._lock:
            for message, stream in zip(messages, streams, strict=True):
                self._in_flight.discard(stream)
                if message.message_id in self._fail_first_attempt:
                    self._fail_first_attempt.discard(message.message_id)
                    self.failed.append(message.message_id)
                    outcome.failed[message.message_id] = PublishFailure("Throttled: slow down")
                else:
                    self.published.setdefault(stream, []).append(message.message_id)
                    outcome.published.append(message.message_id)
        return outcome


def insert_streams(engine: Engine, keys: int, rows_per_stream: int) -> dict[tuple[str, str], list[str]]:
    """``rows_per_stream`` rows for each of ``keys`` orders and both topics, written round-robin (as
    concurrent producers would), all due; returns each stream's message ids in the order written."""
    now = SystemClock().now()
    streams: dict[tuple[str, str], list[str]] = {}
    rows = []
    for n in range(rows_per_stream):
        for k in range(keys):
            for topic in (TOPIC_POINTS, TOPIC_SMS):
                envelope = Envelope(
                    message_id=uuid.uuid4().hex,
                    topic=topic,
                    business_key=f"PO{k:010d}",
                    business_type=BUSINESS_TYPE_ORDER_PAID,
                    occurred_at=now,
                    payload={"n": n},
                )
                # Later rows of a stream are due earlier: the claim must not go by due time alone.
                rows.append(pending_message(envelope, now=now, due_at=now - timedelta(seconds=n)))
                streams.setdefault((envelope.business_key, topic), []).append(envelope.message_id)
    with SqlUnitOfWork(make_session_factory(engine)) as tx:
        tx.outbox.add_all(rows)
        tx.commit()
    return streams


def test_concurrent_relays_in_stream_order_publish_each_stream_in_order_one_row_at_a_time(
    db: Engine, container_engines: Callable[[int], list[Engine]]
) -> None:
    # Given 20 streams of 6 due rows each (10 orders x 2 topics), where a quarter of the rows fail
    # their first publish, among them rows in the middle of their stream
    streams = insert_streams(db, keys=10, rows_per_stream=6)
    every_row = [i for ids in streams.values() for i in ids]
    publisher = StreamWatchingPublisher(fail_first_attempt=set(every_row[::4]))
    # And four relays keeping stream order, each on its own connection, with short back-offs
    relays = [
        OutboxRelay(
            (lambda sessions: lambda: SqlUnitOfWork(sessions))(make_session_factory(engine)),
            publisher,
            SystemClock(),
            policy=RetryPolicy(max_attempts=5, base_delay_seconds=0.05, max_delay_seconds=0.1),
            claim_size=5,
            lease=timedelta(seconds=60),
            ordered_by_key=True,
        )
        for engine in container_engines(4)
    ]

    # When they run together, run after run, until nothing is pending
    reports: list[RelayReport] = []
    for _ in range(40):
        reports.extend(run_relays_together(relays))
        if statuses(db) == Counter({1: len(every_row)}):
            break
        time.sleep(0.1)

    # Then every row is sent, each published once, the failed ones after their retry
    assert statuses(db) == Counter({1: len(every_row)})
    assert len(publisher.failed) == len(every_row[::4])
    # And every stream was published in the order it was written, failures in the middle included
    assert publisher.published == streams
    # And no two rows of one stream were ever being published at the same time, by any relay
    assert publisher.overlaps == []
    # And the work really was shared
    claimed_by_relay = [sum(r.claimed for r in reports[i :: len(relays)]) for i in range(len(relays))]
    assert sum(1 for claimed in claimed_by_relay if claimed) >= 2
