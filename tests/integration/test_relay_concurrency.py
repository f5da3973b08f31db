"""The relay with several PublishBatch requests in flight, on MariaDB and moto: per-entry failures
spread over concurrent requests, mark-sent in one statement per claim, several such relays on one
backlog, ordered delivery, and fan-out under a backlog."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event

from payment_outbox import timeouts
from payment_outbox.adapters.aws import AwsClients
from payment_outbox.adapters.db.engine import make_engine, make_session_factory
from payment_outbox.adapters.db.unit_of_work import SqlUnitOfWork
from payment_outbox.adapters.sns_publisher import SnsPublisher
from payment_outbox.clock import SystemClock
from payment_outbox.domain.backoff import RetryPolicy
from payment_outbox.domain.outbox import OutboxMessage
from payment_outbox.ports import MessagePublisher, PublishOutcome
from payment_outbox.services.relay import SAFETY_MARGIN_MS, FanOut, OutboxRelay
from payment_outbox_dev.local.faults import FailEntries, FaultInjector, entry_message_id
from tests.integration.test_concurrent_relays import (
    RecordingPublisher,
    insert_backlog,
    receive_all,
    run_relays_together,
    statuses,
)
from tests.support import LocalSystem

pytestmark = pytest.mark.integration


def concurrent_relay(
    engine: Engine,
    publisher: MessagePublisher,
    *,
    claim_size: int = 40,
    max_in_flight: int = 4,
    ordered_by_key: bool = False,
) -> OutboxRelay:
    sessions = make_session_factory(engine)
    return OutboxRelay(
        lambda: SqlUnitOfWork(sessions),
        publisher,
        SystemClock(),
        policy=RetryPolicy(max_attempts=5),
        claim_size=claim_size,
        lease=timedelta(seconds=60),
        ordered_by_key=ordered_by_key,
        max_in_flight=max_in_flight,
        request_size=10,
    )


@pytest.fixture
def engines(db: Engine) -> Iterator[Callable[[int], list[Engine]]]:
    """Engines as each relay container builds its own: one pooled connection, READ COMMITTED."""
    made: list[Engine] = []

    def make(count: int) -> list[Engine]:
        new = [make_engine(db.url.render_as_string(hide_password=False)) for _ in range(count)]
        made.extend(new)
        return new

    yield make
    for engine in made:
        engine.dispose()


class MarkSentStatements:
    """Counts the UPDATEs that set a row's status (mark sent; mark failed, which no row here needs)."""

    def __init__(self, engine: Engine) -> None:
        self.count = 0
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("UPDATE message_record SET status"):
            self.count += 1


class SlowPublisher:
    """Accepts everything after a pause, noting the most requests it ever had in flight."""

    def __init__(self, pause: float) -> None:
        self._pause = pause
        self._lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0

    def publish(self, messages: Sequence[OutboxMessage]) -> PublishOutcome:
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            time.sleep(self._pause)
            return PublishOutcome(published=[m.message_id for m in messages])
        finally:
            with self._lock:
                self.in_flight -= 1


def test_concurrent_requests_with_per_entry_failures_through_sns(system: LocalSystem, db: Engine) -> None:
    # Given 120 due rows, and SNS failing six chosen entries spread over different requests
    ids = insert_backlog(db, 120)
    failing = {ids[i] for i in (3, 17, 25, 44, 78, 119)}
    injector = FaultInjector(seed=1)
    injector.add(
        FailEntries(select=lambda _i, entry: entry_message_id(entry) in failing), "sns", "publish_batch"
    )
    topic_arn = system.resources.refs["OrderEventsTopic"]
    engine = make_engine(db.url.render_as_string(hide_password=False))
    marks = MarkSentStatements(engine)
    published: list[str] = []
    with injector.installed():
        publisher = RecordingPublisher(
            SnsPublisher(AwsClients().factory("sns", timeouts.SNS_RELAY, max_pool_connections=4), topic_arn),
            published,
            threading.Lock(),
        )
        relay = concurrent_relay(engine, publisher)

        # When one relay with claims of 40 and four requests in flight drains them
        report = relay.relay_due_messages()
    engine.dispose()

    # Then the failed entries wait for their retry, each with its error, and every other row is sent
    rows = {r["message_id"]: r for r in system.outbox_rows()}
    for message_id in failing:
        assert rows[message_id]["status"] == 0
        assert rows[message_id]["retry_count"] == 1
        assert "injected entry failure" in rows[message_id]["last_error"]
    assert statuses(db) == Counter({1: 114, 0: 6})
    assert sorted(published) == sorted(set(ids) - failing)
    assert (report.claimed, report.published, report.retried) == (120, 114, 6)
    # And each claim was marked sent in one statement: three claims, three statements
    assert marks.count == 3 == report.claims
    # And the queues received each published envelope once
    points = receive_all(system.resources.queue_url("PointsQueue"))
    sms = receive_all(system.resources.queue_url("SmsQueue"))
    delivered = Counter(json.loads(m["Body"])["messageId"] for m in points + sms)
    assert set(delivered) == set(ids) - failing
    assert max(delivered.values()) == 1


def test_several_relays_each_with_requests_in_flight_publish_every_row_once(
    db: Engine, engines: Callable[[int], list[Engine]]
) -> None:
    # Given a backlog of 900 rows and three relays, each with four requests in flight
    ids = insert_backlog(db, 900)
    published: list[str] = []
    lock = threading.Lock()
    slow = SlowPublisher(pause=0.005)
    relays = [
        concurrent_relay(engine, RecordingPublisher(slow, published, lock), claim_size=30)
        for engine in engines(3)
    ]
    # When they drain it at the same time
    reports = run_relays_together(relays)
    # Then every row was published exactly once and is marked sent
    counts = Counter(published)
    assert set(counts) == set(ids) and max(counts.values()) == 1
    assert statuses(db) == Counter({1: 900})
    assert sum(r.published for r in reports) == 900
    # And requests really were in flight together
    assert slow.most_in_flight > 1


