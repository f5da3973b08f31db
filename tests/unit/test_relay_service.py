"""OutboxRelay and RelayAfterCommitPublisher with in-memory fakes: claim, publish, mark sent, back off,
give up."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest

from payment_outbox.domain.backoff import RetryPolicy
from payment_outbox.domain.envelope import TOPIC_POINTS, TOPIC_SMS
from payment_outbox.domain.outbox import OutboxStatus
from payment_outbox.services.relay import SAFETY_MARGIN_MS, OutboxRelay, RelayAfterCommitPublisher
from tests.fakes import START, FakeClock, InMemoryDatabase, ScriptedPublisher, outbox_message

pytestmark = pytest.mark.unit

POLICY = RetryPolicy(max_attempts=3, base_delay_seconds=2.0, max_delay_seconds=60.0)
LEASE = timedelta(seconds=60)


@pytest.fixture
def db() -> InMemoryDatabase:
    return InMemoryDatabase()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def publisher() -> ScriptedPublisher:
    return ScriptedPublisher()


def _relay(
    db: InMemoryDatabase,
    publisher: ScriptedPublisher,
    clock: FakeClock,
    *,
    claim_size: int = 10,
    ordered_by_key: bool = False,
    monotonic: Callable[[], float] = time.monotonic,
) -> OutboxRelay:
    return OutboxRelay(
        db,
        publisher,
        clock,
        policy=POLICY,
        claim_size=claim_size,
        lease=LEASE,
        ordered_by_key=ordered_by_key,
        rng=random.Random(0),
        monotonic=monotonic,
    )


def _seed(db: InMemoryDatabase, *ids: str, **kwargs: object) -> None:
    db.insert_messages([outbox_message(i, **kwargs) for i in ids])  # type: ignore[arg-type]


# --- happy path ---------------------------------------------------------------------------------


def test_due_messages_are_published_and_marked_sent(
    db: InMemoryDatabase, publisher: ScriptedPublisher, clock: FakeClock
) -> None:
    # Given three due rows and one due only later
    _seed(db, "m1", "m2", "m3")
    _seed(db, "later", due_at=START + timedelta(minutes=5))
    # When the relay runs
    report = _relay(db, publisher, clock).relay_due_messages()
    # Then exactly the due rows were published and are SENT with their sent time
    assert sorted(publisher.published) == ["m1", "m2", "m3"]
    for message_id in ("m1", "m2", "m3"):
        row = db.message(message_id)
        assert row.status is OutboxStatus.SENT
        assert row.sent_time == START
        assert row.last_error is None
    # And the row not yet due is untouched
    assert db.message("later").status is OutboxStatus.PENDING
    assert db.message("later").due_at == START + timedelta(minutes=5)
    assert (report.claimed, report.published, report.retried, report.gave_up) == (3, 3, 0, [])


def test_nothing_due_means_no_publish(
    db: InMemoryDatabase, publisher: ScriptedPublisher, clock: FakeClock
) -> None:
    # Given only rows due in the future / When the relay runs / Then nothing is published
    _seed(db, "later", due_at=START + timedelta(seconds=1))
    report = _relay(db, publisher, clock).relay_due_messages()
    assert publisher.calls == []
    assert report.claimed == 0 and report.claims == 0


def test_sent_rows_are_not_published_again(
    db: InMemoryDatabase, publisher: ScriptedPublisher, clock: FakeClock
) -> None:
    # Given a run that sent a row
    _seed(db, "m1")
    _relay(db, publisher, clock).relay_due_messages()
    # When the relay runs again much later
    clock.advance(hours=1)
    report = _relay(db, publisher, clock).relay_due_messages()
    # Then the row is not published a second time
    assert publisher.published == ["m1"]
    assert report.claimed == 0


# --- failures -----------------------------------------------------------------------------------


def test_a_failed_publish_schedules_a_retry(
    db: InMemoryDatabase, publisher: ScriptedPublisher, clock: FakeClock
) -> None:
    # Given a due row whose publish fails once
    _seed(db, "m1")
    publisher.fail("m1", times=1, error="Throttled: rate exceeded")
    # When the relay runs
    report = _relay(db, publisher, clock).relay_due_messages()
    # Then the row stays PENDING with one more try counted, the error kept and a later due time
    row = db.message("m1")
    assert row.status is OutboxStatus.PENDING
    assert row.attempts == 1
    assert row.last_error == "Throttled: rate exceeded"
    # (first retry: base 2 s with equal jitter → between 1 and 2 s from now)
    assert START + timedelta(seconds=1) <= row.due_at <= START + timedelta(seconds=2)
    assert report.retried == 1 and report.published == 0 and report.gave_up == []


def test_a_retrying_row_waits_for_its_time_then_is_sent(
    db: InMemoryDatabase, publisher: ScriptedPublisher, clock: FakeClock
) -> None:
    # Given a row that failed once and is due again later
    _seed(db, "m1")
    publisher.fail("m1", times=1)
    relay = _relay(db, publisher, clock)
    relay.relay_due_messages()
    retry_at = db.message("m1").due_at
    # When the relay runs before the retry time / Then it leaves the row alone
    clock.set(retry_at - timedelta(milliseconds=1))
    assert relay.relay_due_messages().claimed == 0
    # When it runs at the retry time / Then the row is published and SENT, its error cleared
    clock.set(retry_at)
    report = relay.relay_due_messages()
    assert report.published == 1
    row = db.message("m1")
    assert row.status is OutboxStatus.SENT
    assert row.last_error is None
    assert row.attempts == 1
    assert publisher.calls == [["m1"], ["m1"]]


def test_after_max_attempts_the_row_fails_and_is_reported(
    db: InMemoryDatabase, publisher: ScriptedPublisher, clock: FakeClock
) -> None:
    # Given a row whose publish always fails and a policy of 3 attempts
    _seed(db, "m1")
    publisher.fail_always("m1", error="InternalError: SNS is down")
    relay = _relay(db, publisher, clock)
    reports = []
    # When the relay runs each time the row is due again
    for _ in range(POLICY.max_attempts):
        reports.append(relay.relay_due_messages())
        assert reports[-1].claimed == 1
        clock.set(max(clock.now(), db.message("m1").due_at))
    # Then the first two failures scheduled retries and the third gave up
    assert [r.retried for r in reports] == [1, 1, 0]
    assert [r.gave_up for r in reports] == [[], [], ["m1"]]
    row = db.message("m1")
    assert row.status is OutboxStatus.FAILED
    assert row.attempts == POLICY.max_attempts
    assert row.last_error == "InternalError: SNS is down"
    # And a FAILED row is never picked up again
    clock.advance(days=1)
    assert relay.relay_due_messages().claimed == 0
    assert len(publisher.calls) == POLICY.max_attempts


def test_retry_delays_grow_between_attempts(
    db: InMemoryDatabase, publisher: ScriptedPublisher, clock: FakeClock
) -> None:
    # Given a policy with many attempts and a row that keeps failing
    policy = RetryPolicy(max_attempts=10, base_delay_seconds=2.0, max_delay_seconds=600.0)
    relay = OutboxRelay(db, publisher, clock, policy=policy, lease=LEASE, rng=random.Random(1))
    _seed(db, "m1")
    publisher.fail_always("m1")
    waits = []
    # When it is retried each time it falls due
    for _ in range(5):
        relay.relay_due_messages()
        due = db.message("m1").due_at
        waits.append((due - clock.now()).total_seconds())
        clock.set(due)
    # Then each wait is within the policy's jitter bounds for that attempt (2, 4, 8, 16, 32 s ceilings)
    for attempt, wait in enumerate(waits, start=1):
        ceiling = 2.0 * 2 ** (attempt - 1)
        assert ceiling / 2 <= wait <= ceiling


def test_a_permanent_failure_fails_at_once(
    db: InMemoryDatabase, publisher: ScriptedPublisher, clock: FakeClock
) -> None:
    # Given a row SNS can never accept
    _seed(db, "huge")
    publisher.fail_permanently("huge", error="message is 300000 bytes")
    # When the relay runs
    report = _relay(db, publisher, clock).relay_due_messages()
    # Then the row is FAILED after its first attempt, without waiting for retries
    row = db.message("huge")
    assert row.status is OutboxStatus.FAILED
    assert row.attempts == 1
    assert row.last_error == "message is 300000 bytes"
    assert report.gave_up == ["huge"] and report.retried == 0


def test_a_message_the_publisher_does_not_answer_for_is_retried(
    db: InMemoryDatabase, publisher: ScriptedPublisher, clock: FakeClock
) -> None:
    # Given a publisher that reports nothing for one message
    _seed(db, "m1", "m2")
    publisher.forget("m2")
    # When the relay runs
    report = _relay(db, publisher, clock).relay_due_messages()
    # Then that message is not taken as sent: it is scheduled for a retry
    assert db.message("m1").status is OutboxStatus.SENT
    row = db.message("m2")
    assert row.status is OutboxStatus.PENDING
    assert row.attempts == 1
    assert row.last_error
    assert report.published == 1 and report.retried == 1


def test_one_failing_message_does_not_hold_back_the_others(
    db: InMemoryDatabase, publisher: ScriptedPublisher, clock: FakeClock
) -> None:
    # Given five due rows in one batch, the oldest of which always fails
    _seed(db, "bad", due_at=START - timedelta(minutes=1))
    _seed(db, "m1", "m2", "m3", "m4")
    publisher.fail_always("bad")
    # When the relay runs
    report = _relay(db, publisher, clock, claim_size=5).relay_due_messages()
    # Then the four others are SENT in the same batch, and only the bad one waits for a retry
    assert publisher.calls == [["bad", "m1", "m2", "m3", "m4"]]
    assert [db.message(m).status for m in ("m1", "m2", "m3", "m4")] == [OutboxStatus.SENT] * 4
    assert db.message("bad").status is OutboxStatus.PENDING
    assert report.published == 4 and report.retried == 1


def test_a_failing_message_does_not_starve_later_batches(
    db: InMemoryDatabase, publisher: ScriptedPublisher, clock: FakeClock
) -> None:
    # Given batches of 2 and an always-failing row at the head of the queue
    _seed(db, "bad", due_at=START - timedelta(minutes=1))
    _seed(db, "m1", "m2", "m3")
    publisher.fail_always("bad")
    # When the relay runs once
    _relay(db, publisher, clock, claim_size=2).relay_due_messages()
    # Then every other row was still sent in that run
    assert sorted(publisher.published) == ["m1", "m2", "m3"]


def test_a_failure_report_never_overrides_a_row_already_sent(
    db: InMemoryDatabase, publisher: ScriptedPublisher, clock: FakeClock
) -> None:
    # Given a relay holding a stale copy of a row that another relay has meanwhile sent
    _seed(db, "m1")
    relay = _relay(db, publisher, clock)
    stale = relay.claim_due()
    with db() as tx:
        tx.outbox.mark_sent(["m1"], now=START)
        tx.commit()
    # When this relay's publish of it fails
    publisher.fail_permanently("m1")
    report = relay.deliver(stale)
    # Then the row stays SENT and nothing is reported as given up or retried
    assert db.message("m1").status is OutboxStatus.SENT
    assert db.message("m1").last_error is None
    assert report.gave_up == [] and report.retried == 0


# --- claiming -----------------------------------------------------------------------------------


def test_a_claim_leases_rows_so_a_second_relay_skips_them(
    db: InMemoryDatabase, publisher: ScriptedPublisher, clock: FakeClock
) -> None:
    # Given a relay that claimed a row and has not finished with it
    _seed(db, "m1")
    first = _relay(db, publisher, clock)
    assert [m.message_id for m in first.claim_due()] == ["m1"]
    # When another relay looks for due rows before the lease ends / Then it finds none
    assert _relay(db, publisher, clock).claim_due() == []
    assert db.message("m1").due_at == START + LEASE
    # When the first relay dies and the lease runs out / Then the row is claimable again
    clock.set(START + LEASE)
    assert [m.message_id for m in _relay(db, publisher, clock).claim_due()] == ["m1"]


def test_with_ordering_a_later_message_of_a_key_waits_for_the_earlier(
    db: InMemoryDatabase, publisher: ScriptedPublisher, clock: FakeClock
) -> None:
    # Given two messages of one order, the first failing once, on a relay that keeps key order
    _seed(db, "first", "second", business_key="PO-1")
    publisher.fail("first", times=1)
    relay = _relay(db, publisher, clock, ordered_by_key=True)
    # When the relay runs / Then the second is not published while the first is pending
    relay.relay_due_messages()
    assert publisher.calls == [["first"]]
    assert db.message("second").status is OutboxStatus.PENDING
    # When the first is retried and sent / Then the second follows
    clock.set(db.message("first").due_at)
    relay.relay_due_messages()
    clock.advance(seconds=1)
    relay.relay_due_messages()
    assert publisher.published == ["first", "second"]


def test_with_ordering_another_topic_of_the_same_key_is_not_held_by_a_retrying_message(
    db: InMemoryDatabase, publisher: ScriptedPublisher, clock: FakeClock
) -> None:
    # Given an order's points message, failing, written before its SMS message (same business key)
    _seed(db, "points", business_key="PO-1", topic=TOPIC_POINTS)
    _seed(db, "sms", business_key="PO-1", topic=TOPIC_SMS)
    publisher.fail_always("points")
    # When a relay keeping stream order runs
    _relay(db, publisher, clock, ordered_by_key=True).relay_due_messages()
    # Then the SMS went out: it is another stream (business key x topic) and waits for nothing
    assert publisher.published == ["sms"]
    assert db.message("points").status is OutboxStatus.PENDING


def test_with_ordering_a_stream_keeps_its_order_through_a_failure_in_the_middle(
    db: InMemoryDatabase, publisher: ScriptedPublisher, clock: FakeClock
) -> None:
    # Given five messages of one stream, the second failing twice, and one message of another stream
    stream = [f"s{i}" for i in range(1, 6)]
    _seed(db, *stream, business_key="PO-1")
    _seed(db, "other", business_key="PO-2")
    publisher.fail("s2", times=2)
    relay = _relay(db, publisher, clock, ordered_by_key=True)
    # When the relay runs, and runs again each time the failed message is due again
    relay.relay_due_messages()
    for _ in range(2):
        assert db.message("s3").status is OutboxStatus.PENDING
        clock.set(db.message("s2").due_at)
        relay.relay_due_messages()
    # Then every message is sent, and the stream's messages were published in the order written
    assert all(m.status is OutboxStatus.SENT for m in db.messages())
    assert [m for m in publisher.published if m.startswith("s")] == stream
    # And no publish call ever carried two messages of the stream
    assert all(sum(m.startswith("s") for m in call) <= 1 for call in publisher.calls)
    # And the other stream did not wait for the failing one
    assert publisher.calls[0] == ["s1", "other"]


def test_with_ordering_one_run_drains_a_stream_row_after_row(
    db: InMemoryDatabase, publisher: ScriptedPublisher, clock: FakeClock
) -> None:
    # Given four due messages of one stream
    _seed(db, "s1", "s2", "s3", "s4", business_key="PO-1")
    # When a relay keeping stream order runs once
    report = _relay(db, publisher, clock, ordered_by_key=True).relay_due_messages()
    # Then it claimed one row at a time and sent them all in order, without waiting for the next run
    assert publisher.calls == [["s1"], ["s2"], ["s3"], ["s4"]]
    assert report.published == 4


# --- batches and time ---------------------------------------------------------------------------


def test_the_relay_loops_over_batches_while_rows_are_due(
    db: InMemoryDatabase, publisher: ScriptedPublisher, clock: FakeClock
) -> None:
    # Given five due rows and batches of two
    _seed(db, "m1", "m2", "m3", "m4", "m5")
    # When the relay runs once
    report = _relay(db, publisher, clock, claim_size=2).relay_due_messages()
    # Then it delivered them all in three batches, in due order
    assert [len(c) for c in publisher.calls] == [2, 2, 1]
    assert (report.claims, report.claimed, report.published) == (3, 5, 5)
    assert all(m.status is OutboxStatus.SENT for m in db.messages())
    # And the short last batch told it nothing more was due: no extra, empty claim was made
    assert db.opened == 1 + 3 * 2 + 1  # the seeding, claim + deliver per batch, the backlog age read


def test_the_relay_stops_when_a_full_batch_is_followed_by_no_rows(
    db: InMemoryDatabase, publisher: ScriptedPublisher, clock: FakeClock
) -> None:
    # Given exactly two full batches of rows / When the relay runs / Then it stops after finding none
    _seed(db, "m1", "m2", "m3", "m4")
    db.opened = 0
    report = _relay(db, publisher, clock, claim_size=2).relay_due_messages()
    assert report.claims == 2 and report.published == 4
    assert db.opened == 2 * 2 + 1 + 1  # claim + deliver per batch, one empty claim, the backlog age


def test_the_relay_starts_no_batch_without_enough_time(
    db: InMemoryDatabase, publisher: ScriptedPublisher, clock: FakeClock
) -> None:
    # Given due rows but less time left than the safety margin
    _seed(db, "m1", "m2")
    # When the relay runs / Then it claims nothing (so no lease is taken) and publishes nothing
    report = _relay(db, publisher, clock).relay_due_messages(remaining_ms=lambda: SAFETY_MARGIN_MS)
    assert report.claimed == 0
    assert publisher.calls == []
    assert all(m.due_at == START for m in db.messages())


def test_the_relay_stops_between_batches_when_time_runs_low(
    db: InMemoryDatabase, publisher: ScriptedPublisher, clock: FakeClock
) -> None:
    # Given ten due rows in batches of two, and a Lambda whose time runs out after two batches
    _seed(db, *[f"m{i}" for i in range(10)])
    remaining = iter([60_000, 60_000, SAFETY_MARGIN_MS - 1, 60_000])
    # When the relay runs
    relay = _relay(db, publisher, clock, claim_size=2)
    report = relay.relay_due_messages(remaining_ms=lambda: next(remaining))
    # Then it delivered two batches and left the rest due for the next run
    assert report.claims == 2 and report.published == 4
    pending = [m for m in db.messages() if m.status is OutboxStatus.PENDING]
    assert len(pending) == 6
    assert all(m.due_at == START for m in pending)


class _FakeMonotonic:
    """The monotonic clock the relay measures its batches with."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def monotonic(self) -> float:
        return self.seconds


