"""SqlOutboxRepository on the real MariaDB: which rows a relay claims, the lease that keeps other relays
away, FOR UPDATE SKIP LOCKED between concurrent transactions, per-key ordering, and status changes that
only ever touch pending rows."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from payment_outbox.adapters.db.engine import make_session_factory
from payment_outbox.adapters.db.unit_of_work import SqlUnitOfWork
from payment_outbox.domain.envelope import BUSINESS_TYPE_ORDER_PAID, TOPIC_POINTS, TOPIC_SMS, Envelope
from payment_outbox.domain.outbox import LAST_ERROR_MAX, OutboxMessage, OutboxStatus, pending_message
from payment_outbox.domain.tracing import TraceContext

pytestmark = pytest.mark.integration

#: A fixed "now": every test passes explicit times, so nothing depends on the wall clock or on sleeping.
T0 = datetime(2026, 11, 27, 10, 0, 0)
LEASE = timedelta(seconds=60)


@pytest.fixture
def sessions(db: Engine) -> sessionmaker[Session]:
    # The isolation level the application's engine uses (payment_outbox.adapters.db.engine.make_engine).
    return make_session_factory(db.execution_options(isolation_level="READ COMMITTED"))


@pytest.fixture
def other_connection(db: Engine) -> Iterator[sessionmaker[Session]]:
    """A second relay's connection. Its lock wait is cut to 1 s so that a claim that waits for a lock
    (instead of skipping it) fails fast with a lock-wait timeout rather than hanging the test."""
    engine = create_engine(
        db.url,
        isolation_level="READ COMMITTED",
        connect_args={"init_command": "SET SESSION innodb_lock_wait_timeout = 1"},
    )
    yield make_session_factory(engine)
    engine.dispose()


def message(
    *,
    due_at: datetime,
    business_key: str | None = None,
    status: OutboxStatus = OutboxStatus.PENDING,
    topic: str = TOPIC_POINTS,
) -> OutboxMessage:
    message_id = uuid.uuid4().hex
    envelope = Envelope(
        message_id=message_id,
        topic=topic,
        business_key=f"PO{message_id[:12]}" if business_key is None else business_key,
        business_type=BUSINESS_TYPE_ORDER_PAID,
        occurred_at=T0 - timedelta(hours=1),
        payload={"userId": 42, "orderId": 1, "points": 128},
    )
    row = pending_message(envelope, now=T0 - timedelta(hours=1), due_at=due_at)
    return row if status is OutboxStatus.PENDING else replace(row, status=status)


def store(sessions: sessionmaker[Session], *messages: OutboxMessage) -> list[OutboxMessage]:
    """Insert one message at a time so that ids follow argument order."""
    with SqlUnitOfWork(sessions) as tx:
        for m in messages:
            tx.outbox.add_all([m])
        tx.commit()
    return list(messages)


def claim(
    sessions: sessionmaker[Session], *, now: datetime, limit: int = 10, ordered_by_key: bool = False
) -> list[str]:
    with SqlUnitOfWork(sessions) as tx:
        claimed = tx.outbox.claim_due(
            now=now, limit=limit, lease_until=now + LEASE, ordered_by_key=ordered_by_key
        )
        tx.commit()
    return [m.message_id for m in claimed]


def get(sessions: sessionmaker[Session], message_id: str) -> OutboxMessage:
    with SqlUnitOfWork(sessions) as tx:
        found = tx.outbox.get(message_id)
    assert found is not None
    return found


# --- what is claimed -------------------------------------------------------------------------------


def test_claims_only_due_pending_rows_in_due_order_at_most_limit(sessions: sessionmaker[Session]) -> None:
    # Given due pending rows stored out of due order, one due exactly now, one due later,
    # and rows already sent or failed that are long past due
    due_2 = message(due_at=T0 - timedelta(minutes=2))
    due_now = message(due_at=T0)
    due_5 = message(due_at=T0 - timedelta(minutes=5))
    later = message(due_at=T0 + timedelta(seconds=1))
    sent = message(due_at=T0 - timedelta(hours=1), status=OutboxStatus.SENT)
    failed = message(due_at=T0 - timedelta(hours=1), status=OutboxStatus.FAILED)
    store(sessions, due_2, due_now, due_5, later, sent, failed)

    # When a relay claims at most two rows
    first = claim(sessions, now=T0, limit=2)
    # And then claims again with room to spare
    second = claim(sessions, now=T0, limit=10)

    # Then the first claim took the two most overdue rows, most overdue first
    assert first == [due_5.message_id, due_2.message_id]
    # And the second took the remaining due row only: never the not-yet-due, sent or failed rows
    assert second == [due_now.message_id]


def test_claim_returns_the_stored_rows(sessions: sessionmaker[Session]) -> None:
    # Given one due pending row
    stored = message(due_at=T0 - timedelta(seconds=5))
    store(sessions, stored)

    # When it is claimed
    with SqlUnitOfWork(sessions) as tx:
        [claimed] = tx.outbox.claim_due(now=T0, limit=10, lease_until=T0 + LEASE)
        tx.commit()

    # Then the claimed message carries the stored content and keys, as it was before the claim
    assert claimed.id is not None
    assert (claimed.message_id, claimed.topic) == (stored.message_id, stored.topic)
    assert claimed.content == stored.content
    assert (claimed.business_key, claimed.business_type) == (stored.business_key, stored.business_type)
    assert claimed.status is OutboxStatus.PENDING
    assert claimed.attempts == 0
    # And it is the row exactly as the claim left it: leased (due when the lease ends), updated now
    with SqlUnitOfWork(sessions) as tx:
        assert claimed == tx.outbox.get(stored.message_id)
    assert (claimed.due_at, claimed.update_time) == (T0 + LEASE, T0)


def test_a_claimed_retry_keeps_its_attempts_error_trace_and_requeues(sessions: sessionmaker[Session]) -> None:
    # Given a due row written under a trace, requeued once by an operator, then tried twice
    stored = replace(
        message(due_at=T0 - timedelta(seconds=5)),
        trace=TraceContext("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "corr-1", None),
        requeue_count=1,
    )
    store(sessions, stored)
    with SqlUnitOfWork(sessions) as tx:
        tx.outbox.schedule_retry(
            stored.message_id,
            attempts=2,
            due_at=T0 - timedelta(seconds=5),
            error="Throttled: slow down",
            now=T0,
        )
        tx.commit()

    # When it is claimed
    with SqlUnitOfWork(sessions) as tx:
        [claimed] = tx.outbox.claim_due(now=T0, limit=10, lease_until=T0 + LEASE)
        tx.commit()

    # Then what the relay publishes and decides with came back from the row
    assert (claimed.attempts, claimed.last_error, claimed.requeue_count) == (2, "Throttled: slow down", 1)
    assert claimed.trace == stored.trace and claimed.create_time == stored.create_time
    with SqlUnitOfWork(sessions) as tx:
        assert claimed == tx.outbox.get(stored.message_id)


# --- the lease -------------------------------------------------------------------------------------


def test_claim_leases_rows_so_a_second_claim_right_after_gets_nothing(
    sessions: sessionmaker[Session],
) -> None:
    # Given two due rows
    rows = store(
        sessions, message(due_at=T0 - timedelta(seconds=30)), message(due_at=T0 - timedelta(seconds=1))
    )

    # When one relay claims them and commits
    first = claim(sessions, now=T0)
    # And another relay claims a moment later, still within the lease
    second = claim(sessions, now=T0 + timedelta(seconds=1))

    # Then the first got both, the second nothing
    assert first == [m.message_id for m in rows]
    assert second == []
    # And the lease is written as the rows' due time; they are still pending
    for m in rows:
        stored = get(sessions, m.message_id)
        assert stored.due_at == T0 + LEASE
        assert stored.update_time == T0
        assert stored.status is OutboxStatus.PENDING


def test_a_crashed_relays_claim_returns_when_its_lease_passes(sessions: sessionmaker[Session]) -> None:
    # Given a row claimed by a relay that then died without marking it
    [row] = store(sessions, message(due_at=T0 - timedelta(seconds=10)))
    assert claim(sessions, now=T0) == [row.message_id]

    # When other relays claim just before and exactly when the lease ends
    before_expiry = claim(sessions, now=T0 + LEASE - timedelta(microseconds=1))
    at_expiry = claim(sessions, now=T0 + LEASE)

    # Then the row stays away while leased and is claimed again once the lease has passed
    assert before_expiry == []
    assert at_expiry == [row.message_id]
    assert get(sessions, row.message_id).due_at == T0 + LEASE + LEASE


def test_a_claim_rolled_back_leaves_rows_claimable(sessions: sessionmaker[Session]) -> None:
    # Given a due row
    [row] = store(sessions, message(due_at=T0 - timedelta(seconds=10)))

    # When a relay claims it but its transaction ends without commit (the process died mid-claim)
    with SqlUnitOfWork(sessions) as tx:
        assert [m.message_id for m in tx.outbox.claim_due(now=T0, limit=10, lease_until=T0 + LEASE)] == [
            row.message_id
        ]

    # Then no lease was written and the next relay claims the row at once
    assert get(sessions, row.message_id).due_at == T0 - timedelta(seconds=10)
    assert claim(sessions, now=T0) == [row.message_id]


# --- concurrent transactions -----------------------------------------------------------------------


def test_concurrent_claims_skip_locked_rows_without_waiting(
    sessions: sessionmaker[Session], other_connection: sessionmaker[Session]
) -> None:
    # Given six due rows
    rows = store(sessions, *(message(due_at=T0 - timedelta(seconds=60 - i)) for i in range(6)))
    ids = [m.message_id for m in rows]

    with SqlUnitOfWork(sessions) as first:
        # When one relay has claimed the first three rows and not yet committed
        held = [m.message_id for m in first.outbox.claim_due(now=T0, limit=3, lease_until=T0 + LEASE)]

        # And a second relay, on another connection, claims everything it can meanwhile
        started = time.monotonic()
        with SqlUnitOfWork(other_connection) as second:
            taken = [m.message_id for m in second.outbox.claim_due(now=T0, limit=10, lease_until=T0 + LEASE)]
            second.commit()
        waited = time.monotonic() - started

        first.commit()

    # Then the second relay got exactly the rows the first does not hold
    assert held == ids[:3]
    assert taken == ids[3:]
    # And it did not wait for the first relay's locks (a lock wait would have timed out after 1 s)
    assert waited < 0.9
    # And with both claims committed, every row is leased and nothing is left to claim
    assert claim(sessions, now=T0) == []
    assert {get(sessions, i).due_at for i in ids} == {T0 + LEASE}


def test_rows_locked_by_an_uncommitted_claim_are_claimable_after_it_rolls_back(
    sessions: sessionmaker[Session], other_connection: sessionmaker[Session]
) -> None:
    # Given two due rows, both locked by a relay whose claim is still open
    rows = store(
        sessions, message(due_at=T0 - timedelta(seconds=2)), message(due_at=T0 - timedelta(seconds=1))
    )
    with SqlUnitOfWork(sessions) as first:
        assert len(first.outbox.claim_due(now=T0, limit=10, lease_until=T0 + LEASE)) == 2

        # When another relay claims meanwhile
        during = claim(other_connection, now=T0)
        # And the first relay's transaction then rolls back (no commit)

    after = claim(other_connection, now=T0)

    # Then the other relay saw nothing while the rows were locked, and all of them after the rollback
    assert during == []
    assert after == [m.message_id for m in rows]


# --- per-key order ---------------------------------------------------------------------------------


def test_ordered_by_key_holds_back_a_later_row_while_an_earlier_one_of_its_key_is_pending(
    sessions: sessionmaker[Session],
) -> None:
    # Given two due rows of one business key (the later one due first) and a row of another key
    later_due = T0 - timedelta(minutes=5)
    first_of_key = message(due_at=T0 - timedelta(minutes=1), business_key="PO-A")
    second_of_key = message(due_at=later_due, business_key="PO-A")
    other_key = message(due_at=T0 - timedelta(minutes=2), business_key="PO-B")
    store(sessions, first_of_key, second_of_key, other_key)

    # When a relay claims in key order
    claimed = claim(sessions, now=T0, ordered_by_key=True)

    # Then the key's earlier row and the other key's row are claimed, the key's later row is held back
    assert sorted(claimed) == sorted([first_of_key.message_id, other_key.message_id])

    # When the leases pass while the rows are still pending (their relay died), and a relay claims again
    retried = claim(sessions, now=T0 + LEASE, ordered_by_key=True)

    # Then the same two rows come back, and the key's later row is still held back
    assert sorted(retried) == sorted([first_of_key.message_id, other_key.message_id])

    # When the earlier row is sent
    with SqlUnitOfWork(sessions) as tx:
        tx.outbox.mark_sent([first_of_key.message_id], now=T0 + LEASE)
        tx.commit()

    # Then the later row of the key is claimed
    assert claim(sessions, now=T0 + LEASE, ordered_by_key=True) == [second_of_key.message_id]


def test_in_stream_order_only_the_same_key_and_topic_wait_and_keyless_rows_never_do(
    sessions: sessionmaker[Session],
) -> None:
    # Given an order's points row, retrying (not due), then the same order's later points row and its
    # SMS row, and two rows without a business key
    retrying = message(due_at=T0 + timedelta(minutes=5), business_key="PO-A")
    later_points = message(due_at=T0 - timedelta(minutes=3), business_key="PO-A")
    sms = message(due_at=T0 - timedelta(minutes=2), business_key="PO-A", topic=TOPIC_SMS)
    keyless = [message(due_at=T0 - timedelta(minutes=1), business_key="") for _ in range(2)]
    store(sessions, retrying, later_points, sms, *keyless)

    # When a relay claims in stream order
    claimed = claim(sessions, now=T0, ordered_by_key=True)

    # Then the later points row waits behind the retrying one; the SMS (another stream) and the keyless
    # rows (no stream) are claimed
    assert claimed == [sms.message_id, *(m.message_id for m in keyless)]


def test_release_waiting_makes_rows_behind_a_pending_one_due_and_names_them(
    sessions: sessionmaker[Session],
) -> None:
    # Given a pending points row of PO-A, then fresh rows leased to an after-commit publish: a later
    # points row of PO-A, PO-A's SMS row and PO-B's points row
    store(sessions, message(due_at=T0 + timedelta(minutes=5), business_key="PO-A"))
    fresh = [
        message(due_at=T0 + LEASE, business_key="PO-A"),
        message(due_at=T0 + LEASE, business_key="PO-A", topic=TOPIC_SMS),
        message(due_at=T0 + LEASE, business_key="PO-B"),
    ]
    store(sessions, *fresh)

    # When the publish hands back the rows that must wait
    with SqlUnitOfWork(sessions) as tx:
        waiting = tx.outbox.release_waiting([m.message_id for m in fresh], now=T0)
        tx.commit()

    # Then only the later points row of PO-A waits; it is due now, still pending and untried
    assert waiting == {fresh[0].message_id}
    row = get(sessions, fresh[0].message_id)
    assert (row.status, row.due_at, row.attempts) == (OutboxStatus.PENDING, T0, 0)
    # And the other rows keep their after-commit lease
    assert [get(sessions, m.message_id).due_at for m in fresh[1:]] == [T0 + LEASE, T0 + LEASE]


def test_a_stream_head_held_by_an_open_claim_keeps_the_rest_of_its_stream_from_other_relays(
    sessions: sessionmaker[Session], other_connection: sessionmaker[Session]
) -> None:
    # Given three due rows of one stream and one row of another stream
    head, second, third = store(
        sessions, *(message(due_at=T0 - timedelta(seconds=30 - i), business_key="PO-A") for i in range(3))
    )
    [other] = store(sessions, message(due_at=T0, business_key="PO-B"))

    with SqlUnitOfWork(sessions) as first:
        # When one relay has claimed the stream's head and not yet committed
        held = [
            m.message_id
            for m in first.outbox.claim_due(now=T0, limit=1, lease_until=T0 + LEASE, ordered_by_key=True)
        ]
        # And a second relay claims everything it can meanwhile
        started = time.monotonic()
        taken = claim(other_connection, now=T0, ordered_by_key=True)
        waited = time.monotonic() - started
        first.commit()

    # Then the second relay skipped the locked head without waiting and took none of the rows behind it
    assert held == [head.message_id]
    assert taken == [other.message_id]
    assert waited < 0.9
    # And while the head is leased (in flight), its stream stays held for everyone
    assert claim(other_connection, now=T0 + timedelta(seconds=1), ordered_by_key=True) == []
    # When the head is sent / Then the next row of the stream, and only it, is claimable
    with SqlUnitOfWork(sessions) as tx:
        tx.outbox.mark_sent([head.message_id], now=T0 + timedelta(seconds=2))
        tx.commit()
    assert claim(other_connection, now=T0 + timedelta(seconds=2), ordered_by_key=True) == [second.message_id]
    # And the third row was never touched: it waits for the second
    assert get(sessions, third.message_id).due_at == T0 - timedelta(seconds=28)


def test_without_key_order_rows_of_one_key_are_claimed_together(sessions: sessionmaker[Session]) -> None:
    # Given two due rows of one business key
    first_of_key = message(due_at=T0 - timedelta(minutes=1), business_key="PO-A")
    second_of_key = message(due_at=T0 - timedelta(minutes=2), business_key="PO-A")
    store(sessions, first_of_key, second_of_key)

    # When a relay claims without key order
    claimed = claim(sessions, now=T0, ordered_by_key=False)

    # Then both are claimed, in due order
    assert claimed == [second_of_key.message_id, first_of_key.message_id]


# --- marking outcomes ------------------------------------------------------------------------------


def test_mark_sent_sets_pending_rows_sent_and_leaves_other_rows_alone(
    sessions: sessionmaker[Session],
) -> None:
    # Given a pending row with a recorded error, a row already sent, and a row that was given up
    pending = replace(message(due_at=T0), attempts=2)
    already_sent = message(due_at=T0, status=OutboxStatus.SENT)
    given_up = message(due_at=T0, status=OutboxStatus.FAILED)
    store(sessions, pending, already_sent, given_up)
    with SqlUnitOfWork(sessions) as tx:
        tx.outbox.schedule_retry(pending.message_id, attempts=2, due_at=T0, error="boom", now=T0)
        tx.commit()

    # When all three are reported sent
    sent_at = T0 + timedelta(seconds=3)
    with SqlUnitOfWork(sessions) as tx:
        changed = tx.outbox.mark_sent(
            [pending.message_id, already_sent.message_id, given_up.message_id], now=sent_at
        )
        tx.commit()

    # Then only the pending row changed: it is sent, stamped, and its error cleared
    assert changed == 1
    row = get(sessions, pending.message_id)
    assert (row.status, row.sent_time, row.update_time) == (OutboxStatus.SENT, sent_at, sent_at)
    assert row.last_error is None
    assert row.attempts == 2
    # And the other rows keep their status and were not stamped
    assert get(sessions, already_sent.message_id).sent_time is None
    assert get(sessions, given_up.message_id).status is OutboxStatus.FAILED
    assert get(sessions, given_up.message_id).sent_time is None


def test_schedule_retry_and_mark_failed_update_a_pending_row(sessions: sessionmaker[Session]) -> None:
    # Given two pending rows
    retrying, failing = store(sessions, message(due_at=T0), message(due_at=T0))

    # When one is scheduled for a retry and the other given up
    with SqlUnitOfWork(sessions) as tx:
        retried = tx.outbox.schedule_retry(
            retrying.message_id,
            attempts=1,
            due_at=T0 + timedelta(seconds=4),
            error="Throttled",
            now=T0,
        )
        failed = tx.outbox.mark_failed(failing.message_id, attempts=5, error="x" * 5000, now=T0)
        tx.commit()

    # Then the retrying row stays pending with its count, due time and error
    assert (retried, failed) == (True, True)
    row = get(sessions, retrying.message_id)
    assert (row.status, row.attempts, row.due_at, row.last_error) == (
        OutboxStatus.PENDING,
        1,
        T0 + timedelta(seconds=4),
        "Throttled",
    )
    # And the given-up row is FAILED with its error cut to the column's size
    row = get(sessions, failing.message_id)
    assert (row.status, row.attempts) == (OutboxStatus.FAILED, 5)
    assert row.last_error is not None
    assert len(row.last_error) == LAST_ERROR_MAX
    assert row.last_error.startswith("xxx")


def test_a_late_failure_report_does_not_undo_a_send(sessions: sessionmaker[Session]) -> None:
    # Given a row that one relay has already marked sent
    [row] = store(sessions, message(due_at=T0))
    with SqlUnitOfWork(sessions) as tx:
        assert tx.outbox.mark_sent([row.message_id], now=T0) == 1
        tx.commit()

    # When a slower relay, which held an expired claim on it, reports a failed publish
    with SqlUnitOfWork(sessions) as tx:
        retried = tx.outbox.schedule_retry(
            row.message_id, attempts=1, due_at=T0 + timedelta(seconds=4), error="timeout", now=T0
        )
        failed = tx.outbox.mark_failed(row.message_id, attempts=5, error="timeout", now=T0)
        tx.commit()

    # Then neither report changed the row: it stays SENT, with no error and no retry counted
    assert (retried, failed) == (False, False)
    stored = get(sessions, row.message_id)
    assert (stored.status, stored.attempts, stored.last_error, stored.sent_time) == (
        OutboxStatus.SENT,
        0,
        None,
        T0,
    )


def test_a_given_up_row_is_not_revived_by_a_retry_report(sessions: sessionmaker[Session]) -> None:
    # Given a row already given up (FAILED)
    [row] = store(sessions, message(due_at=T0, status=OutboxStatus.FAILED))

    # When a retry is scheduled for it
    with SqlUnitOfWork(sessions) as tx:
        changed = tx.outbox.schedule_retry(row.message_id, attempts=6, due_at=T0, error="x", now=T0)
        tx.commit()

    # Then it stays FAILED and is never claimed
    assert changed is False
    assert get(sessions, row.message_id).status is OutboxStatus.FAILED
    assert claim(sessions, now=T0 + timedelta(days=1)) == []


def test_message_ids_are_unique_in_the_table(db: Engine, sessions: sessionmaker[Session]) -> None:
    # Given a stored row
    [row] = store(sessions, message(due_at=T0))

    # When the same message id is stored again
    # Then the unique key rejects it and the table still holds one row
    with pytest.raises(IntegrityError, match="Duplicate entry"):
        store(sessions, row)
    with db.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM message_record")).scalar_one() == 1
