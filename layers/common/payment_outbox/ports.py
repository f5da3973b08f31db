"""Ports: what the use cases need from the outside world. Adapters implement these Protocols."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import TracebackType
from typing import Any, Protocol, Self

from payment_outbox.domain.orders import Order
from payment_outbox.domain.outbox import OutboxMessage, OutboxStatus


class OrderRepository(Protocol):
    def add(self, order: Order) -> Order: ...
    def get(self, order_id: int) -> Order | None: ...
    def get_by_order_no_for_update(self, order_no: str) -> Order | None: ...
    def save_payment(self, order: Order) -> None: ...


class OutboxRepository(Protocol):
    def add_all(self, messages: Sequence[OutboxMessage]) -> None: ...
    def claim_due(
        self, *, now: datetime, limit: int, lease_until: datetime, ordered_by_key: bool = False
    ) -> list[OutboxMessage]: ...
    def release_waiting(self, message_ids: Sequence[str], *, now: datetime) -> set[str]: ...
    def mark_sent(self, message_ids: Sequence[str], *, now: datetime) -> int: ...
    def schedule_retry(
        self, message_id: str, *, attempts: int, due_at: datetime, error: str, now: datetime
    ) -> bool: ...
    def mark_failed(self, message_id: str, *, attempts: int, error: str, now: datetime) -> bool: ...
    def oldest_due_at(self, now: datetime) -> datetime | None: ...
    def next_due_at(self, *, after: datetime) -> datetime | None: ...
    def count_due(self, now: datetime, *, limit: int) -> int: ...
    def get(self, message_id: str) -> OutboxMessage | None: ...
    def list_for_business_key(self, business_key: str) -> list[OutboxMessage]: ...


class UnitOfWork(Protocol):
    """One database transaction. Leaving the block without ``commit()`` rolls back."""

    @property
    def orders(self) -> OrderRepository: ...
    @property
    def outbox(self) -> OutboxRepository: ...

    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
    def commit(self) -> None: ...


class UnitOfWorkFactory(Protocol):
    def __call__(self) -> UnitOfWork: ...


@dataclass(frozen=True)
class PublishFailure:
    error: str
    #: True when retrying can never help (e.g. the message is larger than SNS accepts).
    permanent: bool = False
    #: True when the bus refused or never answered the whole request for reasons of its own
    #: (throttling, a server error, no connection, no answer in time): an outage, not this
    #: message's refusal, so it charges the message no attempt.
    outage: bool = False


@dataclass
class PublishOutcome:
    published: list[str] = field(default_factory=list)
    failed: dict[str, PublishFailure] = field(default_factory=dict)


class MessagePublisher(Protocol):
    def publish(self, messages: Sequence[OutboxMessage]) -> PublishOutcome:
        """Publish each message; report every message id as published or failed, never raise."""
        ...


class RelayLauncher(Protocol):
    def launch(self, count: int, *, seconds_left: float) -> int:
        """Start ``count`` more relay runs now, each ending by ``seconds_left`` from now (the starter's
        own deadline: each keeps its safety margin before it, as the starter does); return how many
        were started (a refused start is logged, never raised: the backlog waits for the next run)."""
        ...


@dataclass(frozen=True)
class PointsCredit:
    message_id: str
    user_id: int
    order_id: int
    points: int
    credited_at: datetime


class PointsLedger(Protocol):
    def credit(self, credit: PointsCredit) -> bool:
        """Apply the credit atomically with its ledger entry; False if this message was credited before."""
        ...

    def balance(self, user_id: int) -> int: ...


class SmsSender(Protocol):
    def send(self, phone: str, text: str) -> str:
        """Send the SMS; return the provider's message id. Raises ``SmsSendFailed`` when the provider
        answered no (nothing was sent) and ``SmsOutcomeUnknown`` when no answer came back."""
        ...


@dataclass(frozen=True)
class SmsDelivery:
    message_id: str
    masked_phone: str
    template_id: str
    provider_message_id: str
    sent_at: datetime


class SmsIntentState(StrEnum):
    #: Recorded before the provider is asked; replaced by SENT when it answers.
    SENDING = "SENDING"
    #: A SENDING found without its answer (a lost answer, a container that died mid-send): parked
    #: for an operator, never sent again on its own.
    UNCERTAIN = "UNCERTAIN"
    SENT = "SENT"


@dataclass(frozen=True)
class SmsIntent:
    """What the delivery table holds for a message before (or instead of) its SENT record."""

    message_id: str
    state: SmsIntentState
    masked_phone: str
    template_id: str
    #: When the intent was recorded (or taken over for a resend).
    since: datetime


class SmsDeliveryLog(Protocol):
    def find(self, message_id: str) -> SmsDelivery | None:
        """The SENT record of the message, or None (nothing recorded, or only an intent)."""
        ...

    def intent(self, message_id: str) -> SmsIntent | None:
        """What is recorded for the message, whatever its state; None when nothing is."""
        ...

    def begin(self, intent: SmsIntent) -> bool:
        """Record SENDING, only when nothing is recorded for the message; False otherwise."""
        ...

    def move(self, message_id: str, *, from_state: SmsIntentState, to: SmsIntent) -> bool:
        """Replace the message's record, only while it is in ``from_state``; False otherwise."""
        ...

    def clear(self, message_id: str) -> None:
        """Forget a SENDING intent (the provider answered no: nothing was sent)."""
        ...

    def record(self, delivery: SmsDelivery, *, only_from: SmsIntentState | None = None) -> bool:
        """Record SENT (the provider's answer, or an operator's word); with ``only_from``, only while
        the message's record is in that state. False when it was not (nothing written)."""
        ...


class Clock(Protocol):
    def now(self) -> datetime: ...