def test_the_relay_keeps_room_for_its_slowest_batch(db: InMemoryDatabase, clock: FakeClock) -> None:
    # Given batches that each take 2 s and a Lambda with 12 s left
    timer = _FakeMonotonic()

    class SlowPublisher(ScriptedPublisher):
        def publish(self, messages):  # type: ignore[no-untyped-def]
            timer.seconds += 2.0
            return super().publish(messages)

    publisher = SlowPublisher()
    _seed(db, *[f"m{i}" for i in range(20)])

    def remaining_ms() -> int:
        return int(12_000 - timer.seconds * 1000)

    # When the relay runs
    relay = _relay(db, publisher, clock, claim_size=2, monotonic=timer.monotonic)
    report = relay.relay_due_messages(remaining_ms)
    # Then it starts a batch only while more than the margin plus twice the slowest batch is left:
    # 12 s (start), 10 s > 3 + 4, 8 s > 3 + 4, then 6 s is not enough
    assert report.claims == 3
    assert remaining_ms() == 6_000


# --- outages -------------------------------------------------------------------------------------

AGED_POLICY = RetryPolicy(
    max_attempts=3, base_delay_seconds=2.0, max_delay_seconds=60.0, max_age_seconds=3600
)


def _aged_relay(db: InMemoryDatabase, publisher: ScriptedPublisher, clock: FakeClock) -> OutboxRelay:
    return OutboxRelay(db, publisher, clock, policy=AGED_POLICY, lease=LEASE, rng=random.Random(0))


