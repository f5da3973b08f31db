"""OutboxRelay with several publish requests in flight, sub-minute polling and fan-out, on fakes."""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence
from datetime import timedelta

import pytest

from payment_outbox.adapters.relay_launcher import FAN_OUT_EVENT_KEY, fan_out_event, fan_out_remaining_ms
from payment_outbox.domain.backoff import RetryPolicy
from payment_outbox.domain.outbox import OutboxMessage, OutboxStatus
from payment_outbox.ports import PublishOutcome
from payment_outbox.services.relay import SAFETY_MARGIN_MS, FanOut, OutboxRelay, Polling
from tests.fakes import START, FakeClock, InMemoryDatabase, ScriptedPublisher, outbox_message

pytestmark = pytest.mark.unit

POLICY = RetryPolicy(max_attempts=3, base_delay_seconds=2.0, max_delay_seconds=60.0)


def _relay(
    db: InMemoryDatabase,
    publisher: object,
    clock: FakeClock,
    *,
    claim_size: int = 40,
    max_in_flight: int = 4,
    ordered_by_key: bool = False,
    sleep: object = None,
    monotonic: object = None,
) -> OutboxRelay:
    return OutboxRelay(
        db,
        publisher,  # type: ignore[arg-type]
        clock,
        policy=POLICY,
        claim_size=claim_size,
        lease=timedelta(seconds=60),
        ordered_by_key=ordered_by_key,
        rng=random.Random(0),
        max_in_flight=max_in_flight,
        request_size=10,
        **({"sleep": sleep} if sleep else {}),  # type: ignore[arg-type]
        **({"monotonic": monotonic} if monotonic else {}),  # type: ignore[arg-type]
    )


def _seed(db: InMemoryDatabase, count: int, *, prefix: str = "m", **kwargs: object) -> list[str]:
    ids = [f"{prefix}{i:03d}" for i in range(count)]
    db.insert_messages(
        [outbox_message(i, business_key=f"PO-{i}", **kwargs) for i in ids]  # type: ignore[arg-type]
    )
    return ids


class GatedPublisher(ScriptedPublisher):
    """Holds every request until ``parties`` requests are in flight together: a relay that sent its
    requests one after another would never get past the first (the barrier would break)."""

    def __init__(self, parties: int) -> None:
        super().__init__()
        self._barrier = threading.Barrier(parties, timeout=10)
        self._lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0

    def publish(self, messages: Sequence[OutboxMessage]) -> PublishOutcome:
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            self._barrier.wait()
            return super().publish(messages)
        finally:
            with self._lock:
                self.in_flight -= 1


