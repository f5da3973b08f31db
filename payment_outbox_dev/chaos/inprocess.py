"""The in-process fault source: many paid orders through the real handlers with random faults at every
boundary, then healing, draining, and a check that nothing was lost and nothing applied twice.

    payment-outbox chaos --orders 1000 --seed 7            # SQLite in a temp folder (make chaos)
    payment-outbox chaos --database-url mysql+pymysql://root@127.0.0.1:3306/chaos

Orders are created and paid through the payment API, published by the after-commit publish and the
scheduled relay, and consumed from SQS by the points and SMS consumers, all in-process on moto (as in
``payment_outbox_dev.demo.embedded``). While it runs, seeded faults hit the boto3 calls the adapters
make (``payment_outbox_dev.local.faults``, the rules in ``inprocess_faults``): SNS throttling,
errors, partly failed batches and lost answers; the process dying after the payment commit or after a
publish; DynamoDB errors and consumer deaths; the SMS provider refusing; plus duplicate SQS
deliveries, duplicate callbacks and relay runs overlapping the callbacks and the after-commit publish.
Faults per message stay below the retry budgets (publish attempts, SQS receives): exhausting those is
the FAILED / dead-letter path, tested on its own.

Then the faults stop, time is skipped ahead (due times, in-progress locks, visibility timeouts) and
the relay and consumers run until nothing is left. The report counts the faults injected and checks
the invariants every chaos run checks (``payment_outbox_dev.chaos.report``): per order two outbox
rows, both sent; one ledger entry and the balance; one SMS delivery record and one SMS sent.

The seed fixes the orders and every fault decision. Time passes only when the run says so: retry
waits and leases are longer than any run (``WAIT_SECONDS``), so no row falls due by the wall clock
while a relay polls, and the run skips time ahead between waves. A relay looping in a background
thread (``--overlap-rate``), for which failed rows fall due as it polls, makes the interleaving, and
so the exact fault counts, vary from the first wave that has one; with ``--overlap-rate 0`` a seed
replays the same faults exactly.
"""

from __future__ import annotations

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

from payment_outbox_dev.arguments import find_root
from payment_outbox_dev.chaos.inprocess_faults import FaultRules
from payment_outbox_dev.chaos.report import CONSUMERS, ChaosReport, PaidOrder, Progress, SystemView, scan
from payment_outbox_dev.local.callback import callback_body
from payment_outbox_dev.local.harness import ACCOUNT_VARIABLES, emulator_environment

CHAOS_WEBHOOK_SECRET = "chaos-webhook-secret-signs-its-own-callbacks"  # noqa: S105 - signs its own callbacks  # nosec B105
RELAY = "OutboxRelayFunction"
#: The run's retry waits and leases: far beyond any function's timeout (the relay's is 60 s).
WAIT_SECONDS = 3600


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


def run_chaos(config: ChaosConfig, progress: Progress | None = None) -> ChaosReport:
    root = config.root or find_root(Path.cwd())
    progress = progress or Progress("chaos run", config.orders)
    with _isolated_environment(), tempfile.TemporaryDirectory(prefix="payment-outbox-chaos-") as scratch:
        database_url = config.database_url or f"sqlite:///{scratch}/chaos.db"
        from moto import mock_aws

        with mock_aws(), _quiet_output():
            return _ChaosRun(config, root, database_url, progress).execute()


# --- the run ---------------------------------------------------------------------------------------------