def _run_each_time_due(relay: OutboxRelay, db: InMemoryDatabase, clock: FakeClock, runs: int) -> list[int]:
    """Run the relay ``runs`` times, moving the clock to the earliest pending row's due time first."""
    claimed = []
    for _ in range(runs):
        pending = [m for m in db.messages() if m.status is OutboxStatus.PENDING]
        if pending:
            clock.set(max(clock.now(), min(m.due_at for m in pending)))
        claimed.append(relay.relay_due_messages().claimed)
    return claimed


def test_an_outage_charges_no_attempt_however_long_it_lasts_within_the_age_limit(
    db: InMemoryDatabase, publisher: ScriptedPublisher, clock: FakeClock
) -> None:
    # Given rows due, and SNS refusing every whole request (an outage)
    _seed(db, "m1", "m2")
    publisher.outage("ServiceUnavailable: 503")
    relay = _aged_relay(db, publisher, clock)
    # When the relay tries them many more times than the attempts allowed
    claimed = _run_each_time_due(relay, db, clock, runs=AGED_POLICY.max_attempts * 4)
    # Then every run tried one of them at least, and they are still pending with no attempt counted
    assert all(c >= 1 for c in claimed)
    for message_id in ("m1", "m2"):
        row = db.message(message_id)
        assert (row.status, row.attempts) == (OutboxStatus.PENDING, 0)
        assert row.last_error == "ServiceUnavailable: 503"
    assert clock.now() - START < timedelta(seconds=AGED_POLICY.max_age_seconds or 0)
    # When SNS recovers / Then the next runs, each when a row falls due, send them, each once
    publisher.recover()
    _run_each_time_due(relay, db, clock, runs=2)
    assert {db.message(m).status for m in ("m1", "m2")} == {OutboxStatus.SENT}
    assert sorted(publisher.published) == ["m1", "m2"]


