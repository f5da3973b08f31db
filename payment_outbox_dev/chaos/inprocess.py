"""The chaos run: many paid orders through the real handlers with random faults at every boundary, then
healing, draining, and a check that nothing was lost and nothing applied twice.

    python -m payment_outbox_dev.chaos.inprocess --orders 1000 --seed 7            # SQLite in a temp folder
    python -m payment_outbox_dev.chaos.inprocess --database-url mysql+pymysql://root@127.0.0.1:3306/chaos

Orders are created and paid through the payment API, published by the immediate publish and the
scheduled relay, and consumed from SQS by the points and SMS consumers, all in-process on moto (as in
``payment_outbox_dev.demo.embedded``). While it runs, seeded faults hit the boto3 calls the adapters make
(``payment_outbox_dev.local.faults``): SNS throttling, errors, partly failed batches and lost answers; the
process dying after the payment commit or after a publish; DynamoDB errors and consumer deaths; the
SMS provider refusing; plus duplicate SQS deliveries, duplicate callbacks and relay runs overlapping
the callbacks and the immediate publish. Faults per message stay below the retry budgets (publish
attempts, SQS receives): exhausting those is the FAILED / dead-letter path, tested on its own.

Then the faults stop, time is skipped ahead (due times, in-progress locks, visibility timeouts) and
the relay and consumers run until nothing is left. The report counts the faults injected and checks,
per order: two outbox rows, both sent; one ledger entry and the balance; one SMS delivery record and
one SMS sent. The exit code is non-zero if any of that fails.

The seed fixes the orders and every fault decision. A relay looping in a background thread
(``--overlap-rate``) makes the interleaving, and so the exact fault counts, vary from run to run;
with ``--overlap-rate 0`` a seed replays the same faults exactly.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import tempfile
import threading
import time
import uuid
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

CHAOS_WEBHOOK_SECRET = "chaos-webhook-secret"  # noqa: S105 - signs its own callbacks  # nosec B105

PAYMENT_API = "PaymentApiFunction"
RELAY = "OutboxRelayFunction"
CONSUMERS = {"PointsQueue": "PointsConsumerFunction", "SmsQueue": "SmsConsumerFunction"}
DEAD_LETTER_QUEUES = ("PointsDeadLetterQueue", "SmsDeadLetterQueue")
TOPIC_POINTS, TOPIC_SMS = "topic.points", "topic.sms"


@dataclass(frozen=True)
class ChaosConfig:
    orders: int = 1000
    seed: int = 7
    #: None: SQLite in a temporary folder.
    database_url: str | None = None
    root: Path | None = None
    #: Orders created and paid between two relay runs / consumer passes.
    wave_size: int = 25
    #: Chance that a call at a faulted boundary (an SNS publish, a consumer's DynamoDB call) fails.
    fault_rate: float = 0.15
    #: Chance of a duplicate callback, of a duplicate SQS delivery, of a relay running during a wave.
    duplicate_rate: float = 0.1
    overlap_rate: float = 0.3
    #: Template parameters, e.g. {"OrderedDelivery": "true"} for the FIFO topic and queues.
    parameters: dict[str, str] = field(default_factory=dict)


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
    #: SMS sent again because the SMS consumer died between the provider's send and the delivery
    #: record (docs/reliability.md, known limits); only the kill run, bounded by its kills.
    sms_resent: int = 0
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
            *(
                [f"SMS resent after a kill between send and record: {self.sms_resent}  (known limit)"]
                if not self.counts_inside
                else []
            ),
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


def run_chaos(config: ChaosConfig) -> ChaosReport:
    root = config.root or _find_root(Path.cwd())
    with _isolated_environment(), tempfile.TemporaryDirectory(prefix="payment-outbox-chaos-") as scratch:
        database_url = config.database_url or f"sqlite:///{scratch}/chaos.db"
        from moto import mock_aws

        with mock_aws(), _quiet_output():
            return _ChaosRun(config, root, database_url).execute()


# --- the run ---------------------------------------------------------------------------------------------


@dataclass
class _Order:
    order_id: int
    order_no: str
    user_id: int
    amount: str


class _ChaosRun:
    def __init__(self, config: ChaosConfig, root: Path, database_url: str) -> None:
        import boto3
        from sqlalchemy import create_engine
        from sqlalchemy.engine import make_url

        from payment_outbox.migrations.runner import upgrade
        from payment_outbox_dev.checks.template import load_template
        from payment_outbox_dev.local.faults import FaultInjector
        from payment_outbox_dev.local.harness import LocalFunctions
        from payment_outbox_dev.local.provision import provision

        self.config = config
        self.rng = random.Random(config.seed)  # noqa: S311 - reproducible chaos  # nosec B311
        template = load_template(root / "template.yaml")
        self.resources = provision(template, parameters=config.parameters)
        overrides = {
            "DATABASE_URL": database_url,
            "WEBHOOK_SECRET": CHAOS_WEBHOOK_SECRET,
            "POWERTOOLS_LOG_LEVEL": "CRITICAL",
            # One publish request in flight: the seed fixes every fault decision only while the
            # relay's calls come in one order (concurrent requests are tested on their own).
            "RELAY_MAX_IN_FLIGHT": "1",
        }
        environments = self.resources.environments(template, overrides)
        self.functions = LocalFunctions(root, template, environments)
        for environment in environments.values():
            os.environ.update(environment)
        self.db = create_engine(database_url)
        upgrade(self.db)
        self.report = ChaosReport(config.orders, config.seed, make_url(database_url).get_backend_name())
        self.sqs: Any = boto3.client("sqs")
        self.dynamodb: Any = boto3.client("dynamodb")
        self.max_attempts = int(self.resources.parameters["OutboxMaxAttempts"])
        self.max_receives = min(
            int(template["Resources"][q]["Properties"]["RedrivePolicy"]["maxReceiveCount"]) for q in CONSUMERS
        )
        self.injector = FaultInjector(seed=config.seed + 1)
        self.orders: list[_Order] = []
        self.published: Counter[str] = Counter()
        self.in_flight: dict[str, list[str]] = defaultdict(list)
        #: Per outbox message: publish attempts failed by a fault, and deaths around its publish.
        self.attempt_faults: Counter[str] = Counter()
        self.kills: Counter[str] = Counter()
        self.consumer_faults_allowed = False
        self._lock = threading.Lock()
        self._install_rules()
        self.injector.observe(self._count_publish)

    # --- faults -----------------------------------------------------------------------------------------

    def _install_rules(self) -> None:
        from payment_outbox_dev.local.faults import Call, FailCall, FailEntries, Kill, LoseResponse, RunFirst

        rng, injector = self.rng, self.injector
        attempts_left = self.max_attempts - 2

        def attempts_allowed(call: Call) -> bool:
            with self._lock:
                if any(self.attempt_faults[m] >= attempts_left for m in call.message_ids):
                    return False
                self.attempt_faults.update(call.message_ids)
                return True

        def kill_allowed(call: Call) -> bool:
            with self._lock:
                if any(self.kills[m] >= 2 for m in call.message_ids):
                    return False
                self.kills.update(call.message_ids)
                return True

        def payment_api(call: Call) -> bool:
            return call.function == PAYMENT_API

        sns_faults: list[tuple[Any, dict[str, Any]]] = [
            (FailCall("Throttling", 400, "Rate exceeded", kind="sns throttling"), {"when": attempts_allowed}),
            (FailCall("InternalError", 500, kind="sns internal error"), {"when": attempts_allowed}),
            (
                FailEntries(select=lambda _i, _e: rng.random() < 0.5, kind="sns batch entries failed"),
                {"when": attempts_allowed},
            ),
            (LoseResponse(kind="sns answer lost after publishing"), {"when": attempts_allowed}),
            (
                Kill(kind="crash after commit, before immediate publish"),
                {"when": lambda c: payment_api(c) and kill_allowed(c)},
            ),
            (Kill(after=True, kind="crash after publish, before mark sent"), {"when": kill_allowed}),
            (
                RunFirst(self._relay_overlapping, kind="relay run overlapping the immediate publish"),
                {"when": payment_api},
            ),
        ]
        rate = self.config.fault_rate / len(sns_faults)
        for fault, options in sns_faults:
            # The order matters: the chance is per rule, and the first rule that fires wins.
            injector.add(fault, "sns", "publish_batch", probability=rate, **options)

        def consumer(call: Call) -> bool:
            return self.consumer_faults_allowed

        def table(logical_id: str) -> Any:
            name = self.resources.refs[logical_id]
            return lambda call: self.consumer_faults_allowed and call.table == name

        consumer_faults: list[tuple[Any, str, str, Any]] = [
            (
                FailCall("ThrottlingException", 400, kind="dynamodb ledger throttled"),
                "dynamodb",
                "transact_write_items",
                consumer,
            ),
            (
                FailCall("InternalServerError", 500, kind="dynamodb ledger internal error"),
                "dynamodb",
                "transact_write_items",
                consumer,
            ),
            (
                Kill(after=True, kind="points consumer killed after crediting (INPROGRESS left)"),
                "dynamodb",
                "transact_write_items",
                consumer,
            ),
            (
                FailCall(
                    "ProvisionedThroughputExceededException", 400, kind="dynamodb idempotency put failed"
                ),
                "dynamodb",
                "put_item",
                table("IdempotencyTable"),
            ),
            (
                FailCall("InternalServerError", 500, kind="dynamodb idempotency completion failed"),
                "dynamodb",
                "update_item",
                table("IdempotencyTable"),
            ),
            (
                FailCall("InternalServerError", 500, kind="dynamodb SMS delivery lookup failed"),
                "dynamodb",
                "get_item",
                table("SmsDeliveriesTable"),
            ),
            (
                Kill(after=True, kind="SMS consumer killed after recording the SMS"),
                "dynamodb",
                "put_item",
                table("SmsDeliveriesTable"),
            ),
            (FailCall("Throttling", 400, kind="SMS provider throttled"), "sns", "publish", consumer),
        ]
        rate = self.config.fault_rate / 3
        for fault, service, operation, when in consumer_faults:
            injector.add(fault, service, operation, when=when, probability=rate)

    def _count_publish(self, call: Any, response: Any) -> None:
        if call.operation != "publish_batch":
            return
        from payment_outbox_dev.local.faults import entry_message_id

        by_entry = {e["Id"]: entry_message_id(e) for e in call.entries}
        with self._lock:
            for ok in response.get("Successful", []):
                self.published[by_entry[ok["Id"]]] += 1

    def _relay_overlapping(self, call: Any) -> None:
        """The immediate publish stalls past its hand-off lease: a scheduled run takes the same rows."""
        from sqlalchemy import text

        with self.db.begin() as conn:
            for message_id in call.message_ids:
                conn.execute(
                    text("UPDATE message_record SET next_retry_at = :due WHERE message_id = :id"),
                    {"due": _now() - timedelta(seconds=1), "id": message_id},
                )
        worker = threading.Thread(target=self._run_relay, name="overlapping-relay")
        worker.start()
        worker.join(timeout=60)

    # --- driving ----------------------------------------------------------------------------------------

    def execute(self) -> ChaosReport:
        started = time.monotonic()
        with self.injector.installed():
            # Warm every function once, faults off, so no two threads build one cached client at once.
            self.injector.enabled = False
            self._run_relay()
            self.injector.enabled = True
            for start in range(0, self.config.orders, self.config.wave_size):
                self._wave(min(self.config.wave_size, self.config.orders - start))
            self.injector.heal()
            self._drain()
        self.report.faults = self.injector.counts
        self._verify()
        self.report.elapsed_seconds = time.monotonic() - started
        self.functions.close()
        self.db.dispose()
        return self.report

    def _wave(self, size: int) -> None:
        stop = threading.Event()
        background: threading.Thread | None = None
        if self.injector.chance(self.config.overlap_rate):
            self.injector.count("relay running throughout the callbacks")
            background = threading.Thread(target=self._relay_loop, args=(stop,), name="background-relay")
            background.start()
        try:
            for _ in range(size):
                self._pay(self._create_order())
        finally:
            stop.set()
            if background is not None:
                background.join(timeout=120)
        self._advance_time()
        self._relay_until_idle()
        self._consume()

    def _create_order(self) -> _Order:
        users = max(1, self.config.orders // 5)
        amount = f"{Decimal(self.rng.randint(1, 99_999)) / 100:.2f}"
        user_id = self.rng.randint(1, users)
        phone = f"+86138{self.rng.randint(0, 99_999_999):08d}"
        created = self.functions.call_api(
            "POST", "/orders", json.dumps({"userId": user_id, "phone": phone, "amount": amount})
        )
        if created.status != 201:
            raise RuntimeError(f"order creation failed: {created.status} {created.body}")
        order = _Order(int(created.body["orderId"]), str(created.body["orderNo"]), user_id, amount)
        self.orders.append(order)
        return order

    def _pay(self, order: _Order) -> None:
        from payment_outbox_dev.local.faults import ProcessKilled

        body = json.dumps(
            {
                "orderNo": order.order_no,
                "transactionId": f"txn-{order.order_no}",
                "amount": order.amount,
                "paidAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        )
        for _attempt in range(6):
            self.report.callbacks += 1
            try:
                response = self.functions.call_api("POST", "/payments/notify", body, self._signed(body))
            except ProcessKilled:
                continue  # no answer: the provider calls again
            except Exception as exc:  # the function failed: the provider calls again
                self.report.unexpected_errors[f"payment callback: {type(exc).__name__}"] += 1
                continue
            if response.status == 200:
                break
            self.report.problems.append(f"callback for {order.order_no} answered {response.status}")
            return
        else:
            self.report.problems.append(f"callback for {order.order_no} never answered 200")
            return
        if self.injector.enabled and self.injector.chance(self.config.duplicate_rate):
            self.injector.count("duplicate callback")
            self.report.callbacks += 1
            try:
                replay = self.functions.call_api("POST", "/payments/notify", body, self._signed(body))
            except ProcessKilled:
                return
            if replay.status != 200:
                self.report.problems.append(f"duplicate callback for {order.order_no}: {replay.status}")

    @staticmethod
    def _signed(body: str) -> dict[str, str]:
        from payment_outbox.domain.signature import sign

        return {"X-Signature": sign(body.encode(), CHAOS_WEBHOOK_SECRET, int(time.time()))}

    def _run_relay(self) -> int:
        from payment_outbox_dev.local.faults import ProcessKilled

        try:
            result: dict[str, Any] = self.functions.run_scheduled(RELAY)
        except ProcessKilled:
            return 0
        except Exception as exc:  # the invocation failed; the schedule runs it again
            self.report.unexpected_errors[f"relay run: {type(exc).__name__}"] += 1
            return 0
        return int(result["claimed"])

    def _relay_loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._run_relay()
            stop.wait(0.01)

    def _relay_until_idle(self) -> None:
        for _ in range(100):
            if self._run_relay() == 0:
                return

    def _consume(self) -> None:
        for queue, function in CONSUMERS.items():
            while self._deliver(queue, function):
                pass

    def _deliver(self, queue: str, function: str) -> int:
        """One batch as Lambda's poller hands it over; failures stay invisible until their visibility
        timeout (which ``_advance_time`` skips), a dead consumer settles nothing."""
        from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

        from payment_outbox_dev.local.faults import ProcessKilled
        from payment_outbox_dev.local.harness import sqs_event

        url = self.resources.queue_url(queue)
        messages: list[dict[str, Any]] = self.sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"], MessageAttributeNames=["All"]
        ).get("Messages", [])
        if not messages:
            return 0
        self.report.deliveries += len(messages)
        receives = max(int(m["Attributes"]["ApproximateReceiveCount"]) for m in messages)
        # The last receives before the dead-letter queue are left alone: faults stay within the budget.
        self.consumer_faults_allowed = self.injector.enabled and receives < self.max_receives - 1
        failed: set[str]
        try:
            response = self.functions.invoke(
                function, sqs_event(messages, self.resources.attributes[(queue, "Arn")])
            )
            failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
        except ProcessKilled:
            failed = {m["MessageId"] for m in messages}
        except BatchProcessingError:
            failed = {m["MessageId"] for m in messages}
        finally:
            self.consumer_faults_allowed = False
        done = [m for m in messages if m["MessageId"] not in failed]
        self.in_flight[url].extend(m["ReceiptHandle"] for m in messages if m["MessageId"] in failed)
        if done:
            self.sqs.delete_message_batch(
                QueueUrl=url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
            )
        for message in done:
            if self.injector.enabled and self.injector.chance(self.config.duplicate_rate):
                # At-least-once: SQS hands the same message over again.
                self.injector.count("duplicate SQS delivery")
                self._send_again(url, message)
        return len(messages)

    def _send_again(self, url: str, message: dict[str, Any]) -> None:
        again: dict[str, Any] = {"QueueUrl": url, "MessageBody": message["Body"]}
        group = message.get("Attributes", {}).get("MessageGroupId")
        if group is not None:
            # A FIFO queue: the copy joins the message's group, under an id the queue has not seen.
            again |= {"MessageGroupId": group, "MessageDeduplicationId": uuid.uuid4().hex}
        self.sqs.send_message(**again)

    def _advance_time(self) -> None:
        """Skip ahead: due times and hand-off leases reached, in-progress locks and visibility timeouts
        over. (Nothing runs concurrently when this is called.)"""
        from sqlalchemy import text

        with self.db.begin() as conn:
            conn.execute(
                text("UPDATE message_record SET next_retry_at = :due WHERE status = 0"),
                {"due": _now() - timedelta(seconds=1)},
            )
        table = self.resources.refs["IdempotencyTable"]
        past = str(int(time.time() * 1000) - 1000)
        for item in _scan(
            self.dynamodb, table, "#s = :inprogress", {"#s": "status"}, {":inprogress": {"S": "INPROGRESS"}}
        ):
            self.dynamodb.update_item(
                TableName=table,
                Key={"id": item["id"]},
                UpdateExpression="SET in_progress_expiration = :past",
                ExpressionAttributeValues={":past": {"N": past}},
            )
        for url, handles in self.in_flight.items():
            for handle in handles:
                self.sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=0)
            handles.clear()

    def _drain(self) -> None:
        for round_number in range(1, 51):
            self._advance_time()
            self._relay_until_idle()
            self._consume()
            self.report.drain_rounds = round_number
            if self._pending_rows() == 0 and self._queued() == 0 and not any(self.in_flight.values()):
                return

    def _pending_rows(self) -> int:
        from sqlalchemy import text

        with self.db.connect() as conn:
            pending = conn.execute(text("SELECT COUNT(*) FROM message_record WHERE status = 0"))
            return int(pending.scalar_one())

    def _queued(self, queues: tuple[str, ...] = tuple(CONSUMERS)) -> int:
        total = 0
        for queue in queues:
            attributes = self.sqs.get_queue_attributes(
                QueueUrl=self.resources.queue_url(queue),
                AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
            )["Attributes"]
            total += int(attributes["ApproximateNumberOfMessages"])
            total += int(attributes["ApproximateNumberOfMessagesNotVisible"])
        return total

    # --- checking ---------------------------------------------------------------------------------------

    def _verify(self) -> None:
        from moto.sns.models import sns_backends

        from payment_outbox_dev.local.harness import ACCOUNT, REGION

        report = self.report
        report.publishes = sum(self.published.values())
        report.duplicate_publishes = sum(n - 1 for n in self.published.values() if n > 1)
        sms_texts = [message for _phone, message, *_ in sns_backends[ACCOUNT][REGION].sms_messages.values()]
        check_invariants(
            report,
            self.orders,
            db=self.db,
            dynamodb=self.dynamodb,
            sqs=self.sqs,
            refs=self.resources.refs,
            sms_texts=sms_texts,
        )


def check_invariants(
    report: ChaosReport,
    orders: list[Any],
    *,
    db: Any,
    dynamodb: Any,
    sqs: Any,
    refs: dict[str, str],
    sms_texts: list[str],
    sms_resends_allowed: int = 0,
) -> None:
    """What every chaos run checks once healed, per paid order: two outbox rows, both SENT; one ledger
    entry (its points message) and the exact balance per user; one SMS delivery record and one SMS
    sent; and nothing left on the consumers' queues or their dead-letter queues. ``orders`` are the
    paid orders (``order_id``, ``order_no``, ``user_id``, ``amount``); findings go into ``report``.

    ``sms_resends_allowed``: how many SMS may have gone out twice because a consumer was killed
    between the provider's send and the delivery record (the kill run's deaths of SMS consumers
    mid-invocation); a second SMS beyond that, or any without exactly one record, is a duplicate."""
    from sqlalchemy import bindparam, text

    rows: dict[str, list[Any]] = defaultdict(list)
    statuses: dict[int, str] = {}
    order_nos = [o.order_no for o in orders]
    with db.connect() as conn:
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
    for item in _scan(dynamodb, refs["PointsTable"]):
        user_id = int(item["pk"]["S"].removeprefix("USER#"))
        if item["sk"]["S"] == "BALANCE":
            balances[user_id] = int(item["balance"]["N"])
        else:
            credits[int(item["orderId"]["N"])].append(item["messageId"]["S"])
    records = Counter(i["messageId"]["S"] for i in _scan(dynamodb, refs["SmsDeliveriesTable"]))
    sent_for: Counter[str] = Counter()
    for sms_text in sms_texts:
        # "Payment received for order <orderNo>: <amount>. ..."
        sent_for[sms_text.split("order ", 1)[-1].split(":", 1)[0]] += 1
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
        extra_sms = max(0, sent_for[order.order_no] - 1)
        recorded_once = sms_row is not None and records[sms_row.message_id] == 1
        resent = min(extra_sms, sms_resends_allowed - report.sms_resent) if recorded_once else 0
        report.sms_resent += resent
        report.duplicate_effects += extra_sms - resent
    for user_id, total in expected.items():
        balance = balances.get(user_id, 0)
        if balance != total:
            report.problems.append(f"user {user_id}: balance {balance}, expected {total}")
            report.duplicate_effects += int(balance > total)
    report.dead_letters = queued(sqs, [refs[q] for q in DEAD_LETTER_QUEUES])
    report.left_on_queues = queued(sqs, [refs[q] for q in CONSUMERS])


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


# --- helpers ---------------------------------------------------------------------------------------------


def _now() -> Any:
    from payment_outbox.clock import SystemClock

    return SystemClock().now()


def _scan(
    dynamodb: Any,
    table: str,
    filter_expression: str | None = None,
    names: dict[str, str] | None = None,
    values: dict[str, Any] | None = None,
) -> Iterator[dict[str, Any]]:
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


@contextmanager
def _isolated_environment() -> Iterator[None]:
    """Emulator credentials and settings for the run; the caller's environment is restored after."""
    saved = dict(os.environ)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_DEFAULT_PROFILE"):
        os.environ.pop(name, None)
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "chaos",
            "AWS_SECRET_ACCESS_KEY": "chaos",  # emulator credentials  # nosec B105
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_METRICS_NAMESPACE": "PaymentOutbox",
        }
    )
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextmanager
def _quiet_output() -> Iterator[None]:
    """Injected faults make the application log warnings by the thousand, and every invocation prints
    its metrics: the report says it all, so the run's own output goes nowhere."""
    names = ("payment_outbox", "botocore", "aws_lambda_powertools")
    levels = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        with open(os.devnull, "w") as sink, redirect_stdout(sink), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _find_root(start: Path) -> Path:
    for candidate in (start, *start.parents):
        if (candidate / "template.yaml").is_file():
            return candidate
    raise SystemExit("template.yaml not found: run from the project folder (or pass --root)")


