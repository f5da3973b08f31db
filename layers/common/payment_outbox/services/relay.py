"""Moving outbox rows to the message bus: ``relay_due_messages`` (scheduled) and ``publish_now``
(right after the payment commit). Both share ``deliver``: publish, then record each outcome."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from payment_outbox.domain.backoff import RetryPolicy
from payment_outbox.domain.outbox import OutboxMessage
from payment_outbox.ports import Clock, MessagePublisher, PublishFailure, UnitOfWorkFactory

logger = logging.getLogger(__name__)

#: Keep this much of the Lambda's time unused, beyond the slowest batch seen so far.
SAFETY_MARGIN_MS = 3_000


@dataclass
class RelayReport:
    claimed: int = 0
    published: int = 0
    retried: int = 0
    gave_up: list[str] = field(default_factory=list)
    batches: int = 0
    #: How long the longest-waiting due row has waited when the run ends (0 when none is due).
    oldest_due_age_seconds: float = 0.0

    def merge(self, other: RelayReport) -> None:
        self.claimed += other.claimed
        self.published += other.published
        self.retried += other.retried
        self.gave_up.extend(other.gave_up)
        self.batches += other.batches


class OutboxRelay:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        publisher: MessagePublisher,
        clock: Clock,
        *,
        policy: RetryPolicy,
        batch_size: int = 50,
        lease: timedelta = timedelta(seconds=60),
        ordered_by_key: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        self._uow = uow
        self._publisher = publisher
        self._clock = clock
        self._policy = policy
        self._batch_size = batch_size
        self._lease = lease
        self._ordered_by_key = ordered_by_key
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security  # nosec B311

    def relay_due_messages(self, remaining_ms: Callable[[], int] | None = None) -> RelayReport:
        """Claim and deliver due rows batch after batch while rows are due and time is left."""
        report = RelayReport()
        slowest_ms = 0.0
        while remaining_ms is None or remaining_ms() > SAFETY_MARGIN_MS + 2 * slowest_ms:
            started = time.monotonic()
            claimed = self.claim_due()
            if not claimed:
                break
            delivered = self.deliver(claimed)
            report.merge(delivered)
            slowest_ms = max(slowest_ms, (time.monotonic() - started) * 1000)
            # A short batch means nothing more is due, except in stream order: there a claim takes one
            # row per stream, and each row sent makes the next of its stream due.
            if len(claimed) < self._batch_size and not (self._ordered_by_key and delivered.published):
                break
        report.oldest_due_age_seconds = self.oldest_due_age_seconds()
        return report

    def oldest_due_age_seconds(self) -> float:
        """The backlog's age: what an alarm watches to see the relay falling behind or stopped."""
        now = self._clock.now()
        with self._uow() as tx:
            oldest = tx.outbox.oldest_due_at(now)
        return 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())

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

    def deliver_handed_off(self, messages: Sequence[OutboxMessage]) -> RelayReport:
        """Deliver rows just committed and leased to the caller (the after-commit publish).

        In stream order a row behind an earlier pending row of its stream is not published here: it is
        made due and left to the relay, which claims it once the earlier rows are sent.
        """
        if self._ordered_by_key:
            with self._uow() as tx:
                waiting = tx.outbox.hand_back_waiting([m.message_id for m in messages], now=self._clock.now())
                tx.commit()
            messages = [m for m in messages if m.message_id not in waiting]
            if not messages:
                return RelayReport()
        return self.deliver(messages, may_give_up=False)

    def deliver(self, messages: Sequence[OutboxMessage], *, may_give_up: bool = True) -> RelayReport:
        """Publish messages this process holds, then mark them sent or schedule their retry.

        With ``may_give_up=False`` a failure is always retried later: only the scheduled relay,
        whose handler emits ``MessagesFailed``, ever marks a message FAILED — so no give-up escapes
        the alarm.
        """
        report = RelayReport(claimed=len(messages), batches=1)
        outcome = self._publisher.publish(messages)
        published = set(outcome.published)
        now = self._clock.now()
        with self._uow() as tx:
            report.published = tx.outbox.mark_sent(sorted(published), now=now)
            for message in messages:
                if message.message_id in published:
                    continue
                failure = outcome.failed.get(message.message_id) or PublishFailure("not published")
                attempts = message.retry_count + 1
                if may_give_up and (failure.permanent or self._policy.gives_up(attempts)):
                    if tx.outbox.mark_failed(
                        message.message_id, retry_count=attempts, error=failure.error, now=now
                    ):
                        report.gave_up.append(message.message_id)
                        logger.error(
                            "outbox message gave up after %d attempt(s): messageId=%s topic=%s error=%s",
                            attempts,
                            message.message_id,
                            message.topic,
                            failure.error,
                        )
                elif tx.outbox.schedule_retry(
                    message.message_id,
                    retry_count=attempts,
                    next_retry_at=self._policy.next_attempt_at(now, attempts, self._rng),
                    error=failure.error,
                    now=now,
                ):
                    report.retried += 1
                    logger.warning(
                        "outbox message publish failed (attempt %d), will retry: messageId=%s error=%s",
                        attempts,
                        message.message_id,
                        failure.error,
                    )
            tx.commit()
        return report


class ImmediatePublisher:
    """After-commit hand-off: publish the payment's rows at once, bounded, never failing the caller.

    Whatever goes wrong here, the rows are already committed: the relay picks them up when the
    hand-off lease ends (or sooner, at the retry time recorded after a failed attempt).
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
            report = self._relay_factory().deliver_handed_off(messages)
            if self._on_report is not None:
                self._on_report(report)
        except Exception:  # the payment is committed; never turn a publish hiccup into a failed response
            logger.warning(
                "immediate publish failed; the relay will deliver %d message(s)", len(messages), exc_info=True
            )