def test_an_outage_reports_the_rows_it_held_and_gives_none_up(
    db: InMemoryDatabase, publisher: ScriptedPublisher, clock: FakeClock
) -> None:
    # Given a due row and an outage
    _seed(db, "m1")
    publisher.outage()
    # When the relay runs / Then the row is retried, held by the outage, and not given up
    report = _aged_relay(db, publisher, clock).relay_due_messages()
    assert (report.retried, report.held_by_outage, report.gave_up) == (1, 1, [])


def test_an_outage_still_backs_off_by_the_messages_age(
    db: InMemoryDatabase, publisher: ScriptedPublisher, clock: FakeClock
) -> None:
    # Given a row written ten minutes ago, and an outage
    _seed(db, "m1")
    clock.advance(minutes=10)
    publisher.outage()
    # When the relay fails to publish it
    _aged_relay(db, publisher, clock).relay_due_messages()
    # Then its next try waits within the cap's jitter bounds (its age is past the 60 s cap), not 1-2 s
    wait = (db.message("m1").due_at - clock.now()).total_seconds()
    assert AGED_POLICY.max_delay_seconds / 2 <= wait <= AGED_POLICY.max_delay_seconds


def test_a_message_older_than_the_age_limit_gives_up_at_an_outage(
    db: InMemoryDatabase, publisher: ScriptedPublisher, clock: FakeClock
) -> None:
    # Given a row written more than the age limit ago, with no attempt charged, and an outage
    _seed(db, "old")
    clock.advance(seconds=(AGED_POLICY.max_age_seconds or 0) + 1)
    publisher.outage("Throttling: Rate exceeded")
    # When the relay fails to publish it
    report = _aged_relay(db, publisher, clock).relay_due_messages()
    # Then it gives up: FAILED, reported for the alarm, with the outage's error and why
    assert report.gave_up == ["old"]
    row = db.message("old")
    assert (row.status, row.attempts) == (OutboxStatus.FAILED, 0)
    assert row.last_error is not None and row.last_error.startswith("Throttling: Rate exceeded")
    assert "age limit" in row.last_error


