"""Nothing lost, nothing doubled: one fault at a time, at every step of a paid order's way, on MariaDB and
moto through the real handlers. After each fault heals and the system drains, every paid order has
exactly two outbox rows, both sent; one ledger entry and its points on the balance; one SMS delivery
record and one SMS sent; and the queues (and, unless the case expects it, the dead-letter queues) are
empty.

Faults are injected where AWS or the network would inject them: the boto3 clients the adapters use
(``payment_outbox_dev.local.faults``) and a TCP proxy between the application and MariaDB
(``tests.faults``). The cases already covered elsewhere are listed in docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import boto3
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from payment_outbox import timeouts
from payment_outbox.adapters.db.engine import make_engine, make_session_factory
from payment_outbox.adapters.db.repositories import SqlOutboxRepository
from payment_outbox.adapters.db.unit_of_work import SqlUnitOfWork
from payment_outbox.adapters.sns_publisher import SnsPublisher
from payment_outbox.domain.backoff import RetryPolicy
from payment_outbox.domain.envelope import BUSINESS_TYPE_ORDER_PAID, TOPIC_POINTS, TOPIC_SMS, Envelope
from payment_outbox.domain.orders import Order, OrderStatus
from payment_outbox.domain.outbox import OutboxMessage, order_paid_envelopes, pending_message
from payment_outbox.ports import PointsCredit, PublishOutcome
from payment_outbox.services.points import credit_points
from payment_outbox.services.relay import OutboxRelay
from payment_outbox_dev.local.faults import (
    Call,
    FailCall,
    FailEntries,
    FaultInjector,
    Kill,
    LateAnswer,
    LoseResponse,
    ProcessKilled,
    RunFirst,
    entry_message_id,
)
from payment_outbox_dev.local.harness import ACCOUNT, REGION
from tests.faults import TcpProxy
from tests.support import LocalSystem, floor_points, utc_now

pytestmark = pytest.mark.integration

PAYMENT_API = "PaymentApiFunction"
RELAY = "OutboxRelayFunction"
WORK_QUEUES = ("PointsQueue", "SmsQueue")
DEAD_LETTER_QUEUES = ("PointsDeadLetterQueue", "SmsDeadLetterQueue")


# --- helpers ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Paid:
    order_id: int
    order_no: str
    user_id: int
    amount: str


def new_orders(system: LocalSystem, amounts: Sequence[str], user_id: int = 42) -> list[dict[str, Any]]:
    return [system.create_order(amount=amount, user_id=user_id) for amount in amounts]


def paid(order: dict[str, Any], user_id: int = 42) -> Paid:
    return Paid(order["orderId"], order["orderNo"], user_id, order["amount"])


def pay_all(system: LocalSystem, orders: Sequence[dict[str, Any]], user_id: int = 42) -> list[Paid]:
    for order in orders:
        response = system.pay(order, transaction_id=f"txn-{order['orderNo']}")
        assert response.status == 200, response.body
    return [paid(o, user_id) for o in orders]


def make_pending_due(system: LocalSystem) -> None:
    """Stands in for waiting: every pending row's retry time (or lease) has come."""
    with system.engine.begin() as conn:
        conn.execute(
            text("UPDATE message_record SET next_retry_at = :due WHERE status = 0"),
            {"due": utc_now() - timedelta(seconds=1)},
        )


def expire_in_progress_locks(system: LocalSystem) -> int:
    """Stands in for waiting until an idempotency record's in-progress lock (the consumer's remaining
    Lambda time when it started) has passed."""
    dynamodb, table = boto3.client("dynamodb"), system.resources.refs["IdempotencyTable"]
    past = str(int(time.time() * 1000) - 1000)
    expired = 0
    for item in dynamodb.scan(TableName=table)["Items"]:
        if item.get("status", {}).get("S") == "INPROGRESS":
            dynamodb.update_item(
                TableName=table,
                Key={"id": item["id"]},
                UpdateExpression="SET in_progress_expiration = :past",
                ExpressionAttributeValues={":past": {"N": past}},
            )
            expired += 1
    return expired


def pending_rows(system: LocalSystem) -> int:
    return sum(1 for r in system.outbox_rows() if r["status"] == 0)


def heal_and_drain(system: LocalSystem, rounds: int = 12) -> None:
    """Relay until nothing is due and consume until the queues are empty, letting time pass between
    rounds (due times, in-progress locks)."""
    for _ in range(rounds):
        make_pending_due(system)
        expire_in_progress_locks(system)
        system.run_relay()
        system.drain_consumers()
        if pending_rows(system) == 0 and all(system.queue_depth(q) == 0 for q in WORK_QUEUES):
            return
    pytest.fail("the system did not drain")


def sms_sent_texts() -> list[str]:
    from moto.sns.models import sns_backends

    return [message for _phone, message, *_ in sns_backends[ACCOUNT][REGION].sms_messages.values()]


def order_status(system: LocalSystem, order_id: int) -> str:
    with system.engine.connect() as conn:
        status = conn.execute(text("SELECT status FROM orders WHERE id = :id"), {"id": order_id})
        return str(status.scalar_one())