class WebhookSecrets(Protocol):
    def current(self) -> list[str]:
        """The secrets a callback may be signed with: the current one and, mid-rotation, the previous."""
        ...


# --- operations: admin API, reconciliation, retention ---------------------------------------------


@dataclass(frozen=True)
class MessageFilter:
    """Which outbox rows an operator means: every field narrows the selection; None means any."""

    statuses: tuple[int, ...] = ()
    topic: str | None = None
    business_key: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "status": list(self.statuses) or None,
            "topic": self.topic,
            "businessKey": self.business_key,
            "from": self.created_from.isoformat() if self.created_from else None,
            "to": self.created_to.isoformat() if self.created_to else None,
        }


@dataclass(frozen=True)
class AuditEntry:
    actor: str
    action: str
    filters: dict[str, object]
    affected_count: int
    reason: str
    created_at: datetime


@dataclass(frozen=True)
class StatusCounts:
    pending: int
    sent: int
    failed: int
    #: Pending rows whose due time has passed (what the relay should be working on now).
    due: int
    oldest_due_at: datetime | None


@dataclass(frozen=True)
class ErrorRow:
    """A row that failed, or is retrying after a failure: what triage groups (never its content)."""

    id: int
    message_id: str
    topic: str
    status: OutboxStatus
    attempts: int
    last_error: str | None
    #: When its last attempt failed (its last update).
    seen_at: datetime


class OutboxOperationsRepository(Protocol):
    """What operators need from ``message_record`` beyond the relay's own queries."""

    def list_messages(
        self, where: MessageFilter, *, after_id: int | None, limit: int
    ) -> list[OutboxMessage]: ...
    def requeue_candidates(
        self, where: MessageFilter, *, now: datetime, include_sent: bool, limit: int
    ) -> list[OutboxMessage]: ...
    def requeue(
        self, ids: Sequence[int], *, now: datetime, include_sent: bool, reset_attempts: bool = False
    ) -> int: ...
    def status_counts(self, *, now: datetime) -> StatusCounts: ...
    def error_rows(self, *, limit: int) -> list[ErrorRow]: ...
    def mark_resolved(self, ids: Sequence[int], *, now: datetime) -> int: ...
    def record_audit(self, entry: AuditEntry) -> int: ...
    def paid_orders_without_messages(self, *, paid_since: datetime, limit: int) -> list[Order]: ...
    def failed_messages(self, *, limit: int) -> tuple[int, list[OutboxMessage]]: ...
    def failed_since(self, since: datetime, *, limit: int) -> list[OutboxMessage]: ...
    def sent_between(
        self,
        *,
        sent_from: datetime,
        sent_to: datetime,
        topics: Sequence[str],
        after: SentCursor | None,
        limit: int,
    ) -> list[OutboxMessage]: ...
    def sent_ids_before(self, cutoff: datetime, *, limit: int) -> list[int]: ...
    def messages_by_ids(self, ids: Sequence[int]) -> list[OutboxMessage]: ...
    def delete_sent(self, ids: Sequence[int], *, sent_before: datetime) -> int: ...


class OperationsUnitOfWork(UnitOfWork, Protocol):
    @property
    def operations(self) -> OutboxOperationsRepository: ...


class OperationsUnitOfWorkFactory(Protocol):
    def __call__(self) -> OperationsUnitOfWork: ...


class PointsLedgerReader(Protocol):
    def entries_for_order(self, user_id: int, order_id: int) -> list[dict[str, Any]]: ...


class SmsDeliveryLookup(Protocol):
    def find(self, message_id: str) -> SmsDelivery | None: ...


@dataclass(frozen=True)
class SentCursor:
    """Where a page of sent rows ended: the (sent_time, id) of its last row."""

    sent_time: datetime
    id: int


@dataclass(frozen=True)
class StuckIdempotencyRecord:
    key: str
    status: str
    #: Epoch seconds at which the record itself expires.
    expiration: int | None
    #: Epoch milliseconds at which the in-progress lock ended (None when Powertools had no context).
    in_progress_expiration: int | None


class IdempotencyRecords(Protocol):
    def stuck_in_progress(self, *, now_epoch_seconds: float) -> list[StuckIdempotencyRecord]:
        """Every INPROGRESS record whose lock has expired, whatever the table's size."""
        ...


class MessageArchive(Protocol):
    def store(self, key: str, lines: Sequence[str]) -> str:
        """Write the JSON lines as one object; return where it went. Raises if it could not."""
        ...


class ApplicationUser(Protocol):
    def ensure(self, username: str, password: str) -> None:
        """Create the application's database user if missing, set its password, grant it row access."""
        ...


class SchemaMigrations(Protocol):
    def upgrade_to_head(self) -> None:
        """Apply every pending migration; a no-op when the schema is already at the newest revision."""
        ...

    def current_revision(self) -> str | None:
        """The revision the database is at, or None before its first migration."""
        ...


@dataclass(frozen=True)
class DeadLetterQueueState:
    name: str
    dlq_url: str
    target_url: str
    #: Messages waiting (SQS's approximate count), and those received but not yet deleted.
    depth: int
    in_flight: int
    #: The earliest first-sent time among the messages peeked (SQS names no oldest message).
    oldest_sent_at: datetime | None
    peeked: int


@dataclass(frozen=True)
class DeadLetterMove:
    moved: int
    #: Messages the target refused: they stay in the DLQ.
    failed: int
    #: The DLQ answered empty before the bound was reached.
    drained: bool


class DeadLetterQueues(Protocol):
    """The stack's DLQs, each with the queue its messages go back to."""

    def names(self) -> list[str]: ...
    def state(self, name: str) -> DeadLetterQueueState: ...
    def move(self, name: str, *, max_messages: int) -> DeadLetterMove: ...