class CountingMarkSent:
    """Counts the relay's mark-sent statements (one per claim) and what each marked."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from tests import fakes

        self.calls: list[list[str]] = []
        original = fakes.InMemoryOutbox.mark_sent
        counter = self

        def mark_sent(outbox: fakes.InMemoryOutbox, message_ids: Sequence[str], *, now: object) -> int:
            counter.calls.append(list(message_ids))
            return original(outbox, message_ids, now=now)  # type: ignore[arg-type]

        monkeypatch.setattr(fakes.InMemoryOutbox, "mark_sent", mark_sent)


# --- concurrent requests --------------------------------------------------------------------------


def test_a_claims_requests_are_in_flight_together_and_marked_sent_in_one_statement(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given 80 due rows, claims of 40 and four requests of 10 allowed in flight
    db, clock = InMemoryDatabase(), FakeClock()
    ids = _seed(db, 80)
    publisher = GatedPublisher(parties=4)
    marks = CountingMarkSent(monkeypatch)
    # When the relay runs
    report = _relay(db, publisher, clock).relay_due_messages()
    # Then every row is SENT, published once, in requests of 10 that travelled four at a time
    assert sorted(publisher.published) == ids
    assert all(m.status is OutboxStatus.SENT for m in db.messages())
    assert [len(c) for c in publisher.calls] == [10] * 8
    assert publisher.most_in_flight == 4
    # And each claim was marked sent with one statement naming all of its rows
    assert report.claims == 2 and report.published == 80
    assert [len(c) for c in marks.calls] == [40, 40]


def test_per_entry_failures_in_concurrent_requests_are_each_retried_or_given_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given 40 due rows published as four concurrent requests, with failures spread over them
    db, clock = InMemoryDatabase(), FakeClock()
    ids = _seed(db, 39)
    db.insert_messages([outbox_message("last-try", business_key="PO-x", attempts=2)])
    publisher = GatedPublisher(parties=4)
    publisher.fail("m003", error="Throttled: slow down")
    publisher.fail("m017", error="InternalError: try again")
    publisher.fail_permanently("m025", error="InvalidParameter: too large")
    publisher.fail("last-try", error="Throttled: slow down")
    marks = CountingMarkSent(monkeypatch)
    # When the relay runs (one claim of 40 rows: four requests in flight at once)
    report = _relay(db, publisher, clock, claim_size=50).relay_due_messages()
    # Then the transient failures wait for their retry, with their own error
    for message_id, error in (("m003", "Throttled: slow down"), ("m017", "InternalError: try again")):
        row = db.message(message_id)
        assert (row.status, row.attempts, row.last_error) == (OutboxStatus.PENDING, 1, error)
        assert row.due_at > START
    # And the permanent failure and the row out of attempts gave up
    assert db.message("m025").status is OutboxStatus.FAILED
    assert db.message("last-try").status is OutboxStatus.FAILED
    assert sorted(report.gave_up) == ["last-try", "m025"]
    # And every other row is SENT, all marked in the claim's one statement
    sent = [i for i in ids if i not in ("m003", "m017", "m025")]
    assert all(db.message(i).status is OutboxStatus.SENT for i in sent)
    assert len(marks.calls) == 1 and sorted(marks.calls[0]) == sent
    assert (report.published, report.retried) == (36, 2)


def test_a_publisher_that_raises_leaves_the_claim_to_its_lease() -> None:
    # Given a publisher that breaks its contract in one of the concurrent requests
    db, clock = InMemoryDatabase(), FakeClock()
    _seed(db, 20)
    publisher = ScriptedPublisher()
    publisher.raise_on_publish(ConnectionError("endpoint unreachable"))
    # When the relay runs / Then the error surfaces, and no row is marked: all wait for the lease
    with pytest.raises(ConnectionError):
        _relay(db, publisher, clock).relay_due_messages()
    assert all(m.status is OutboxStatus.PENDING for m in db.messages())
    assert all(m.due_at == START + timedelta(seconds=60) for m in db.messages())


def test_with_ordered_delivery_a_streams_rows_are_never_in_concurrent_requests() -> None:
    # Given a claim holding three rows of one business key among rows of other keys
    relay = _relay(InMemoryDatabase(), ScriptedPublisher(), FakeClock(), ordered_by_key=True)
    keyed = [outbox_message(f"k{i}", business_key="PO-same") for i in range(3)]
    others = [outbox_message(f"o{i}", business_key=f"PO-{i}") for i in range(25)]
    claim = [*others[:4], keyed[0], *others[4:12], keyed[1], *others[12:], keyed[2]]
    # When the relay splits it into requests
    requests = relay.requests(claim)
    # Then the key's rows share one request, in claim order, and every row is in exactly one request
    holding = [r for r in requests if any(m.business_key == "PO-same" for m in r)]
    assert len(holding) == 1
    assert [m.message_id for m in holding[0] if m.business_key == "PO-same"] == ["k0", "k1", "k2"]
    assert sorted(m.message_id for r in requests for m in r) == sorted(m.message_id for m in claim)
    assert all(len(r) <= 10 for r in requests)
    # And without ordered delivery the claim is simply cut into runs of ten
    unordered = _relay(InMemoryDatabase(), ScriptedPublisher(), FakeClock()).requests(claim)
    assert [len(r) for r in unordered] == [10, 10, 8]


def test_a_stream_with_more_rows_than_one_request_gets_a_request_of_its_own() -> None:
    relay = _relay(InMemoryDatabase(), ScriptedPublisher(), FakeClock(), ordered_by_key=True)
    keyed = [outbox_message(f"k{i:02d}", business_key="PO-same") for i in range(12)]
    others = [outbox_message(f"o{i}", business_key=f"PO-{i}") for i in range(5)]
    requests = relay.requests(others + keyed)
    # The publisher sends a request of 12 as two batches one after another, never concurrently
    assert [len(r) for r in requests] == [5, 12]
    assert [m.message_id for m in requests[1]] == [m.message_id for m in keyed]


class _FakeMonotonic:
    def __init__(self) -> None:
        self.seconds = 0.0
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        return self.seconds

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.seconds += seconds


def test_the_relay_never_starts_a_claim_it_cannot_finish_and_finishes_every_claim_it_started() -> None:
    # Given claims that take 2 s from claim to recorded, and a Lambda with 12 s left
    timer = _FakeMonotonic()
    db, clock = InMemoryDatabase(), FakeClock()
    _seed(db, 200)

    class SlowPublisher(ScriptedPublisher):
        def publish(self, messages: Sequence[OutboxMessage]) -> PublishOutcome:
            timer.advance(0.5)  # four requests a claim: 2 s of the (fake) clock per claim
            return super().publish(messages)

    def remaining_ms() -> int:
        return int(12_000 - timer.seconds * 1000)

    # When the relay runs
    report = _relay(db, SlowPublisher(), clock, monotonic=timer.monotonic).relay_due_messages(remaining_ms)
    # Then it stopped claiming in time to finish what it had started within its safety margin
    assert remaining_ms() >= SAFETY_MARGIN_MS
    # And every claim it started was published and recorded: no row is left leased and unsent
    rows = db.messages()
    sent = [m for m in rows if m.status is OutboxStatus.SENT]
    untouched = [m for m in rows if m.status is OutboxStatus.PENDING and m.due_at == START]
    assert len(sent) == report.claimed == report.published
    assert len(sent) + len(untouched) == 200
    assert 0 < report.claimed < 200


# --- polling within the run -----------------------------------------------------------------------


class _Sleeper:
    """Sleeping moves the fake clocks (wall and monotonic) forward."""

    def __init__(self, clock: FakeClock, timer: _FakeMonotonic) -> None:
        self.clock, self.timer, self.waits = clock, timer, []  # type: ignore[var-annotated]

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.advance(seconds=seconds)
        self.timer.advance(seconds)


def _polling_run(
    db: InMemoryDatabase, clock: FakeClock, timeout_s: float = 60.0
) -> tuple[OutboxRelay, _Sleeper, object]:
    timer = _FakeMonotonic()
    sleeper = _Sleeper(clock, timer)

    def remaining_ms() -> int:
        return int((timeout_s - timer.seconds) * 1000)

    relay = _relay(db, ScriptedPublisher(), clock, sleep=sleeper, monotonic=timer.monotonic)
    return relay, sleeper, remaining_ms


def test_a_polling_run_publishes_rows_that_fall_due_within_its_minute() -> None:
    # Given a row due now and rows that fall due 4 s and 20 s later (a retry, a after-commit lease)
    db, clock = InMemoryDatabase(), FakeClock()
    db.insert_messages([outbox_message("now", business_key="a")])
    db.insert_messages([outbox_message("in-4s", business_key="b", due_at=START + timedelta(seconds=4))])
    db.insert_messages([outbox_message("in-20s", business_key="c", due_at=START + timedelta(seconds=20))])
    relay, sleeper, remaining_ms = _polling_run(db, clock)
    # When a scheduled run polls within its minute
    report = relay.relay_due_messages(remaining_ms, polling=Polling(interval_seconds=1.0))  # type: ignore[arg-type]
    # Then each row was published within a poll interval of falling due, by the same run
    assert report.published == 3
    for message_id, due in (("in-4s", 4), ("in-20s", 20)):
        sent_after = (db.message(message_id).sent_time - START).total_seconds()  # type: ignore[operator]
        assert due <= sent_after <= due + 1.0
    # And with nothing more to fall due before its deadline, it returned at once
    assert all(w <= 1.0 for w in sleeper.waits)
    assert clock.now() - START == timedelta(seconds=20)


def test_an_idle_cutoff_keeps_a_busy_run_polling_for_rows_not_yet_written() -> None:
    # Given a row due now
    db, clock = InMemoryDatabase(), FakeClock()
    db.insert_messages([outbox_message("now", business_key="a")])
    relay, sleeper, remaining_ms = _polling_run(db, clock)
    # When a run with a 10 s idle cutoff publishes it
    relay.relay_due_messages(remaining_ms, polling=Polling(1.0, idle_cutoff_seconds=10.0))  # type: ignore[arg-type]
    # Then it went on polling every second for 10 s before returning
    assert sleeper.waits == [1.0] * 10


def test_a_run_stops_polling_when_a_claim_publishes_nothing() -> None:
    # Given a due row whose publish fails (SNS is down) and would be retried 1-2 s later
    db, clock = InMemoryDatabase(), FakeClock()
    db.insert_messages([outbox_message("m1")])
    timer = _FakeMonotonic()
    sleeper = _Sleeper(clock, timer)
    publisher = ScriptedPublisher()
    publisher.fail_always("m1")
    relay = _relay(db, publisher, clock, sleep=sleeper, monotonic=timer.monotonic)
    # When a polling run meets the failure
    relay.relay_due_messages(lambda: 60_000, polling=Polling())
    # Then it returns instead of waiting for the retry: attempts keep the scheduled runs' pace
    assert sleeper.waits == []
    assert db.message("m1").attempts == 1


def test_a_run_with_nothing_due_and_nothing_falling_due_returns_at_once() -> None:
    # Given only a row that falls due after the run must have stopped (a fresh after-commit lease)
    db, clock = InMemoryDatabase(), FakeClock()
    db.insert_messages([outbox_message("later", due_at=START + timedelta(seconds=59))])
    relay, sleeper, remaining_ms = _polling_run(db, clock)
    # When a scheduled run polls / Then it does not wait at all: a quiet minute costs one short run
    report = relay.relay_due_messages(remaining_ms, polling=Polling())  # type: ignore[arg-type]
    assert report.claimed == 0 and sleeper.waits == []


def test_a_polling_run_stops_before_its_deadline() -> None:
    # Given rows falling due every 5 s for two minutes
    db, clock = InMemoryDatabase(), FakeClock()
    db.insert_messages(
        [
            outbox_message(f"r{i}", business_key=f"k{i}", due_at=START + timedelta(seconds=5 * i))
            for i in range(24)
        ]
    )
    relay, _sleeper, remaining_ms = _polling_run(db, clock, timeout_s=60.0)
    # When a run with a 60 s timeout polls
    report = relay.relay_due_messages(remaining_ms, polling=Polling())  # type: ignore[arg-type]
    # Then it returned with at least the safety margin left, leaving later rows for the next run
    assert remaining_ms() >= SAFETY_MARGIN_MS  # type: ignore[operator]
    assert 0 < report.published < 24
    pending = [m for m in db.messages() if m.status is OutboxStatus.PENDING]
    assert all(m.due_at > clock.now() for m in pending)


# --- fan-out --------------------------------------------------------------------------------------


class RecordingLauncher:
    def __init__(self) -> None:
        self.launches: list[tuple[int, float]] = []

    def launch(self, count: int, *, seconds_left: float) -> int:
        self.launches.append((count, seconds_left))
        return count


def _fan_out_run(rows: int, max_relays: int) -> tuple[RecordingLauncher, object, InMemoryDatabase]:
    # Each request of 10 takes 1 s of the fake clock, one at a time: 10 messages/s; with 10 s
    # left, 7 s beyond the safety margin, one run drains 70 rows
    timer = _FakeMonotonic()
    db, clock = InMemoryDatabase(), FakeClock()
    _seed(db, rows)

    class OneSecondPublisher(ScriptedPublisher):
        def publish(self, messages: Sequence[OutboxMessage]) -> PublishOutcome:
            timer.advance(1.0)
            return super().publish(messages)

    launcher = RecordingLauncher()
    relay = _relay(db, OneSecondPublisher(), clock, claim_size=10, max_in_flight=1, monotonic=timer.monotonic)
    report = relay.relay_due_messages(lambda: 7_000 + SAFETY_MARGIN_MS, fan_out=FanOut(launcher, max_relays))
    return launcher, report, db


def test_a_backlog_beyond_one_runs_reach_starts_more_relays_up_to_the_bound() -> None:
    # Given 300 due rows, a relay draining 10 messages/s with 7 s usable (70 rows a run), bound 4
    launcher, report, _db = _fan_out_run(rows=300, max_relays=4)
    # Then it started three more relays (four at once: the bound), once, each told the starter's
    # own time left (its safety margin included: each started run keeps its own)
    assert launcher.launches == [(3, 10.0)]
    assert report.relays_started == 3  # type: ignore[attr-defined]


def test_a_backlog_a_few_runs_can_drain_starts_only_as_many_relays_as_it_needs() -> None:
    # Given 120 due rows: 90 left after the 2 s of measuring, two runs' worth at 70 each
    launcher, _report, _db = _fan_out_run(rows=120, max_relays=10)
    assert launcher.launches == [(1, 10.0)]


def test_no_relay_is_started_once_one_run_can_drain_the_backlog() -> None:
    # Given 60 due rows: 30 left after the 2 s of measuring, less than one run's worth
    launcher, _report, db = _fan_out_run(rows=60, max_relays=4)
    # Then the run drains them alone
    assert launcher.launches == []
    assert all(m.status is OutboxStatus.SENT for m in db.messages())


def test_fan_out_is_off_with_a_bound_of_one() -> None:
    launcher, _report, _db = _fan_out_run(rows=300, max_relays=1)
    assert launcher.launches == []


def test_a_started_relay_ends_when_its_starter_ends_keeping_the_safety_margin_once() -> None:
    # Given a starter whose Lambda has 10 s left when it starts, 300 due rows, and claims of 10 rows
    # that take 1 s each (70 rows a run beyond the safety margin, bound 4)
    timer = _FakeMonotonic()
    db, clock = InMemoryDatabase(), FakeClock()
    _seed(db, 300)

    class OneSecondPublisher(ScriptedPublisher):
        def publish(self, messages: Sequence[OutboxMessage]) -> PublishOutcome:
            timer.advance(1.0)
            return super().publish(messages)

    starter_deadline = 10.0
    started_runs: list[tuple[float, float]] = []

    class Launcher:
        def launch(self, count: int, *, seconds_left: float) -> int:
            started_runs.append((timer.seconds, seconds_left))
            return count

    def remaining_ms() -> int:
        return int((starter_deadline - timer.seconds) * 1000)

    relay = _relay(db, OneSecondPublisher(), clock, claim_size=10, max_in_flight=1, monotonic=timer.monotonic)
    # When it fans out
    relay.relay_due_messages(remaining_ms, fan_out=FanOut(Launcher(), 4))
    # Then the runs it started are told to end exactly when it ends, not a safety margin sooner: each
    # keeps its own margin before that deadline, so the margin counts once, as it does for the starter
    assert len(started_runs) == 1
    launched_at, seconds_left = started_runs[0]
    assert launched_at + seconds_left == pytest.approx(starter_deadline)


def test_a_fanned_out_run_stops_by_its_starters_deadline() -> None:
    # Given the event a starter with 30 s left sends
    assert fan_out_event(30.0, now=1_000.0) == {FAN_OUT_EVENT_KEY: {"stopByEpochMs": 1_030_000}}
    # When the started run reads it / Then its time left is the starter's, not its own timeout
    remaining = fan_out_remaining_ms(fan_out_event(30.0))
    assert remaining is not None and 25_000 < remaining() <= 30_000
    # And the schedule's own event is no fan-out
    assert fan_out_remaining_ms({"source": "aws.events", "detail-type": "Scheduled Event"}) is None


def test_a_partly_failed_claim_also_ends_the_polling() -> None:
    # Given two due rows, one of which fails, and a row that falls due 5 s later
    db, clock = InMemoryDatabase(), FakeClock()
    db.insert_messages([outbox_message("ok", business_key="a"), outbox_message("bad", business_key="b")])
    db.insert_messages([outbox_message("later", business_key="c", due_at=START + timedelta(seconds=5))])
    timer = _FakeMonotonic()
    sleeper = _Sleeper(clock, timer)
    publisher = ScriptedPublisher()
    publisher.fail("bad")
    relay = _relay(db, publisher, clock, sleep=sleeper, monotonic=timer.monotonic)
    # When a polling run publishes one and fails the other
    relay.relay_due_messages(lambda: 60_000, polling=Polling())
    # Then it does not stay to retry the failure (nor to wait for the later row)
    assert sleeper.waits == []
    assert db.message("ok").status is OutboxStatus.SENT
    assert db.message("bad").attempts == 1
    assert db.message("later").status is OutboxStatus.PENDING


def test_a_claim_refused_entirely_ends_the_run_and_spares_the_backlogs_attempts() -> None:
    # Given 30 due rows and SNS refusing everything
    db, clock = InMemoryDatabase(), FakeClock()
    _seed(db, 30)

    class Down(ScriptedPublisher):
        def publish(self, messages: Sequence[OutboxMessage]) -> PublishOutcome:
            for message in messages:
                self.fail_always(message.message_id, error="InternalError: SNS is down")
            return super().publish(messages)

    # When a relay with claims of 10 runs
    report = _relay(db, Down(), clock, claim_size=10, max_in_flight=1).relay_due_messages()
    # Then it stopped after the first refused claim: only those rows spent an attempt
    assert (report.claimed, report.retried) == (10, 10)
    assert sorted(m.attempts for m in db.messages()) == [0] * 20 + [1] * 10