def assert_each_paid_order_applied_once(
    system: LocalSystem, orders: Sequence[Paid], *, dead_letters: dict[str, int] | None = None
) -> None:
    """The invariants of this suite, for every order given."""
    rows_by_order: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in system.outbox_rows():
        rows_by_order[row["business_key"]].append(row)
    deliveries = Counter(item["messageId"]["S"] for item in system.sms_deliveries())
    texts = sms_sent_texts()
    for order in orders:
        # the order is PAID and has exactly its two rows, both sent
        assert order_status(system, order.order_id) == OrderStatus.PAID.value, order
        rows = rows_by_order[order.order_no]
        assert sorted(r["topic"] for r in rows) == [TOPIC_POINTS, TOPIC_SMS], order
        assert [r["status"] for r in rows] == [1, 1], (order, rows)
        by_topic = {r["topic"]: r["message_id"] for r in rows}
        # one ledger entry for the order, and it is the points row's message
        entries = [
            e for e in system.ledger_entries(order.user_id) if int(e["orderId"]["N"]) == order.order_id
        ]
        assert [e["messageId"]["S"] for e in entries] == [by_topic[TOPIC_POINTS]], order
        assert int(entries[0]["points"]["N"]) == floor_points(order.amount)
        # one SMS delivery record for the SMS row, and one SMS actually sent for the order
        assert deliveries[by_topic[TOPIC_SMS]] == 1, order
        assert sum(1 for t in texts if order.order_no in t) == 1, order
    # each user's balance is the sum of the whole yuan of their orders, nothing more
    totals: dict[int, int] = defaultdict(int)
    for order in orders:
        totals[order.user_id] += floor_points(order.amount)
    for user_id, total in totals.items():
        assert system.points_balance(user_id) == total, user_id
    # and nothing is left on the queues; dead letters only where the case expects them
    for queue in WORK_QUEUES:
        assert system.queue_depth(queue) == 0, queue
    for queue in DEAD_LETTER_QUEUES:
        assert system.queue_depth(queue) == (dead_letters or {}).get(queue, 0), queue


class Publishes:
    """Counts, per outbox message id, the entries SNS accepted (whichever path published them)."""

    def __init__(self, injector: FaultInjector) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        injector.observe(self)

    def __call__(self, call: Call, response: Any) -> None:
        if call.operation != "publish_batch":
            return
        by_entry = {e["Id"]: entry_message_id(e) for e in call.entries}
        with self._lock:
            for ok in response.get("Successful", []):
                self.counts[by_entry[ok["Id"]]] += 1


@pytest.fixture
def faults(system: LocalSystem) -> Iterator[FaultInjector]:
    """Every AWS client the application builds goes through this injector for the test."""
    injector = FaultInjector(seed=7)
    with injector.installed():
        yield injector


def on(function: str) -> Callable[[Call], bool]:
    return lambda call: call.function == function


def for_message(message_id: str) -> Callable[[Call], bool]:
    return lambda call: call.subject == message_id


def points_message_ids(system: LocalSystem) -> list[str]:
    return [r["message_id"] for r in system.outbox_rows() if r["topic"] == TOPIC_POINTS]


# --- 1. crash after the payment commit, before the after-commit publish --------------------------------


def test_crashes_after_commit_before_the_after_commit_publish_leave_every_order_to_the_relay(
    system: LocalSystem, faults: FaultInjector
) -> None:
    # Given five orders, and the payment function dying right after its commit for three of them
    faults.add(
        Kill(kind="killed before after-commit publish"), "sns", "publish_batch", when=on(PAYMENT_API), times=3
    )
    orders = new_orders(system, ["10.00", "20.50", "30.99", "40.01", "50.00"])

    # When each callback is processed, and the provider retries the ones that got no answer
    killed = 0
    for order in orders:
        try:
            system.pay(order, transaction_id=f"txn-{order['orderNo']}")
        except ProcessKilled:
            killed += 1
            assert system.pay(order, transaction_id=f"txn-{order['orderNo']}").status == 200

    # Then the three killed payments left their rows pending, untried, for the relay
    assert killed == 3
    untried = [r for r in system.outbox_rows() if r["status"] == 0]
    assert len(untried) == 6
    assert {(r["retry_count"], r["last_error"]) for r in untried} == {(0, None)}
    # And a retried callback wrote nothing more
    assert system.count("message_record") == 10

    # When time passes and the system drains
    heal_and_drain(system)

    # Then every order is applied exactly once
    assert_each_paid_order_applied_once(system, [paid(o) for o in orders])


# --- 3. a scheduled relay run overlapping the after-commit publish ------------------------------------


def test_a_relay_run_overlapping_a_slow_after_commit_publish_publishes_twice_and_applies_once(
    system: LocalSystem, faults: FaultInjector
) -> None:
    # Given an after-commit publish that stalls past its lease, so that a scheduled relay run takes
    # the same rows and publishes them while it waits
    relay_results: list[dict[str, Any]] = []

    def scheduled_run_meanwhile(call: Call) -> None:
        with system.engine.begin() as conn:
            for message_id in call.message_ids:
                conn.execute(
                    text("UPDATE message_record SET next_retry_at = :due WHERE message_id = :id"),
                    {"due": utc_now() - timedelta(seconds=1), "id": message_id},
                )
        worker = threading.Thread(target=lambda: relay_results.append(system.run_relay()))
        worker.start()
        worker.join(timeout=30)

    faults.add(
        RunFirst(scheduled_run_meanwhile, kind="relay overlapping after-commit publish"),
        "sns",
        "publish_batch",
        when=on(PAYMENT_API),
    )
    publishes = Publishes(faults)
    orders = new_orders(system, ["12.00", "34.50", "56.70"])

    # When the orders are paid
    pay_all(system, orders)

    # Then for each order the relay run published both rows, and so did the after-commit publish after it
    assert [r["published"] for r in relay_results] == [2, 2, 2]
    assert set(publishes.counts.values()) == {2}
    assert len(publishes.counts) == 6
    # And the rows are sent once in the table: the second "mark sent" changed nothing
    assert [r["status"] for r in system.outbox_rows()] == [1] * 6

    # When the consumers drain both copies of every message
    assert system.drain("PointsQueue", "PointsConsumerFunction") == 6
    assert system.drain("SmsQueue", "SmsConsumerFunction") == 6

    # Then every order is applied exactly once
    assert_each_paid_order_applied_once(system, [paid(o) for o in orders])


class AheadClock:
    """A relay container whose view of time is past every after-commit lease."""

    def __init__(self, ahead: timedelta) -> None:
        self._ahead = ahead

    def now(self) -> datetime:
        return utc_now() + self._ahead


