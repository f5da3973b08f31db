"""Moving outbox rows to the message bus: ``relay_due_messages`` (the scheduled run) and
``publish_after_commit`` (the after-commit publish, through ``RelayAfterCommitPublisher``). Both share
``deliver``: publish, then record each outcome. The words are docs/architecture.md's (*Words*).

The scheduled relay keeps several publish requests in flight at once: it claims due rows, splits the
claim into requests, hands them to a small thread pool and makes the next claim while they travel; each
claim is recorded (mark-sent in one statement) in one short transaction on the driving thread, which
alone touches the database. With ``ordered_by_key`` every row of one business key in a claim goes into
the same request sequence, so a stream's messages are never in flight together.
"""

from __future__ import annotations

import contextvars
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta

from payment_outbox.domain.backoff import RetryPolicy
from payment_outbox.domain.outbox import OutboxMessage
from payment_outbox.ports import (
    Clock,
    MessagePublisher,
    PublishFailure,
    PublishOutcome,
    RelayLauncher,
    UnitOfWorkFactory,
)

logger = logging.getLogger(__name__)

#: Keep this much of the Lambda's time unused, beyond the slowest batch seen so far.
SAFETY_MARGIN_MS = 3_000
#: A run measures its own drain rate this long before it decides whether to start more relays.
FAN_OUT_AFTER_SECONDS = 2.0


@dataclass(frozen=True)
class Polling:
    """Keep a scheduled run alive within its minute while rows fall due, instead of returning at the
    first empty claim: a row that missed the after-commit publish then waits about a poll interval
    after falling due (its after-commit lease or its retry time), not until the next scheduled run, and
    a quiet minute still costs one short run.

    The run goes on polling (every ``interval_seconds``, or sooner when a row falls due sooner) while
    a pending row falls due before the run must stop, or while rows were claimed within the last
    ``idle_cutoff_seconds`` (0: only rows already known). It stops polling at the run's first
    failed publish: retries keep their one-run-a-minute pace rather than spending their attempts
    within seconds.
    """

    interval_seconds: float = 1.0
    idle_cutoff_seconds: float = 0.0


@dataclass(frozen=True)
class FanOut:
    """Start more relays when one run cannot drain the backlog before its deadline."""

    launcher: RelayLauncher
    #: All relays at once, this one included (the template's MaxRelayConcurrency).
    max_relays: int
    #: How long the run measures its own drain rate before it decides.
    after_seconds: float = FAN_OUT_AFTER_SECONDS


@dataclass
class RelayReport:
    claimed: int = 0
    published: int = 0
    retried: int = 0
    #: Of the retried, those whose request SNS refused whole (an outage): no attempt charged.
    held_by_outage: int = 0
    gave_up: list[str] = field(default_factory=list)
    claims: int = 0
    #: How long the longest-waiting due row has waited when the run ends (0 when none is due).
    oldest_due_age_seconds: float = 0.0
    #: Further relays this run started because of the backlog (fan-out).
    relays_started: int = 0

    def merge(self, other: RelayReport) -> None:
        self.claimed += other.claimed
        self.published += other.published
        self.retried += other.retried
        self.held_by_outage += other.held_by_outage
        self.gave_up.extend(other.gave_up)
        self.claims += other.claims


class _Flight:
    """One claim on its way to the bus: its requests (futures) and when the claim started."""

    def __init__(
        self, messages: list[OutboxMessage], requests: list[Future[PublishOutcome]], started: float
    ) -> None:
        self.messages = messages
        self.requests = requests
        self.started = started

    def outcome(self) -> PublishOutcome:
        """Wait for every request of the claim; a publisher that raises (breaking its contract)
        raises here, leaving the claim to its lease as a sequential relay would."""
        merged = PublishOutcome()
        for request in self.requests:
            outcome = request.result()
            merged.published.extend(outcome.published)
            merged.failed.update(outcome.failed)
        return merged


def _done(outcome: PublishOutcome) -> Future[PublishOutcome]:
    future: Future[PublishOutcome] = Future()
    future.set_result(outcome)
    return future


