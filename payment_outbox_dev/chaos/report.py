"""What every chaos run checks and reports, whatever its faults: per paid order two outbox rows SENT,
one ledger entry and the exact balance per user, one SMS recorded and sent, and nothing left on the
consumers' queues or their dead-letter queues. Both fault sources (``inprocess``: injected at the
boto3 boundary; ``kill``: SIGKILLs against a live stack) read the system through a ``SystemView`` and
end in its ``check_invariants`` and a ``ChaosReport``.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TextIO

CONSUMERS = {"PointsQueue": "PointsConsumerFunction", "SmsQueue": "SmsConsumerFunction"}
DEAD_LETTER_QUEUES = ("PointsDeadLetterQueue", "SmsDeadLetterQueue")
TOPIC_POINTS, TOPIC_SMS = "topic.points", "topic.sms"
#: The longest a run stays silent while orders are being paid, seconds.
PROGRESS_EVERY_SECONDS = 5.0


@dataclass(frozen=True)
class PaidOrder:
    order_id: int
    order_no: str
    user_id: int
    amount: str


@dataclass
class Progress:
    """What a long run says while it runs: each phase as it starts, and how far it got (``done`` of
    ``total`` ``unit``) at most every ``every`` seconds and when it is complete. ``stream`` None: a
    silent run (the tests)."""

    title: str
    total: int
    stream: TextIO | None = None
    unit: str = "orders paid"
    every: float = PROGRESS_EVERY_SECONDS
    clock: Callable[[], float] = time.monotonic
    _started: float = field(init=False)
    _last_said: float = field(init=False)

    def __post_init__(self) -> None:
        self._started = self._last_said = self.clock()

    def phase(self, text: str) -> None:
        self._say(text)

    def done(self, count: int) -> None:
        now = self.clock()
        if count >= self.total or now - self._last_said >= self.every:
            self._say(f"{count}/{self.total} {self.unit}")

    def _say(self, text: str) -> None:
        now = self.clock()
        self._last_said = now
        if self.stream is not None:
            self.stream.write(f"{self.title}: {text} ({now - self._started:.0f} s)\n")
            self.stream.flush()


@dataclass
class ChaosReport:
    orders: int
    seed: int
    database: str
    elapsed_seconds: float = 0.0
    title: str = "chaos run"
    #: False for a run that sees no publish or delivery from inside (the kill run drives HTTP only).
    counts_inside: bool = True
    #: What a run adds to the standard lines (e.g. the kill run's kills and restarts).
    notes: list[str] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
    callbacks: int = 0
    publishes: int = 0
    duplicate_publishes: int = 0
    deliveries: int = 0
    ledger_entries: int = 0
    sms_records: int = 0
    sms_sent: int = 0
    duplicate_effects: int = 0
    #: SMS parked as uncertain, then decided as the runbook says: marked delivered (the provider's log
    #: shows them), or resent by the operator (it does not).
    sms_uncertain_delivered: int = 0
    sms_uncertain_resent: int = 0
    lost_messages: int = 0
    rows_pending: int = 0
    rows_failed: int = 0
    dead_letters: int = 0
    left_on_queues: int = 0
    drain_rounds: int = 0
    #: Errors the run met that no fault rule injected (e.g. a relay invocation failing), for reading.
    unexpected_errors: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and not any(
            (
                self.duplicate_effects,
                self.lost_messages,
                self.rows_pending,
                self.rows_failed,
                self.dead_letters,
                self.left_on_queues,
            )
        )

    def render(self) -> str:
        lines = [
            f"{self.title}: {self.orders} orders, seed {self.seed}, database {self.database}, "
            f"{self.elapsed_seconds:.1f} s",
            *self.notes,
            f"faults injected: {sum(self.faults.values())}",
            *(f"  {count:6d}  {kind}" for kind, count in sorted(self.faults.items(), key=lambda kv: -kv[1])),
            f"callbacks sent:               {self.callbacks}",
            *(
                [
                    f"publishes (SNS accepted):     {self.publishes}",
                    f"duplicate publishes seen:     {self.duplicate_publishes}",
                    f"records delivered to consumers: {self.deliveries}",
                ]
                if self.counts_inside
                else []
            ),
            f"ledger entries / SMS records / SMS sent: {self.ledger_entries} / {self.sms_records} / "
            f"{self.sms_sent}",
            *([f"drain rounds after healing:   {self.drain_rounds}"] if self.counts_inside else []),
            f"duplicate effects:            {self.duplicate_effects}  (must be 0)",
            f"SMS parked as uncertain:      {self.sms_uncertain_delivered + self.sms_uncertain_resent}  "
            f"(then marked delivered: {self.sms_uncertain_delivered}, resent by the operator: "
            f"{self.sms_uncertain_resent})",
            f"lost messages:                {self.lost_messages}  (must be 0)",
            f"rows left pending:            {self.rows_pending}  (must be 0)",
            f"rows failed (gave up):        {self.rows_failed}  (must be 0)",
            f"dead letters:                 {self.dead_letters}  (must be 0)",
            f"messages left on queues:      {self.left_on_queues}  (must be 0)",
        ]
        if self.unexpected_errors:
            lines.append("errors met without an injected fault (retried):")
            lines.extend(f"  {count:6d}  {kind}" for kind, count in sorted(self.unexpected_errors.items()))
        lines.extend(f"PROBLEM: {p}" for p in self.problems[:20])
        lines.append("RESULT: " + ("OK - every paid order applied exactly once" if self.ok else "FAILED"))
        return "\n".join(lines)


@dataclass(frozen=True)
class SystemView:
    """What a chaos run's checks read of the system it drove: the database, the DynamoDB and SQS
    clients, the template's resources by logical id (``refs``), and the SMS provider's delivery log
    (``sms_texts``, read anew each time: the runbook's resends add to it). Both fault sources drain
    against ``backlog``, then end in ``decide_uncertain_sms`` and ``check_invariants``."""

    db: Any
    dynamodb: Any
    sqs: Any
    refs: dict[str, str]
    sms_texts: Callable[[], list[str]]

    def backlog(self) -> int:
        """What is still to be done: outbox rows neither sent nor given up, and messages on the
        consumers' queues (visible or in flight). A healed run has none."""
        from sqlalchemy import text

        with self.db.connect() as conn:
            pending = int(
                conn.execute(text("SELECT COUNT(*) FROM message_record WHERE status = 0")).scalar_one()
            )
        return pending + queued(self.sqs, [self.refs[queue] for queue in CONSUMERS])

    def decide_uncertain_sms(self, report: ChaosReport, decide: Callable[[str, str], int]) -> None:
        """For each SMS parked as uncertain, what the runbook has an operator do (docs/operations.md,
        *Uncertain SMS*): the provider's log shows it went out → mark it delivered; it does not →
        resend it. ``decide(messageId, action)`` calls the admin API, returns its status."""
        from sqlalchemy import bindparam, text

        parked = [
            item["messageId"]["S"]
            for item in scan(self.dynamodb, self.refs["SmsDeliveriesTable"])
            if item.get("state", {}).get("S") == "UNCERTAIN"
        ]
        if not parked:
            return
        query = text("SELECT message_id, business_key FROM message_record WHERE message_id IN :ids")
        with self.db.connect() as conn:
            rows = conn.execute(query.bindparams(bindparam("ids", expanding=True)), {"ids": parked}).all()
        order_of = {str(message_id): str(order_no) for message_id, order_no in rows}
        sent_for = sms_sent_per_order(self.sms_texts())
        for message_id in parked:
            action = "mark-delivered" if sent_for[order_of.get(message_id, "")] else "resend"
            status = decide(message_id, action)
            if status != 200:
                report.problems.append(f"uncertain SMS {message_id}: {action} answered {status}")
            elif action == "resend":
                report.sms_uncertain_resent += 1
            else:
                report.sms_uncertain_delivered += 1

    def check_invariants(self, report: ChaosReport, orders: list[PaidOrder]) -> None:
        """What every chaos run checks once healed, per paid order: two outbox rows, both SENT; one
        ledger entry (its points message) and the exact balance per user; one SMS delivery record and
        one SMS sent; and nothing left on the consumers' queues or their dead-letter queues. ``orders``
        are the paid orders (``order_id``, ``order_no``, ``user_id``, ``amount``); findings go into
        ``report``. Only SENT delivery records count: an SMS parked as uncertain must have been
        decided (``decide_uncertain_sms``), and a second SMS sent for an order is a duplicate."""
        from sqlalchemy import bindparam, text

        rows: dict[str, list[Any]] = defaultdict(list)
        statuses: dict[int, str] = {}
        order_nos = [o.order_no for o in orders]
        with self.db.connect() as conn:
            for start in range(0, len(order_nos), 500):
                chunk = order_nos[start : start + 500]
                for row in conn.execute(
                    text(
                        "SELECT message_id, topic, status, business_key FROM message_record"
                        " WHERE business_key IN :keys"
                    ).bindparams(bindparam("keys", expanding=True)),
                    {"keys": chunk},
                ):
                    rows[row.business_key].append(row)
                for order_id, status in conn.execute(
                    text("SELECT id, status FROM orders WHERE order_no IN :keys").bindparams(
                        bindparam("keys", expanding=True)
                    ),
                    {"keys": chunk},
                ):
                    statuses[int(order_id)] = str(status)
        credits: dict[int, list[str]] = defaultdict(list)
        balances: dict[int, int] = {}
        for item in scan(self.dynamodb, self.refs["PointsTable"]):
            user_id = int(item["pk"]["S"].removeprefix("USER#"))
            if item["sk"]["S"] == "BALANCE":
                balances[user_id] = int(item["balance"]["N"])
            else:
                credits[int(item["orderId"]["N"])].append(item["messageId"]["S"])
        # SENT records only (an item without a state predates intents).
        records = Counter(
            i["messageId"]["S"]
            for i in scan(self.dynamodb, self.refs["SmsDeliveriesTable"])
            if i.get("state", {}).get("S", "SENT") == "SENT"
        )
        sms_texts = self.sms_texts()
        sent_for = sms_sent_per_order(sms_texts)
        report.ledger_entries = sum(len(v) for v in credits.values())
        report.sms_records = sum(records.values())
        report.sms_sent = len(sms_texts)

        expected: dict[int, int] = defaultdict(int)
        for order in orders:
            expected[order.user_id] += int(Decimal(order.amount))
            if statuses.get(order.order_id) != "PAID":
                report.problems.append(f"order {order.order_no} is {statuses.get(order.order_id)}, not PAID")
            by_topic = {r.topic: r for r in rows[order.order_no]}
            if len(rows[order.order_no]) != 2 or set(by_topic) != {TOPIC_POINTS, TOPIC_SMS}:
                report.problems.append(f"order {order.order_no} has {len(rows[order.order_no])} outbox rows")
                report.lost_messages += max(0, 2 - len(by_topic))
            for row in rows[order.order_no]:
                report.rows_pending += int(row.status == 0)
                report.rows_failed += int(row.status == 2)
            entries = credits.get(order.order_id, [])
            if not entries:
                report.lost_messages += 1
                report.problems.append(f"order {order.order_no}: never credited")
            report.duplicate_effects += max(0, len(entries) - 1)
            points_row = by_topic.get(TOPIC_POINTS)
            if entries and points_row is not None and entries != [points_row.message_id]:
                report.problems.append(f"order {order.order_no}: ledger entry is not its points message")
            sms_row = by_topic.get(TOPIC_SMS)
            if sms_row is None or records[sms_row.message_id] == 0 or sent_for[order.order_no] == 0:
                report.lost_messages += int(sms_row is not None)
                report.problems.append(f"order {order.order_no}: SMS not recorded or not sent")
            report.duplicate_effects += max(0, sent_for[order.order_no] - 1)
        for user_id, total in expected.items():
            balance = balances.get(user_id, 0)
            if balance != total:
                report.problems.append(f"user {user_id}: balance {balance}, expected {total}")
                report.duplicate_effects += int(balance > total)
        report.dead_letters = queued(self.sqs, [self.refs[q] for q in DEAD_LETTER_QUEUES])
        report.left_on_queues = queued(self.sqs, [self.refs[q] for q in CONSUMERS])


def emulator_sms_texts(emulator_url: str) -> list[str]:
    """Every SMS a live stack's emulator took (its provider's delivery log)."""
    import json
    import urllib.request

    with urllib.request.urlopen(f"{emulator_url}/_emulator/sms", timeout=30) as response:  # noqa: S310  # nosec B310
        texts: list[str] = json.loads(response.read())
    return texts


def sms_sent_per_order(sms_texts: list[str]) -> Counter[str]:
    """SMS the provider took, per order number ("Payment received for order <orderNo>: <amount>...")."""
    sent_for: Counter[str] = Counter()
    for sms_text in sms_texts:
        sent_for[sms_text.split("order ", 1)[-1].split(":", 1)[0]] += 1
    return sent_for


def queued(sqs: Any, urls: list[str]) -> int:
    """Messages on the queues, visible or in flight."""
    total = 0
    for url in urls:
        attributes = sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        total += int(attributes["ApproximateNumberOfMessages"])
        total += int(attributes["ApproximateNumberOfMessagesNotVisible"])
    return total


def scan(
    dynamodb: Any,
    table: str,
    filter_expression: str | None = None,
    names: dict[str, str] | None = None,
    values: dict[str, Any] | None = None,
) -> Iterator[dict[str, Any]]:
    """Every item of a table (or those the filter keeps), page after page, consistently read."""
    request: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    if filter_expression:
        request.update(
            FilterExpression=filter_expression,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )
    while True:
        page = dynamodb.scan(**request)
        yield from page.get("Items", [])
        if "LastEvaluatedKey" not in page:
            return
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