def test_a_relay_running_throughout_the_callbacks_takes_rows_from_under_the_after_commit_publish(
    system: LocalSystem, faults: FaultInjector, db: Engine
) -> None:
    # Given a relay container looping in its own thread, on its own connection, for which every row is
    # due at once (its clock is past the after-commit lease): it races each after-commit publish for the rows
    publishes = Publishes(faults)
    engine = make_engine(db.url.render_as_string(hide_password=False))
    sessions = make_session_factory(engine)
    from payment_outbox.adapters import aws

    client = aws.new_client(
        "sns", budget=timeouts.SNS_RELAY
    )  # wrapped by the injector, so its publishes are counted too
    relay = OutboxRelay(
        lambda: SqlUnitOfWork(sessions),
        SnsPublisher(lambda: client, system.resources.refs["OrderEventsTopic"]),
        AheadClock(timedelta(minutes=5)),
        policy=RetryPolicy(),
        claim_size=10,
    )
    stop = threading.Event()
    claimed: list[int] = []
    errors: list[BaseException] = []

    def loop() -> None:
        try:
            while not stop.is_set():
                claimed.append(relay.relay_due_messages().claimed)
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=loop)
    worker.start()

    # When twenty orders are paid meanwhile, each with its after-commit publish
    try:
        orders = new_orders(system, [f"{n}.{n:02d}" for n in range(1, 21)])
        pay_all(system, orders)
    finally:
        stop.set()
        worker.join(timeout=30)
        engine.dispose()

    # Then the looping relay really took rows, and every row was published at least once
    assert not errors
    assert sum(claimed) > 0
    assert len(publishes.counts) == 40
    # When the system drains
    heal_and_drain(system)

    # Then, however many times a message was published, every order is applied exactly once
    assert_each_paid_order_applied_once(system, [paid(o) for o in orders])


# --- 4. SNS throttling, errors and partly failed batches, then healing ------------------------------

SNS_FAULTS = {
    "throttling": FailCall("Throttling", 400, "Rate exceeded"),
    "throttled-exception": FailCall("ThrottledException", 400, "Rate exceeded"),
    "internal-error": FailCall("InternalError", 500),
    "kms-unavailable": FailCall("KMSThrottling", 400),
    "partial-batch": FailEntries(),
}


@pytest.mark.parametrize("fault", list(SNS_FAULTS))
def test_sns_faults_on_every_path_heal_into_one_delivery(
    system: LocalSystem, faults: FaultInjector, fault: str
) -> None:
    # Given SNS answering every PublishBatch with the fault, from the payment API and the relay alike
    rule = faults.add(SNS_FAULTS[fault], "sns", "publish_batch", kind=fault)
    publishes = Publishes(faults)
    orders = new_orders(system, ["11.11", "22.22", "33.33", "44.44"])

    # When the orders are paid and the relay runs once while the fault lasts
    pay_all(system, orders)
    make_pending_due(system)
    during = system.run_relay()

    # Then the fault was met on both paths, and the rows it hit wait: a refused entry charged an
    # attempt on each path, a whole request refused (throttling, a server error: an outage) none
    assert rule.injected >= len(orders) + 1
    assert during["failed"] == []
    waiting = [r for r in system.outbox_rows() if r["status"] == 0]
    assert waiting
    charged = 2 if fault == "partial-batch" else 0
    assert all(r["retry_count"] == charged and r["last_error"] for r in waiting)
    if fault == "partial-batch":
        # only the failed entries wait; the others of the same batches went out
        assert 0 < len(waiting) < 8
        assert sum(publishes.counts.values()) == 8 - len(waiting)
    else:
        assert len(waiting) == 8
        assert not publishes.counts

    # When SNS heals and the system drains
    faults.heal()
    heal_and_drain(system)

    # Then every message was published exactly once, and every order applied exactly once
    assert len(publishes.counts) == 8
    assert set(publishes.counts.values()) == {1}
    retried = {r["message_id"] for r in waiting}
    assert all(r["retry_count"] == charged for r in system.outbox_rows() if r["message_id"] in retried)
    assert_each_paid_order_applied_once(system, [paid(o) for o in orders])


# --- 5. SNS down for more relay runs than the attempts allowed -------------------------------------


def test_sns_down_for_more_runs_than_the_attempts_allowed_charges_nothing_and_delivers_everything_once(
    system: LocalSystem, faults: FaultInjector
) -> None:
    # Given SNS refusing every whole request (503, an outage), and the attempts the template allows
    max_attempts = int(system.resources.parameters["OutboxMaxAttempts"])
    outage = faults.add(FailCall("ServiceUnavailable", 503, "Service Unavailable"), "sns", "publish_batch")
    orders = new_orders(system, ["5.00", "6.60", "7.70"])

    # When the orders are paid (the after-commit publish fails) and the relay fails on twice as many runs
    # as a message has attempts
    pay_all(system, orders)
    for _ in range(2 * max_attempts):
        make_pending_due(system)
        report = system.run_relay()
        assert (report["published"], report["retried"], report["failed"]) == (0, 6, [])

    # Then every row is still pending with no attempt charged, the outage its last error
    assert {(r["status"], r["retry_count"]) for r in system.outbox_rows()} == {(0, 0)}
    assert all("ServiceUnavailable" in r["last_error"] for r in system.outbox_rows())
    assert outage.injected == len(orders) + 2 * max_attempts

    # When SNS is back and the relay runs
    faults.heal()
    make_pending_due(system)
    assert system.run_relay()["published"] == 6
    system.drain_consumers()

    # Then everything was delivered once, nothing FAILED
    assert {(r["status"], r["retry_count"], r["last_error"]) for r in system.outbox_rows()} == {(1, 0, None)}
    assert_each_paid_order_applied_once(system, [paid(o) for o in orders])