def test_a_message_older_than_the_age_limit_gives_up_at_its_own_refusal_before_its_attempts_run_out(
    db: InMemoryDatabase, publisher: ScriptedPublisher, clock: FakeClock
) -> None:
    # Given an old row refused by SNS for itself, with attempts left
    _seed(db, "old")
    clock.advance(hours=2)
    publisher.fail("old", times=1)
    # When the relay fails to publish it / Then it gives up on its age after one attempt
    assert _aged_relay(db, publisher, clock).relay_due_messages().gave_up == ["old"]
    assert db.message("old").attempts == 1


def test_the_messages_own_refusals_still_give_up_at_max_attempts_between_outages(
    db: InMemoryDatabase, publisher: ScriptedPublisher, clock: FakeClock
) -> None:
    # Given a row SNS keeps refusing for itself, with an outage between its refusals
    _seed(db, "m1")
    publisher.fail_always("m1", error="InternalError: entry failed")
    relay = _aged_relay(db, publisher, clock)
    _run_each_time_due(relay, db, clock, runs=2)
    publisher.outage()
    _run_each_time_due(relay, db, clock, runs=3)
    assert db.message("m1").attempts == 2
    publisher.recover()
    # When it is refused once more / Then its third own refusal gives up, whatever the outage did
    report = _run_each_time_due(relay, db, clock, runs=1)
    assert report == [1]
    row = db.message("m1")
    assert (row.status, row.attempts) == (OutboxStatus.FAILED, AGED_POLICY.max_attempts)