class _ChaosRun:
    def __init__(self, config: ChaosConfig, root: Path, database_url: str, progress: Progress) -> None:
        import boto3
        from sqlalchemy import create_engine
        from sqlalchemy.engine import make_url

        from payment_outbox.adapters.db.migration import upgrade
        from payment_outbox_dev.checks.template import load_template
        from payment_outbox_dev.local.faults import FaultInjector
        from payment_outbox_dev.local.harness import LocalFunctions
        from payment_outbox_dev.local.provision import provision

        self.config = config
        self.progress = progress
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
            # A row waiting for its retry or its lease falls due only when the run says so (it skips
            # time ahead), never by the wall clock while a relay polls within its run: which rows a
            # relay finds due, and so the faults drawn for their publishes, must not hang on timing.
            "OUTBOX_BACKOFF_BASE_SECONDS": str(WAIT_SECONDS),
            "OUTBOX_BACKOFF_MAX_SECONDS": str(WAIT_SECONDS),
            "OUTBOX_LEASE_SECONDS": str(WAIT_SECONDS),
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
        self.system = SystemView(self.db, self.dynamodb, self.sqs, self.resources.refs, _sms_texts)
        self.max_attempts = int(self.resources.parameters["OutboxMaxAttempts"])
        self.max_receives = min(
            int(template["Resources"][q]["Properties"]["RedrivePolicy"]["maxReceiveCount"]) for q in CONSUMERS
        )
        self.injector = FaultInjector(seed=config.seed + 1)
        self.orders: list[PaidOrder] = []
        self.published: Counter[str] = Counter()
        self.in_flight: dict[str, list[str]] = defaultdict(list)
        self._lock = threading.Lock()
        self.rules = FaultRules(
            self.injector,
            self.rng,
            fault_rate=config.fault_rate,
            max_attempts=self.max_attempts,
            refs=self.resources.refs,
            relay_overlapping=self._relay_overlapping,
        )
        self.rules.install()
        self.injector.observe(self._count_publish)

    # --- faults -----------------------------------------------------------------------------------------

    def _count_publish(self, call: Any, response: Any) -> None:
        if call.operation != "publish_batch":
            return
        from payment_outbox_dev.local.faults import entry_message_id

        by_entry = {e["Id"]: entry_message_id(e) for e in call.entries}
        with self._lock:
            for ok in response.get("Successful", []):
                self.published[by_entry[ok["Id"]]] += 1

    def _relay_overlapping(self, call: Any) -> None:
        """The after-commit publish stalls past its lease: a scheduled run takes the same rows."""
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
            self.progress.phase(f"paying {self.config.orders} orders with faults injected")
            for start in range(0, self.config.orders, self.config.wave_size):
                self._wave(min(self.config.wave_size, self.config.orders - start))
                self.progress.done(len(self.orders))
            self.injector.heal()
            self.progress.phase("faults off: draining the relay and the consumers")
            self._drain()
        self.report.faults = self.injector.counts
        self.progress.phase("deciding each SMS parked as uncertain, as the runbook says")
        self._decide_uncertain_sms()
        self.progress.phase("checking every order")
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

    def _create_order(self) -> PaidOrder:
        users = max(1, self.config.orders // 5)
        amount = f"{Decimal(self.rng.randint(1, 99_999)) / 100:.2f}"
        user_id = self.rng.randint(1, users)
        phone = f"+86138{self.rng.randint(0, 99_999_999):08d}"
        created = self.functions.call_api(
            "POST", "/orders", json.dumps({"userId": user_id, "phone": phone, "amount": amount})
        )
        if created.status != 201:
            raise RuntimeError(f"order creation failed: {created.status} {created.body}")
        order = PaidOrder(int(created.body["orderId"]), str(created.body["orderNo"]), user_id, amount)
        self.orders.append(order)
        return order

    def _pay(self, order: PaidOrder) -> None:
        from payment_outbox_dev.local.faults import ProcessKilled

        body = callback_body(order.order_no, order.amount, "CNY")
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
        """A scheduled relay polling through a whole wave: the rows whose publish failed fall due for
        it as it polls, as their retry waits would pass within its minute, so it publishes retries
        while the callbacks go on."""
        while not stop.is_set():
            self._retries_fall_due()
            self._run_relay()
            stop.wait(0.01)

    def _retries_fall_due(self) -> None:
        """Rows waiting for a retry (a failed publish recorded its error) made due now; rows a relay or
        the after-commit publish holds are skipped, fresh rows keep their after-commit lease."""
        from sqlalchemy import select, update

        from payment_outbox.adapters.db.schema import MessageRecordRow as Row
        from payment_outbox.domain.outbox import OutboxStatus

        now = _now()
        with self.db.begin() as conn:
            waiting = conn.scalars(
                select(Row.id)
                .where(
                    Row.status == int(OutboxStatus.PENDING),
                    Row.last_error.is_not(None),
                    Row.next_retry_at > now,
                )
                .with_for_update(skip_locked=True)
            ).all()
            if waiting:
                conn.execute(
                    update(Row).where(Row.id.in_(waiting)).values(next_retry_at=now - timedelta(seconds=1))
                )

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
        self.rules.consumer_faults_allowed = self.injector.enabled and receives < self.max_receives - 1
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
            self.rules.consumer_faults_allowed = False
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
        """Skip ahead: due times and after-commit leases reached, in-progress locks and visibility timeouts
        over. (Nothing runs concurrently when this is called.)"""
        from sqlalchemy import text

        with self.db.begin() as conn:
            conn.execute(
                text("UPDATE message_record SET next_retry_at = :due WHERE status = 0"),
                {"due": _now() - timedelta(seconds=1)},
            )
        table = self.resources.refs["IdempotencyTable"]
        past = str(int(time.time() * 1000) - 1000)
        for item in scan(
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
            if self.system.backlog() == 0 and not any(self.in_flight.values()):
                return

    # --- checking ---------------------------------------------------------------------------------------

    def _decide_uncertain_sms(self) -> None:
        """The operator's part of the runbook (docs/operations.md, *Uncertain SMS*), through the admin API."""

        def decide(message_id: str, action: str) -> int:
            body = json.dumps({"reason": "chaos run: the provider's log checked"})
            return self.functions.call_api("POST", f"/admin/sms/{message_id}/{action}", body).status

        self.system.decide_uncertain_sms(self.report, decide)

    def _verify(self) -> None:
        report = self.report
        report.publishes = sum(self.published.values())
        report.duplicate_publishes = sum(n - 1 for n in self.published.values() if n > 1)
        self.system.check_invariants(report, self.orders)


# --- helpers ---------------------------------------------------------------------------------------------


def _sms_texts() -> list[str]:
    """Every SMS moto's SNS took (the provider's delivery log)."""
    from moto.sns.models import sns_backends

    from payment_outbox_dev.local.harness import ACCOUNT, REGION

    return [message for _phone, message, *_ in sns_backends[ACCOUNT][REGION].sms_messages.values()]


def _now() -> Any:
    from payment_outbox.clock import SystemClock

    return SystemClock().now()


@contextmanager
def _isolated_environment() -> Iterator[None]:
    """Emulator credentials and settings for the run; the caller's environment is restored after."""
    saved = dict(os.environ)
    for name in ACCOUNT_VARIABLES:
        os.environ.pop(name, None)
    os.environ.update(emulator_environment("chaos"))
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