def test_sns_throttling_the_whole_request_charges_no_attempt_but_a_refused_entry_does(
    system: LocalSystem, faults: FaultInjector
) -> None:
    # Given a paid order, and SNS throttling every whole request
    throttled = faults.add(FailCall("Throttling", 400, "Rate exceeded"), "sns", "publish_batch")
    orders = new_orders(system, ["8.80"])
    pay_all(system, orders)
    make_pending_due(system)
    system.run_relay()
    # Then no attempt was charged to its rows
    assert throttled.injected == 2
    assert {(r["status"], r["retry_count"]) for r in system.outbox_rows()} == {(0, 0)}

    # When SNS answers the request but refuses one entry for itself
    throttled.times = throttled.injected
    first = system.outbox_rows()[0]["message_id"]
    faults.add(FailEntries(select=lambda _i, entry: entry_message_id(entry) == first), "sns", "publish_batch")
    make_pending_due(system)
    system.run_relay()
    # Then that refusal is charged to that message alone
    charged = {r["message_id"]: r["retry_count"] for r in system.outbox_rows() if r["status"] == 0}
    assert charged == {first: 1}


# --- 6. a consumer failing mid-batch; a consumer dying with its idempotency record INPROGRESS -------


def test_one_record_failing_mid_batch_is_retried_alone_and_credited_once(
    system: LocalSystem, faults: FaultInjector
) -> None:
    # Given five paid orders whose points messages wait on the queue, and the ledger failing for the third
    orders = pay_all(system, new_orders(system, ["1.50", "2.50", "3.50", "4.50", "5.50"]))
    victim = points_message_ids(system)[2]
    faults.add(
        FailCall("InternalServerError", 500),
        "dynamodb",
        "transact_write_items",
        when=for_message(victim),
        times=1,
        kind="ledger failed for one record",
    )

    # When the consumer gets the batch
    first = system.functions.deliver(system.resources.queue_url("PointsQueue"), "PointsConsumerFunction")

    # Then only that record is reported failed; the four others are credited
    assert first.received == 5
    [failed_id] = first.failed_ids
    [failed_message] = [m for m in first.messages if m["MessageId"] == failed_id]
    assert json.loads(failed_message["Body"])["messageId"] == victim
    assert system.points_balance(42) == 1 + 2 + 4 + 5

    # When it is delivered again
    heal_and_drain(system)

    # Then it is credited, once
    assert_each_paid_order_applied_once(system, orders)


def test_a_consumer_dying_mid_batch_leaves_its_record_in_progress_until_the_lock_expires(
    system: LocalSystem, faults: FaultInjector
) -> None:
    # Given three paid orders whose points messages wait on the queue, and a consumer that dies right
    # after the ledger took the second credit, before the idempotency record says COMPLETED
    orders = pay_all(system, new_orders(system, ["10.00", "20.00", "30.00"]))
    victim = points_message_ids(system)[1]
    faults.add(
        Kill(after=True, kind="consumer killed after its effect"),
        "dynamodb",
        "transact_write_items",
        when=for_message(victim),
        times=1,
    )
    url = system.resources.queue_url("PointsQueue")
    dynamodb, table = boto3.client("dynamodb"), system.resources.refs["IdempotencyTable"]

    # When the consumer gets the batch and dies (nothing is deleted: the poller got no answer)
    with pytest.raises(ProcessKilled):
        system.functions.deliver(url, "PointsConsumerFunction", visibility_timeout=0)

    # Then the credit is applied, and its idempotency record is stuck INPROGRESS with a lock in the future
    assert system.points_balance(42) == 30
    statuses = Counter(i["status"]["S"] for i in dynamodb.scan(TableName=table)["Items"])
    assert statuses == Counter({"COMPLETED": 1, "INPROGRESS": 1})
    [stuck] = [i for i in dynamodb.scan(TableName=table)["Items"] if i["status"]["S"] == "INPROGRESS"]
    assert int(stuck["in_progress_expiration"]["N"]) > time.time() * 1000

    # When the batch is delivered again while the lock holds
    again = system.functions.deliver(url, "PointsConsumerFunction", visibility_timeout=0)

    # Then the stuck record fails (in progress) and the others complete, without crediting twice
    assert (again.received, again.failed) == (3, 1)
    assert system.points_balance(42) == 60

    # When the lock has expired and the record comes back
    assert expire_in_progress_locks(system) == 1
    last = system.functions.deliver(url, "PointsConsumerFunction", visibility_timeout=0)

    # Then it succeeds without crediting again (the ledger holds its entry), and everything is once
    assert (last.received, last.failed) == (1, 0)
    system.drain("SmsQueue", "SmsConsumerFunction")
    assert_each_paid_order_applied_once(system, orders)


# --- 7. DynamoDB errors in the consumers ------------------------------------------------------------


def _table(logical_id: str) -> Callable[[LocalSystem], Callable[[Call], bool]]:
    return lambda system: lambda call: call.table == system.resources.refs[logical_id]


DYNAMODB_FAULTS: dict[str, tuple[FailCall, str, Callable[[LocalSystem], Callable[[Call], bool]]]] = {
    "ledger-throttled": (FailCall("ThrottlingException", 400), "transact_write_items", _table("PointsTable")),
    "ledger-internal-error": (
        FailCall("InternalServerError", 500),
        "transact_write_items",
        _table("PointsTable"),
    ),
    "idempotency-put-throttled": (
        FailCall("ProvisionedThroughputExceededException", 400),
        "put_item",
        _table("IdempotencyTable"),
    ),
    "idempotency-completion-lost": (
        FailCall("InternalServerError", 500),
        "update_item",
        _table("IdempotencyTable"),
    ),
    # The SMS intent (SENDING) not written: nothing was sent, the record is retried.
    "sms-intent-write-failed": (
        FailCall("InternalServerError", 500),
        "put_item",
        _table("SmsDeliveriesTable"),
    ),
}