def test_the_after_commit_publish_charges_no_attempt_in_an_outage(
    db: InMemoryDatabase, publisher: ScriptedPublisher, clock: FakeClock
) -> None:
    # Given rows committed by a payment, and an outage
    _seed(db, "p1", due_at=START + LEASE)
    publisher.outage()
    # When they are published after commit / Then they are left to the relay with no attempt counted
    RelayAfterCommitPublisher(lambda: _aged_relay(db, publisher, clock))(db.messages())
    row = db.message("p1")
    assert (row.status, row.attempts) == (OutboxStatus.PENDING, 0)


# --- the after-commit publish -------------------------------------------------------------------


@pytest.fixture
def fresh_rows(db: InMemoryDatabase) -> Iterator[list[str]]:
    """Rows just committed by a payment, owned by the after-commit publish until the lease ends."""
    ids = ["p1", "p2"]
    _seed(db, *ids, due_at=START + LEASE)
    yield ids


def test_the_after_commit_publish_sends_committed_rows_at_once(
    db: InMemoryDatabase, publisher: ScriptedPublisher, clock: FakeClock, fresh_rows: list[str]
) -> None:
    # Given rows committed by a payment
    publish_after_commit = RelayAfterCommitPublisher(lambda: _relay(db, publisher, clock))
    # When they are published after commit / Then they are published and SENT without waiting for the relay
    publish_after_commit(db.messages())
    assert publisher.published == fresh_rows
    assert all(db.message(m).status is OutboxStatus.SENT for m in fresh_rows)