class OutboxRelay:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        publisher: MessagePublisher,
        clock: Clock,
        *,
        policy: RetryPolicy,
        claim_size: int = 50,
        lease: timedelta = timedelta(seconds=60),
        ordered_by_key: bool = False,
        rng: random.Random | None = None,
        max_in_flight: int = 1,
        request_size: int = 10,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``max_in_flight``: publish requests of ``request_size`` messages (the publisher's batch
        limit) on their way at once; 1 publishes each claim in the calling thread. ``monotonic`` and
        ``sleep`` measure and spend the run's own time (``clock`` is the rows' wall-clock time)."""
        if max_in_flight < 1 or request_size < 1:
            raise ValueError("max_in_flight and request_size must be at least 1")
        self._uow = uow
        self._publisher = publisher
        self._clock = clock
        self._policy = policy
        self._batch_size = claim_size
        self._lease = lease
        self._ordered_by_key = ordered_by_key
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security  # nosec B311
        self._max_in_flight = max_in_flight
        self._request_size = request_size
        self._sleep = sleep
        self._monotonic = monotonic
        self._pool: ThreadPoolExecutor | None = None

    # --- the scheduled run --------------------------------------------------------------------

    def relay_due_messages(
        self,
        remaining_ms: Callable[[], int] | None = None,
        *,
        polling: Polling | None = None,
        fan_out: FanOut | None = None,
    ) -> RelayReport:
        """Claim and deliver due rows while rows are due and time is left.

        A claim starts only while more than the safety margin plus twice the slowest claim so far
        (claimed to recorded, queueing included) is left, so the run never starts a batch it cannot
        finish. Up to two claims travel at once when requests run concurrently: one in flight, the
        next queued behind it, which keeps the pipe full while the first one is recorded. A claim
        that SNS refused entirely ends the claiming (an outage): the backlog keeps its attempts for
        the next run.
        """
        report = RelayReport()
        window = 1 if self._max_in_flight == 1 else 2
        flights: deque[_Flight] = deque()
        slowest_ms = 0.0
        more_due, out_of_time = True, False
        run_started = self._monotonic()
        last_claimed_at: float | None = None
        healthy = True  # no publish in this run has failed
        fan_out_decided = fan_out is None or fan_out.max_relays <= 1

        def time_left() -> bool:
            return remaining_ms is None or remaining_ms() > SAFETY_MARGIN_MS + 2 * slowest_ms

        while True:
            if more_due and not out_of_time and len(flights) < window:
                if not time_left():
                    out_of_time = True
                    continue
                started = self._monotonic()
                claimed = self.claim_due()
                if claimed:
                    flights.append(_Flight(claimed, self._send(claimed), started))
                    more_due = len(claimed) >= self._batch_size
                    last_claimed_at = started
                    if (
                        fan_out is not None
                        and not fan_out_decided
                        and more_due
                        and started - run_started >= fan_out.after_seconds
                    ):
                        fan_out_decided = True
                        report.relays_started = self._fan_out(
                            fan_out, report.claimed, started - run_started, remaining_ms
                        )
                    continue
                more_due = False
            if flights:
                flight = flights.popleft()  # oldest claim first: its requests went out first
                recorded = self._record(flight.messages, flight.outcome())
                report.merge(recorded)
                # A short claim means nothing more is due, except in stream order: there a claim takes
                # one row per stream, and each row sent makes the next of its stream due.
                if self._ordered_by_key and recorded.published and not out_of_time:
                    more_due = True
                if recorded.retried or recorded.gave_up:
                    healthy = False
                    if not recorded.published:
                        # SNS refused the whole claim: leave the backlog to the next scheduled
                        # run instead of spending every due row's attempts within this one.
                        more_due = False
                slowest_ms = max(slowest_ms, (self._monotonic() - flight.started) * 1000)
                continue
            if (
                out_of_time
                or polling is None
                or not healthy
                or not self._keep_polling(polling, remaining_ms, last_claimed_at, slowest_ms)
            ):
                break
            more_due = True
        report.oldest_due_age_seconds = self.oldest_due_age_seconds()
        return report

    def _keep_polling(
        self,
        polling: Polling,
        remaining_ms: Callable[[], int] | None,
        last_claimed_at: float | None,
        slowest_ms: float,
    ) -> bool:
        """Nothing is due right now: wait for the next row to fall due if the run has time for it."""
        left_ms = None if remaining_ms is None else remaining_ms() - SAFETY_MARGIN_MS - 2 * slowest_ms
        wait = polling.interval_seconds
        if left_ms is not None and left_ms <= wait * 1000:
            return False
        recently_busy = (
            last_claimed_at is not None and self._monotonic() - last_claimed_at < polling.idle_cutoff_seconds
        )
        now = self._clock.now()
        with self._uow() as tx:
            next_due = tx.outbox.next_due_at(after=now)
        if next_due is not None:
            until_due = max(0.0, (next_due - now).total_seconds())
            falls_due_in_run = left_ms is None or until_due * 1000 < left_ms
            if falls_due_in_run:
                wait = min(wait, until_due)
            elif not recently_busy:
                return False
        elif not recently_busy:
            return False
        self._sleep(wait)
        return True

    def _fan_out(
        self, fan_out: FanOut, drained: int, elapsed_s: float, remaining_ms: Callable[[], int] | None
    ) -> int:
        """Start more relays when the due rows exceed what this run can drain before its deadline."""
        if remaining_ms is None or elapsed_s <= 0 or drained <= 0:
            return 0
        left_ms = remaining_ms()
        per_run = drained / elapsed_s * max(0.0, (left_ms - SAFETY_MARGIN_MS) / 1000)
        if per_run < 1:
            return 0
        backlog = self.count_due(limit=math.ceil(per_run * fan_out.max_relays))
        wanted = min(fan_out.max_relays, math.ceil(backlog / per_run))
        if wanted <= 1:
            return 0
        # A started run ends when this one must end, and keeps the safety margin before that as this
        # one does: it is told the time left itself, not the time left less the margin (the margin
        # would count twice, and the started runs would stop claiming early).
        started = fan_out.launcher.launch(wanted - 1, seconds_left=max(0.0, left_ms / 1000))
        logger.info(
            "backlog of %s due row(s) exceeds one run's %d: started %d more relay(s)",
            f"{backlog}+" if backlog >= per_run * fan_out.max_relays else backlog,
            int(per_run),
            started,
        )
        return started

    # --- pieces -------------------------------------------------------------------------------

    def oldest_due_age_seconds(self) -> float:
        """The backlog's age: what an alarm watches to see the relay falling behind or stopped."""
        now = self._clock.now()
        with self._uow() as tx:
            oldest = tx.outbox.oldest_due_at(now)
        return 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())

    def count_due(self, *, limit: int) -> int:
        """Due rows now, counted up to ``limit`` (an index range scan that stops there)."""
        with self._uow() as tx:
            return tx.outbox.count_due(self._clock.now(), limit=limit)

    def claim_due(self) -> list[OutboxMessage]:
        """Short transaction, no network call inside: lock due rows, lease them, commit."""
        now = self._clock.now()
        with self._uow() as tx:
            claimed = tx.outbox.claim_due(
                now=now,
                limit=self._batch_size,
                lease_until=now + self._lease,
                ordered_by_key=self._ordered_by_key,
            )
            tx.commit()
        return claimed

    def publish_after_commit(self, messages: Sequence[OutboxMessage]) -> RelayReport:
        """Deliver rows just committed and leased to the caller (the after-commit publish).

        In stream order a row behind an earlier pending row of its stream is not published here: it is
        made due and left to the relay, which claims it once the earlier rows are sent.
        """
        if self._ordered_by_key:
            with self._uow() as tx:
                waiting = tx.outbox.release_waiting([m.message_id for m in messages], now=self._clock.now())
                tx.commit()
            messages = [m for m in messages if m.message_id not in waiting]
            if not messages:
                return RelayReport()
        return self.deliver(messages, may_give_up=False)

    def _send(self, messages: list[OutboxMessage]) -> list[Future[PublishOutcome]]:
        """Start publishing a claim: in this thread, or as concurrent requests on the pool."""
        if self._max_in_flight == 1:
            return [_done(self._publisher.publish(messages))]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._max_in_flight, thread_name_prefix="outbox-publish")
        # Each request runs in a copy of this thread's context: what the invocation set there
        # (log correlation, tracing) follows its calls onto the pool.
        return [
            self._pool.submit(contextvars.copy_context().run, self._publisher.publish, r)
            for r in self.requests(messages)
        ]

    def requests(self, messages: Sequence[OutboxMessage]) -> list[list[OutboxMessage]]:
        """Split a claim into publish requests that may travel concurrently.

        Unordered: runs of ``request_size``. Ordered: every row of one business key (a stream is a
        business key and a topic: this is coarser, so it holds for streams too) stays in one request,
        in claim order (a key with more rows than fit one request gets a request of its
        own, which the publisher sends batch after batch), so no two of a stream's rows are ever
        in concurrent requests.
        """
        size = self._request_size
        if not self._ordered_by_key:
            return [list(messages[i : i + size]) for i in range(0, len(messages), size)]
        streams: dict[str, list[OutboxMessage]] = {}
        for message in messages:
            streams.setdefault(message.business_key or message.message_id, []).append(message)
        requests: list[list[OutboxMessage]] = []
        current: list[OutboxMessage] = []
        for stream in streams.values():
            if current and len(current) + len(stream) > size:
                requests.append(current)
                current = []
            current.extend(stream)
        if current:
            requests.append(current)
        return requests

    def deliver(self, messages: Sequence[OutboxMessage], *, may_give_up: bool = True) -> RelayReport:
        """Publish messages this process holds, then mark them sent or schedule their retry.

        With ``may_give_up=False`` a failure is always retried later: only the scheduled relay,
        whose handler emits ``MessagesFailed``, ever marks a message FAILED — so no give-up escapes
        the alarm.
        """
        return self._record(messages, self._publisher.publish(messages), may_give_up=may_give_up)

    def _record(
        self, messages: Sequence[OutboxMessage], outcome: PublishOutcome, *, may_give_up: bool = True
    ) -> RelayReport:
        """One transaction per claim: every published row marked sent in one statement, then each
        failure retried later or given up.

        A message's own refusal charges it an attempt; an outage (the whole request refused or
        unanswered) charges none and backs off by the message's age. Either way a message older than
        the policy's age limit gives up.
        """
        report = RelayReport(claimed=len(messages), claims=1)
        published = set(outcome.published)
        now = self._clock.now()
        with self._uow() as tx:
            report.published = tx.outbox.mark_sent(sorted(published), now=now)
            for message in messages:
                if message.message_id in published:
                    continue
                failure = outcome.failed.get(message.message_id) or PublishFailure("not published")
                age = now - message.create_time
                attempts = message.attempts if failure.outage else message.attempts + 1
                too_old = self._policy.too_old(age)
                if may_give_up and (
                    failure.permanent or too_old or (not failure.outage and self._policy.gives_up(attempts))
                ):
                    error = (
                        f"{failure.error} (older than the outbox's age limit)" if too_old else failure.error
                    )
                    if tx.outbox.mark_failed(message.message_id, attempts=attempts, error=error, now=now):
                        report.gave_up.append(message.message_id)
                        logger.error(
                            "outbox message gave up after %d attempt(s)%s: messageId=%s topic=%s error=%s",
                            attempts,
                            f" and {age}" if too_old else "",
                            message.message_id,
                            message.topic,
                            failure.error,
                        )
                    continue
                if failure.outage:
                    next_attempt_at = now + self._policy.outage_delay(age, self._rng)
                else:
                    next_attempt_at = self._policy.next_attempt_at(now, attempts, self._rng)
                if tx.outbox.schedule_retry(
                    message.message_id,
                    attempts=attempts,
                    due_at=next_attempt_at,
                    error=failure.error,
                    now=now,
                ):
                    report.retried += 1
                    if failure.outage:
                        report.held_by_outage += 1
                    logger.warning(
                        "outbox message publish failed (%s), will retry: messageId=%s error=%s",
                        "outage, no attempt charged" if failure.outage else f"attempt {attempts}",
                        message.message_id,
                        failure.error,
                    )
            tx.commit()
        return report


class RelayAfterCommitPublisher:
    """The payment service's ``AfterCommitPublisher``, through the relay: publish the payment's rows at
    once, bounded, never failing the caller.

    Whatever goes wrong here, the rows are already committed: the relay picks them up when the
    after-commit lease ends (or sooner, at the retry time recorded after a failed attempt).
    """

    def __init__(
        self,
        relay_factory: Callable[[], OutboxRelay],
        on_report: Callable[[RelayReport], None] | None = None,
    ) -> None:
        self._relay_factory = relay_factory
        # Told what this path published, so the metrics count both publish paths, not the relay's alone.
        self._on_report = on_report

    def __call__(self, messages: Sequence[OutboxMessage]) -> None:
        try:
            report = self._relay_factory().publish_after_commit(messages)
            if self._on_report is not None:
                self._on_report(report)
        except Exception:  # the payment is committed; never turn a publish hiccup into a failed response
            logger.warning(
                "after-commit publish failed; the relay will deliver %d message(s)",
                len(messages),
                exc_info=True,
            )