@pytest.mark.parametrize("fault", list(DYNAMODB_FAULTS))
def test_dynamodb_errors_fail_the_record_which_is_redelivered_and_applied_once(
    system: LocalSystem, faults: FaultInjector, fault: str
) -> None:
    # Given two paid orders whose messages wait on the queues, and DynamoDB failing the first three calls
    # of one kind the consumers make
    orders = pay_all(system, new_orders(system, ["99.99", "0.99"]))
    failure, operation, where = DYNAMODB_FAULTS[fault]
    rule = faults.add(failure, "dynamodb", operation, when=where(system), times=3, kind=fault)

    # When each consumer gets its batch once
    first = [
        system.functions.deliver(system.resources.queue_url(q), f, handler_errors_fail_batch=True)
        for q, f in (("PointsQueue", "PointsConsumerFunction"), ("SmsQueue", "SmsConsumerFunction"))
    ]

    # Then the records the fault hit are reported failed, not lost and not half-applied
    assert rule.injected >= 1
    assert sum(d.failed for d in first) >= 1

    # When they are delivered again (after any in-progress lock they left has expired)
    heal_and_drain(system)

    # Then every order is applied exactly once
    assert_each_paid_order_applied_once(system, orders)


# --- 8. the database connection dropping mid-transaction and mid-claim ------------------------------


@pytest.fixture
def proxy(system: LocalSystem, monkeypatch: pytest.MonkeyPatch) -> Iterator[TcpProxy]:
    """Every function (and the test process) reaches MariaDB through a TCP proxy the test controls."""
    with TcpProxy() as tcp:
        url = tcp.url_for(system.engine.url.render_as_string(hide_password=False))
        for environment in system.functions.environments.values():
            monkeypatch.setitem(environment, "DATABASE_URL", url)
        monkeypatch.setenv("DATABASE_URL", url)
        system.functions.cold_start()  # the functions' next containers connect through the proxy
        yield tcp
        system.functions.cold_start()