def test_the_after_commit_publish_records_a_failure_for_the_relay(
    db: InMemoryDatabase, publisher: ScriptedPublisher, clock: FakeClock, fresh_rows: list[str]
) -> None:
    # Given an after-commit publish that fails for one row
    publisher.fail("p2")
    # When the rows are published after commit
    RelayAfterCommitPublisher(lambda: _relay(db, publisher, clock))(db.messages())
    # Then the failed row is scheduled for a retry like any relay failure
    assert db.message("p1").status is OutboxStatus.SENT
    assert db.message("p2").status is OutboxStatus.PENDING
    assert db.message("p2").attempts == 1


def test_a_run_reports_how_long_the_oldest_due_row_has_waited(
    db: InMemoryDatabase, publisher: ScriptedPublisher, clock: FakeClock
) -> None:
    # Given a row that cannot be published and has been due for a while, and one due later
    _seed(db, "stuck", due_at=START)
    _seed(db, "later", due_at=START + timedelta(hours=1))
    publisher.fail_always("stuck")
    clock.advance(seconds=90)
    # When the relay runs (the failure pushes the stuck row's due time forward)
    report = _relay(db, publisher, clock).relay_due_messages()
    # Then nothing is due any more at the end of the run
    assert report.oldest_due_age_seconds == 0.0
    # And once its retry time has passed by 30 s, the backlog age says so
    clock.set(db.message("stuck").due_at + timedelta(seconds=30))
    assert _relay(db, publisher, clock).oldest_due_age_seconds() == 30.0


def test_the_after_commit_publish_never_gives_up_so_every_give_up_reaches_the_alarm(
    db: InMemoryDatabase, publisher: ScriptedPublisher, clock: FakeClock, fresh_rows: list[str]
) -> None:
    # Given an after-commit publish that fails permanently for one row
    publisher.fail_permanently("p2")
    # When the rows are published after commit
    RelayAfterCommitPublisher(lambda: _relay(db, publisher, clock))(db.messages())
    # Then the row is left for the scheduled relay (whose handler emits MessagesFailed), not FAILED here
    assert db.message("p2").status is OutboxStatus.PENDING
    assert db.message("p2").attempts == 1
    # And the scheduled relay gives up on it once it is due, reporting it
    clock.advance(seconds=POLICY.max_delay_seconds + 1)
    report = _relay(db, publisher, clock).relay_due_messages()
    assert report.gave_up == ["p2"]
    assert db.message("p2").status is OutboxStatus.FAILED