def _parameter(text: str) -> tuple[str, str]:
    name, separator, value = text.partition("=")
    if not separator or not name:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return name, value


def main(argv: list[str] | None = None) -> int:
    import sys

    arguments = list(sys.argv[1:] if argv is None else argv)
    if "--kill" in arguments:
        from payment_outbox_dev.chaos import kill as chaos_kill

        arguments.remove("--kill")
        return chaos_kill.main(arguments)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=ChaosConfig.orders)
    parser.add_argument("--seed", type=int, default=ChaosConfig.seed)
    parser.add_argument("--database-url", default=None, help="SQLAlchemy URL (default: SQLite, temporary)")
    parser.add_argument("--root", type=Path, default=None, help="project folder holding template.yaml")
    parser.add_argument("--fault-rate", type=float, default=ChaosConfig.fault_rate)
    parser.add_argument("--wave-size", type=int, default=ChaosConfig.wave_size)
    parser.add_argument("--duplicate-rate", type=float, default=ChaosConfig.duplicate_rate)
    parser.add_argument(
        "--overlap-rate",
        type=float,
        default=ChaosConfig.overlap_rate,
        help="chance of a relay looping in a thread during a wave; 0 makes a seed replay exactly",
    )
    parser.add_argument(
        "--parameter-overrides",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="template parameters, e.g. OrderedDelivery=true (FIFO topic and queues)",
    )
    args = parser.parse_args(argv)
    report = run_chaos(
        ChaosConfig(
            orders=args.orders,
            seed=args.seed,
            database_url=args.database_url,
            root=args.root,
            fault_rate=args.fault_rate,
            wave_size=args.wave_size,
            duplicate_rate=args.duplicate_rate,
            overlap_rate=args.overlap_rate,
            parameters=dict(_parameter(text) for text in args.parameter_overrides),
        )
    )
    print(report.render(), flush=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