def test_connection_cut_inside_the_payment_transaction_writes_nothing_and_the_retry_writes_once(
    system: LocalSystem, proxy: TcpProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an unpaid order, and the network cutting the database connection right after the payment
    # transaction inserted its outbox rows, before it commits
    [order] = new_orders(system, ["128.50"])
    original_add_all = SqlOutboxRepository.add_all
    cuts: list[int] = []

    def add_all_then_cut(self: SqlOutboxRepository, messages: Sequence[OutboxMessage]) -> None:
        original_add_all(self, messages)
        if not cuts:
            cuts.append(proxy.cut())

    monkeypatch.setattr(SqlOutboxRepository, "add_all", add_all_then_cut)

    # When the callback is processed
    with pytest.raises(OperationalError):
        system.pay(order)

    # Then a live connection was cut mid-transaction, and nothing of the payment was written
    assert cuts[0] >= 1
    assert order_status(system, order["orderId"]) == OrderStatus.CREATED.value
    assert system.count("message_record") == 0
    assert system.queue_depth("PointsQueue") == system.queue_depth("SmsQueue") == 0

    # When the provider retries the callback (the pool notices the dead connection and reconnects)
    response = system.pay(order)

    # Then the retry pays the order and writes exactly two rows, published at once
    assert response.status == 200, response.body
    assert response.body["status"] == "PAID"
    assert [r["status"] for r in system.outbox_rows()] == [1, 1]
    assert proxy.forwarded >= 2
    heal_and_drain(system)
    assert_each_paid_order_applied_once(system, [paid(order)])


def test_connection_cut_during_the_relay_claim_loses_nothing_and_the_next_run_delivers_once(
    system: LocalSystem, proxy: TcpProxy, faults: FaultInjector, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given three paid orders whose rows wait for the relay (the after-commit publish failed)
    faults.add(FailCall("InternalError", 500), "sns", "publish_batch", when=on(PAYMENT_API))
    orders = pay_all(system, new_orders(system, ["3.00", "4.00", "5.00"]))
    make_pending_due(system)
    before = {r["message_id"]: r["next_retry_at"] for r in system.outbox_rows()}
    assert len(before) == 6
    # And the network cutting the relay's connection after its claim locked and leased the rows,
    # before the claim commits
    original_claim = SqlOutboxRepository.claim_due
    cuts: list[int] = []

    def claim_then_cut(self: SqlOutboxRepository, **kwargs: Any) -> list[OutboxMessage]:
        claimed = original_claim(self, **kwargs)
        if not cuts:
            cuts.append(proxy.cut())
        return claimed

    monkeypatch.setattr(SqlOutboxRepository, "claim_due", claim_then_cut)
    publishes = Publishes(faults)

    # When the relay runs
    with pytest.raises(OperationalError):
        system.run_relay()

    # Then the claim's transaction failed as a whole: nothing published, every row as it was, still due
    assert cuts[0] >= 1
    assert not publishes.counts
    assert {r["message_id"]: r["next_retry_at"] for r in system.outbox_rows()} == before
    assert {r["status"] for r in system.outbox_rows()} == {0}

    # When the database refuses new connections for a while, a relay run fails without touching anything
    proxy.refuse(True)
    with pytest.raises(OperationalError):
        system.run_relay()
    assert proxy.refused >= 1
    assert {r["message_id"]: r["next_retry_at"] for r in system.outbox_rows()} == before

    # When the network is back and the relay runs again
    proxy.refuse(False)
    report = system.run_relay()

    # Then it reconnects and delivers every row, once
    assert report["published"] == 6
    assert set(publishes.counts.values()) == {1}
    heal_and_drain(system)
    assert_each_paid_order_applied_once(system, orders)


# --- 9. a poison message and a row that can never publish block nobody ------------------------------


def test_a_poison_message_and_an_unpublishable_row_do_not_block_the_other_orders(
    system: LocalSystem, faults: FaultInjector
) -> None:
    # Given four paid orders whose rows wait for the relay (the after-commit publish failed), a row too large
    # for SNS due in the same batch, and a poison message on the points queue
    faults.add(FailCall("InternalError", 500), "sns", "publish_batch", when=on(PAYMENT_API))
    orders = pay_all(system, new_orders(system, ["8.00", "9.00", "10.00", "11.00"]))
    now = utc_now()
    too_large = Envelope(
        message_id=uuid.uuid4().hex,
        topic=TOPIC_POINTS,
        business_key="PO-TOO-LARGE",
        business_type=BUSINESS_TYPE_ORDER_PAID,
        occurred_at=now,
        payload={"userId": 9, "orderId": 9, "points": 1, "note": "x" * (257 * 1024)},
    )
    with SqlUnitOfWork(make_session_factory(system.engine)) as tx:
        tx.outbox.add_all([pending_message(too_large, now=now, due_at=now)])
        tx.commit()
    make_pending_due(system)
    sqs, points_url = boto3.client("sqs"), system.resources.queue_url("PointsQueue")
    sqs.send_message(QueueUrl=points_url, MessageBody="not an envelope")

    # When the relay runs once
    report = system.run_relay()

    # Then the large row is given up in that run, and the eight other rows of the same batch are sent
    assert report["failed"] == [too_large.message_id]
    assert (report["claimed"], report["published"]) == (9, 8)

    # When the consumers drain their queues (the poison fails on every receive)
    for _ in range(20):
        delivery = system.functions.deliver(
            points_url, "PointsConsumerFunction", visibility_timeout=0, handler_errors_fail_batch=True
        )
        if delivery.received == 0:
            break
    system.drain("SmsQueue", "SmsConsumerFunction")

    # Then the poison ended in the dead-letter queue, the large row FAILED, and every order was applied once
    [given_up] = [r for r in system.outbox_rows() if r["message_id"] == too_large.message_id]
    assert given_up["status"] == 2
    others = [r for r in system.outbox_rows() if r["message_id"] != too_large.message_id]
    assert {r["status"] for r in others} == {1}
    assert_each_paid_order_applied_once(system, orders, dead_letters={"PointsDeadLetterQueue": 1})


# --- 11. a backlog of due rows drained with no loss and no duplicate effect -------------------------

# The suite's sizes; `make backlog` runs both tests larger (the Makefile says how large).
BACKLOG_ROWS = int(os.environ.get("FAULT_BACKLOG_ROWS", "100000"))
MOTO_BACKLOG_ROWS = int(os.environ.get("FAULT_BACKLOG_MOTO_ROWS", "400"))
INSERT_CHUNK = 5_000


def bulk_insert(engine: Engine, rows: Sequence[dict[str, Any]]) -> None:
    """Plain multi-row INSERTs (executemany), a chunk per transaction."""
    statement = text(
        "INSERT INTO message_record (message_id, topic, content, status, retry_count, create_time,"
        " update_time, business_key, business_type, next_retry_at)"
        " VALUES (:message_id, :topic, :content, 0, 0, :now, :now, :business_key, :business_type, :due)"
    )
    for start in range(0, len(rows), INSERT_CHUNK):
        with engine.begin() as conn:
            conn.execute(statement, list(rows[start : start + INSERT_CHUNK]))


def row_of(envelope: Envelope, now: datetime) -> dict[str, Any]:
    return {
        "message_id": envelope.message_id,
        "topic": envelope.topic,
        "content": envelope.to_json(),
        "now": now,
        "business_key": envelope.business_key,
        "business_type": envelope.business_type,
        "due": now - timedelta(minutes=1),
    }


class MemoryLedger:
    """The DynamoDB ledger's layout in memory: ``(USER#id, CREDIT#messageId)`` entries written only if
    absent, with the balance in the same step."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], dict[str, Any]] = {}
        self.balances: Counter[int] = Counter()
        self._lock = threading.Lock()

    def credit(self, credit: PointsCredit) -> bool:
        key = (f"USER#{credit.user_id}", f"CREDIT#{credit.message_id}")
        with self._lock:
            if key in self.items:
                return False
            self.items[key] = {
                "messageId": credit.message_id,
                "orderId": credit.order_id,
                "points": credit.points,
            }
            self.balances[credit.user_id] += credit.points
        return True

    def balance(self, user_id: int) -> int:
        return self.balances[user_id]


class InProcessBus:
    """SNS + SQS in memory: records every message id published and queues the body for the consumer.
    Seeded faults: some entries fail, and some are published but answered as failed (so the relay
    publishes them again)."""

    def __init__(self, seed: int) -> None:
        import random

        self.published: Counter[str] = Counter()
        self.queue: list[str] = []
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def publish(self, messages: Sequence[OutboxMessage]) -> PublishOutcome:
        from payment_outbox.ports import PublishFailure

        outcome = PublishOutcome()
        with self._lock:
            for message in messages:
                roll = self._rng.random()
                if roll < 0.01:
                    outcome.failed[message.message_id] = PublishFailure("injected: entry failed")
                    continue
                self.published[message.message_id] += 1
                self.queue.append(message.content)
                if roll < 0.02:
                    outcome.failed[message.message_id] = PublishFailure("injected: answer lost")
                else:
                    outcome.published.append(message.message_id)
        return outcome


class SteppingClock:
    """The relays' clock: real time plus whatever the test has skipped ahead (to reach retry times)."""

    def __init__(self) -> None:
        self.skipped = timedelta()

    def now(self) -> datetime:
        return utc_now() + self.skipped


def unit_of_work_on(engine: Engine) -> Callable[[], SqlUnitOfWork]:
    sessions = make_session_factory(engine)
    return lambda: SqlUnitOfWork(sessions)


def run_into(relay: OutboxRelay, claimed: list[int]) -> None:
    claimed.append(relay.relay_due_messages().claimed)


def test_a_large_backlog_drains_with_no_loss_and_no_duplicate_effect(
    db: Engine, record_property: Callable[[str, object], None]
) -> None:
    # Given a backlog of due points rows (FAULT_BACKLOG_ROWS, 100,000 by default), inserted in bulk
    started = time.monotonic()
    now = utc_now()
    envelopes = [
        Envelope(
            message_id=uuid.uuid4().hex,
            topic=TOPIC_POINTS,
            business_key=f"PO{i:012d}",
            business_type=BUSINESS_TYPE_ORDER_PAID,
            occurred_at=now,
            payload={"userId": 1 + i % 997, "orderId": i + 1, "points": i % 50},
        )
        for i in range(BACKLOG_ROWS)
    ]
    bulk_insert(db, [row_of(e, now) for e in envelopes])
    inserted = time.monotonic()
    # And four relay containers with their own connections, publishing to an in-process bus that fails
    # ~1% of entries and loses the answer of another ~1%, and the real credit_points on a memory ledger
    bus, ledger, clock = InProcessBus(seed=11), MemoryLedger(), SteppingClock()
    engines = [make_engine(db.url.render_as_string(hide_password=False)) for _ in range(4)]
    relays = [
        OutboxRelay(unit_of_work_on(engine), bus, clock, policy=RetryPolicy(max_attempts=10), claim_size=200)
        for engine in engines
    ]

    # When the relays drain the backlog together, round after round, skipping ahead to each retry time,
    # and the consumer takes everything the bus received
    credited: Counter[str] = Counter()
    try:
        for _ in range(10):
            reports: list[int] = []
            threads = [threading.Thread(target=run_into, args=(relay, reports)) for relay in relays]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=600)
            while bus.queue:
                result = credit_points(Envelope.parse(bus.queue.pop()), ledger, clock)
                credited[result.message_id] += int(result.credited)
            if sum(reports) == 0:
                break
            clock.skipped += timedelta(minutes=10)
    finally:
        for engine in engines:
            engine.dispose()
    drained = time.monotonic()
    record_property("backlog_rows", BACKLOG_ROWS)
    record_property("insert_seconds", round(inserted - started, 1))
    record_property("drain_seconds", round(drained - inserted, 1))

    # Then every row is sent, none pending or failed
    with db.connect() as conn:
        counted = conn.execute(text("SELECT status, COUNT(*) FROM message_record GROUP BY status"))
        statuses = dict(counted.all())
    assert statuses == {1: BACKLOG_ROWS}
    # And every message was published at least once (some more than once), and credited exactly once
    ids = {e.message_id for e in envelopes}
    assert set(bus.published) == ids
    assert max(bus.published.values()) >= 2
    assert set(credited) == ids
    assert set(credited.values()) == {1}
    # And each user's balance is exactly the sum of their messages' points
    expected: Counter[int] = Counter()
    for e in envelopes:
        expected[e.payload["userId"]] += e.payload["points"]
    assert +ledger.balances == +expected


def test_a_backlog_drains_through_sns_and_sqs_with_every_effect_once(system: LocalSystem, db: Engine) -> None:
    # Given a backlog of due rows (FAULT_BACKLOG_MOTO_ROWS, 400 by default): the two messages of each of
    # half as many paid orders, inserted in bulk
    now = utc_now()
    orders = [
        Order(
            id=i + 1,
            order_no=f"PO{i:012d}",
            user_id=1 + i % 37,
            user_phone="+8613812345678",
            amount=Decimal(f"{1 + i % 300}.{i % 100:02d}"),
            currency="CNY",
            status=OrderStatus.PAID,
            created_at=now,
            updated_at=now,
            pay_time=now,
            payment_txn_id=f"txn-{i}",
        )
        for i in range(MOTO_BACKLOG_ROWS // 2)
    ]
    envelopes = [e for o in orders for e in order_paid_envelopes(o, now=now, new_id=lambda: uuid.uuid4().hex)]
    bulk_insert(db, [row_of(e, now) for e in envelopes])

    # When the relay function and the consumers run until nothing is left
    for _ in range(100):
        report = system.run_relay()
        system.drain("PointsQueue", "PointsConsumerFunction", rounds=MOTO_BACKLOG_ROWS)
        system.drain("SmsQueue", "SmsConsumerFunction", rounds=MOTO_BACKLOG_ROWS)
        if report["claimed"] == 0:
            break

    # Then every row is sent, every points message credited once and every SMS message delivered once
    assert {r["status"] for r in system.outbox_rows()} == {1}
    ledger = Counter()
    for user_id in {o.user_id for o in orders}:
        for entry in system.ledger_entries(user_id):
            ledger[entry["messageId"]["S"]] += 1
    points_ids = {e.message_id for e in envelopes if e.topic == TOPIC_POINTS}
    sms_ids = {e.message_id for e in envelopes if e.topic == TOPIC_SMS}
    assert set(ledger) == points_ids
    assert set(ledger.values()) == {1}
    deliveries = Counter(item["messageId"]["S"] for item in _scan_all(system, "SmsDeliveriesTable"))
    assert set(deliveries) == sms_ids
    assert len(sms_sent_texts()) == len(sms_ids)
    for user_id in {o.user_id for o in orders}:
        assert system.points_balance(user_id) == sum(int(o.amount) for o in orders if o.user_id == user_id)
    assert all(system.queue_depth(q) == 0 for q in WORK_QUEUES + DEAD_LETTER_QUEUES)


def _scan_all(system: LocalSystem, table: str) -> list[dict[str, Any]]:
    dynamodb = boto3.client("dynamodb")
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": system.resources.refs[table]}
    while True:
        page = dynamodb.scan(**kwargs)
        items.extend(page["Items"])
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


# --- 12. the SMS provider at the seam: a lost answer, a late answer, a consumer dying after the send ---


class SmsSends:
    """Counts the SMS the provider took, per order number (whichever delivery or operator sent it)."""

    def __init__(self, injector: FaultInjector) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        injector.observe(self)

    def __call__(self, call: Call, _response: Any) -> None:
        if call.operation == "publish" and "PhoneNumber" in call.params:
            with self._lock:
                self.counts[str(call.params["Message"]).split()[4].rstrip(":")] += 1


def sms_message_ids(system: LocalSystem) -> list[str]:
    return [r["message_id"] for r in system.outbox_rows() if r["topic"] == TOPIC_SMS]


def sms_states(system: LocalSystem) -> Counter[str]:
    return Counter(item.get("state", {}).get("S", "SENT") for item in system.sms_deliveries())


def decide(system: LocalSystem, message_id: str, action: str) -> dict[str, Any]:
    response = system.api(
        "POST", f"/admin/sms/{message_id}/{action}", json.dumps({"reason": "provider delivery log checked"})
    )
    assert response.status == 200, response.body
    body: dict[str, Any] = response.body
    return body


def _sent_record(system: LocalSystem) -> Callable[[Call], bool]:
    table = system.resources.refs["SmsDeliveriesTable"]
    return lambda call: call.table == table and call.params["Item"].get("state", {}).get("S") == "SENT"


#: fault, (service, operation), and which calls it hits (default: the SMS consumer's sends).
SMS_PROVIDER_FAULTS: dict[str, tuple[Callable[[], Any], tuple[str, str], Any]] = {
    "answer-lost": (lambda: LoseResponse(kind="SMS answer lost"), ("sns", "publish"), None),
    "answered-after-the-client-timeout": (LateAnswer, ("sns", "publish"), None),
    "consumer-killed-after-the-send": (
        lambda: Kill(after=True, kind="SMS consumer killed after the send"),
        ("sns", "publish"),
        None,
    ),
    # The provider answered, and the SENT record is what fails to be written.
    "sent-record-write-failed-after-the-send": (
        lambda: FailCall("InternalServerError", 500),
        ("dynamodb", "put_item"),
        _sent_record,
    ),
}


@pytest.mark.parametrize("fault", list(SMS_PROVIDER_FAULTS))
def test_an_sms_whose_send_went_unanswered_is_never_sent_twice(
    system: LocalSystem, faults: FaultInjector, fault: str
) -> None:
    # Given three paid orders, and an SMS provider that takes every SMS of the first delivery and whose
    # answer never reaches the consumer (lost, too late, or the consumer dies before reading it)
    orders = pay_all(system, new_orders(system, ["12.00", "30.50", "7.77"]))
    sends = SmsSends(faults)
    make, (service, operation), where = SMS_PROVIDER_FAULTS[fault]
    injected = make()
    # (a dying consumer takes the rest of its batch with it: one death, the first send)
    times = 1 if isinstance(injected, Kill) else 3
    when = on("SmsConsumerFunction") if where is None else where(system)
    rule = faults.add(injected, service, operation, when=when, times=times, kind=fault)
    url = system.resources.queue_url("SmsQueue")

    # When the SMS consumer gets its messages, and gets them again after every lock and lease passed
    with contextlib.suppress(ProcessKilled):  # a dead container settles nothing: all come back
        system.functions.deliver(
            url, "SmsConsumerFunction", visibility_timeout=0, handler_errors_fail_batch=True
        )
    if isinstance(injected, LateAnswer):
        injected.settle()
    faults.heal()
    heal_and_drain(system)

    # Then the provider took each order's SMS exactly once: no delivery sent one again blindly
    assert rule.injected >= 1
    assert {o.order_no: sends.counts[o.order_no] for o in orders} == {o.order_no: 1 for o in orders}
    # And the SMS whose answer never came are parked as uncertain, not SENT and not failed
    parked = [m for m in sms_message_ids(system) if _state_of(system, m) == "UNCERTAIN"]
    assert len(parked) == rule.injected
    assert sms_states(system)["UNCERTAIN"] == rule.injected

    # When the operator confirms their delivery from the provider's logs (admin API, audited)
    audits_before = marked_delivered_audits(system)
    for message_id in parked:
        assert decide(system, message_id, "mark-delivered")["action"] == "marked-delivered"

    # Then every order is applied exactly once, with one SMS each, and the decisions are audited
    assert_each_paid_order_applied_once(system, orders)
    assert sum(sends.counts.values()) == len(orders)
    assert marked_delivered_audits(system) - audits_before == len(parked)


def marked_delivered_audits(system: LocalSystem) -> int:
    with system.engine.connect() as conn:
        audited = conn.execute(
            text("SELECT COUNT(*) FROM outbox_audit WHERE action = :a"), {"a": "sms-marked-delivered"}
        )
        return int(audited.scalar_one())


def _state_of(system: LocalSystem, message_id: str) -> str:
    item = boto3.client("dynamodb").get_item(
        TableName=system.resources.refs["SmsDeliveriesTable"], Key={"messageId": {"S": message_id}}
    )["Item"]
    return str(item.get("state", {}).get("S", "SENT"))


def test_an_operator_resends_an_uncertain_sms_once_and_a_refusal_is_retried_as_before(
    system: LocalSystem, faults: FaultInjector
) -> None:
    # Given two paid orders: one SMS the provider refuses once (it answered no), one whose answer is lost
    first, second = pay_all(system, new_orders(system, ["5.00", "6.00"]))
    sends = SmsSends(faults)
    sms_of = {r["business_key"]: r["message_id"] for r in system.outbox_rows() if r["topic"] == TOPIC_SMS}

    def sms_for(order: Paid) -> Callable[[Call], bool]:
        return lambda call: (
            call.function == "SmsConsumerFunction" and order.order_no in call.params["Message"]
        )

    refusal = faults.add(FailCall("Throttling", 400), "sns", "publish", when=sms_for(first), times=1)
    loss = faults.add(LoseResponse(), "sns", "publish", when=sms_for(second), times=1)

    # When the consumer drains its queue
    heal_and_drain(system)

    # Then the refused SMS came back and was sent once (nothing had gone out); the lost one is parked
    assert refusal.injected == loss.injected == 1
    assert _state_of(system, sms_of[first.order_no]) == "SENT"
    assert _state_of(system, sms_of[second.order_no]) == "UNCERTAIN"
    assert (sends.counts[first.order_no], sends.counts[second.order_no]) == (1, 1)

    # When the operator finds the parked one was not delivered and resends it
    parked = sms_of[second.order_no]
    decision = decide(system, parked, "resend")

    # Then it is sent once more (the operator's choice), recorded SENT, and a second decision is refused
    assert decision["action"] == "resent" and decision["providerMessageId"]
    assert (sends.counts[first.order_no], sends.counts[second.order_no]) == (1, 2)
    assert _state_of(system, parked) == "SENT"
    again = system.api("POST", f"/admin/sms/{parked}/resend", json.dumps({"reason": "second try"}))
    assert again.status == 409, again.body
    assert again.body["error"]["code"] == "sms_not_uncertain"