def test_the_after_commit_publish_never_raises_when_the_relay_cannot_be_built(
    db: InMemoryDatabase, fresh_rows: list[str]
) -> None:
    # Given a relay factory that fails (e.g. missing configuration)
    def broken() -> OutboxRelay:
        raise RuntimeError("ORDER_EVENTS_TOPIC_ARN is not set")

    # When rows are published after commit / Then the caller sees no error and the rows wait for the relay
    RelayAfterCommitPublisher(broken)(db.messages())
    assert all(m.status is OutboxStatus.PENDING and m.attempts == 0 for m in db.messages())


def test_the_after_commit_publish_never_raises_when_the_publisher_raises(
    db: InMemoryDatabase, publisher: ScriptedPublisher, clock: FakeClock, fresh_rows: list[str]
) -> None:
    # Given a publisher that breaks its contract and raises
    publisher.raise_on_publish(ConnectionError("endpoint unreachable"))
    # When rows are published after commit / Then the caller sees no error
    RelayAfterCommitPublisher(lambda: _relay(db, publisher, clock))(db.messages())
    # And the rows are left pending, due when the after-commit lease ends
    assert all(m.status is OutboxStatus.PENDING for m in db.messages())
    assert all(m.due_at == START + LEASE for m in db.messages())


def test_the_after_commit_publish_never_raises_when_the_database_is_lost(
    db: InMemoryDatabase, publisher: ScriptedPublisher, clock: FakeClock, fresh_rows: list[str]
) -> None:
    # Given a publish that succeeds but a database that fails when the outcome is recorded
    db.fail_next_enter = ConnectionError("lost connection to MySQL server")
    # When rows are published after commit / Then the caller sees no error
    # (the relay re-sends; consumers dedupe)
    RelayAfterCommitPublisher(lambda: _relay(db, publisher, clock))(db.messages())
    assert publisher.published == fresh_rows
    assert all(m.status is OutboxStatus.PENDING for m in db.messages())


# --- the after-commit publish in stream order ------------------------------------------------------


def test_in_stream_order_the_after_commit_publish_leaves_a_row_behind_a_pending_one_to_the_relay(
    db: InMemoryDatabase, publisher: ScriptedPublisher, clock: FakeClock
) -> None:
    # Given an earlier message of stream PO-1/points still retrying
    _seed(db, "earlier", business_key="PO-1", due_at=START + timedelta(seconds=30))
    # And a payment that just committed a later points message of PO-1 and an SMS of PO-1
    _seed(db, "later", business_key="PO-1", due_at=START + LEASE)
    _seed(db, "sms", business_key="PO-1", topic=TOPIC_SMS, due_at=START + LEASE)
    publish_after_commit = RelayAfterCommitPublisher(
        lambda: _relay(db, publisher, clock, ordered_by_key=True)
    )
    # When the fresh rows are published after commit
    publish_after_commit([db.message("later"), db.message("sms")])
    # Then only the SMS, the head of its stream, was published
    assert publisher.calls == [["sms"]]
    # And the later points row is left to the relay: pending, due now rather than after the after-commit lease
    assert db.message("later").status is OutboxStatus.PENDING
    assert db.message("later").due_at == START
    assert db.message("later").attempts == 0
    # When the relay runs once the earlier row is due / Then it sends the stream in order
    clock.set(START + timedelta(seconds=30))
    _relay(db, publisher, clock, ordered_by_key=True).relay_due_messages()
    assert publisher.published == ["sms", "earlier", "later"]


def test_without_stream_order_the_after_commit_publish_sends_every_row(
    db: InMemoryDatabase, publisher: ScriptedPublisher, clock: FakeClock
) -> None:
    # Given an earlier message of the stream still pending and a fresh later one
    _seed(db, "earlier", business_key="PO-1", due_at=START + timedelta(seconds=30))
    _seed(db, "later", business_key="PO-1", due_at=START + LEASE)
    # When the fresh row is published after commit on a standard (unordered) deployment
    RelayAfterCommitPublisher(lambda: _relay(db, publisher, clock))([db.message("later")])
    # Then it is published at once
    assert publisher.published == ["later"]