def test_with_ordered_delivery_a_keys_messages_are_never_in_flight_together(
    db: Engine, engines: Callable[[int], list[Engine]]
) -> None:
    # Given 30 business keys with four rows each, committed in order
    from payment_outbox.domain.envelope import BUSINESS_TYPE_ORDER_PAID, TOPIC_POINTS, Envelope
    from payment_outbox.domain.outbox import pending_message

    now = SystemClock().now()
    rows = [
        pending_message(
            Envelope(
                message_id=f"k{key:02d}-{seq}",
                topic=TOPIC_POINTS,
                business_key=f"PO-{key:02d}",
                business_type=BUSINESS_TYPE_ORDER_PAID,
                occurred_at=now,
                payload={"seq": seq},
            ),
            now=now,
            due_at=now - timedelta(minutes=1),
        )
        for seq in range(4)
        for key in range(30)
    ]
    with SqlUnitOfWork(make_session_factory(db)) as tx:
        tx.outbox.add_all(rows)
        tx.commit()

    class Watching:
        """Fails the test's assertion state if two of a key's rows are ever in flight at once."""

        def __init__(self) -> None:
            self.lock = threading.Lock()
            self.in_flight: Counter[str] = Counter()
            self.overlaps = 0
            self.order: dict[str, list[str]] = defaultdict(list)

        def publish(self, messages: Sequence[OutboxMessage]) -> PublishOutcome:
            keys = [m.business_key or "" for m in messages]
            with self.lock:
                self.overlaps += sum(1 for k in keys if self.in_flight[k])
                self.in_flight.update(keys)
            time.sleep(0.003)
            with self.lock:
                self.in_flight.subtract(keys)
                for message in messages:
                    self.order[message.business_key or ""].append(message.message_id)
            return PublishOutcome(published=[m.message_id for m in messages])

    watching = Watching()
    (engine,) = engines(1)
    relay = concurrent_relay(engine, watching, claim_size=60, ordered_by_key=True)
    # When an ordered relay with four requests in flight drains them, run after run
    for _ in range(10):
        relay.relay_due_messages()
    # Then no key ever had two rows in flight, and each key's rows went out in their order
    assert statuses(db) == Counter({1: 120})
    assert watching.overlaps == 0
    for key in range(30):
        assert watching.order[f"PO-{key:02d}"] == [f"k{key:02d}-{seq}" for seq in range(4)]


class ThreadLauncher:
    """Fan-out as Lambda would run it, in threads: each launch is one more relay run on its own
    connection, draining until the starter's deadline."""

    def __init__(self, build: Callable[[], OutboxRelay]) -> None:
        self._build = build
        self.launches: list[int] = []
        self.threads: list[threading.Thread] = []
        self.reports: list[Any] = []

    def launch(self, count: int, *, seconds_left: float) -> int:
        self.launches.append(count)
        deadline = time.monotonic() + seconds_left
        for _ in range(count):
            relay = self._build()

            def run(relay: OutboxRelay = relay) -> None:
                self.reports.append(
                    relay.relay_due_messages(lambda: int((deadline - time.monotonic()) * 1000))
                )

            thread = threading.Thread(target=run)
            thread.start()
            self.threads.append(thread)
        return count


def test_fan_out_is_bounded_by_the_concurrency_limit_and_stops_with_the_backlog(
    db: Engine, engines: Callable[[int], list[Engine]]
) -> None:
    # Given a backlog of 1,200 rows and relays that publish a claim of 20 in 50 ms, one request at
    # a time (at most 400 rows a second each), deciding on fan-out after 0.2 s of draining
    ids = insert_backlog(db, 1_200)
    published: list[str] = []
    lock = threading.Lock()
    pool = iter(engines(4))

    def build() -> OutboxRelay:
        publisher = RecordingPublisher(SlowPublisher(pause=0.05), published, lock)
        return concurrent_relay(next(pool), publisher, claim_size=20, max_in_flight=1)

    launcher = ThreadLauncher(build)
    scheduled = build()
    # When the scheduled run, with 1 s left beyond its margin (400 rows at most), may fan out to 3
    report = scheduled.relay_due_messages(
        lambda: 1_000 + SAFETY_MARGIN_MS, fan_out=FanOut(launcher, 3, after_seconds=0.2)
    )
    for thread in launcher.threads:
        thread.join(timeout=60)
    # Then it started the most it may: two more relays (three at once), once
    assert launcher.launches == [2] and report.relays_started == 2
    # And all of them together published every row once
    counts = Counter(published)
    assert set(counts) == set(ids) and max(counts.values()) == 1
    assert statuses(db) == Counter({1: 1_200})

    # When the next scheduled run finds a backlog one run can drain
    more = insert_backlog(db, 40)
    calm = build()
    calm_report = calm.relay_due_messages(
        lambda: 1_000 + SAFETY_MARGIN_MS, fan_out=FanOut(launcher, 3, after_seconds=0.2)
    )
    # Then it starts no relay and drains it alone
    assert launcher.launches == [2] and calm_report.relays_started == 0
    assert set(more) <= set(published) and statuses(db) == Counter({1: 1_240})
