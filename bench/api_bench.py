"""Payment callback latency through the real handler, and commit-to-publish latency of the after-commit
publish path, measured together: every real callback is timed end to end and at its commit and its
PublishBatch acknowledgement."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from bench.data import QueueDrainer, due_messages, reset_outbox
from bench.env import QUEUES, WEBHOOK_SECRET, BenchWorld
from bench.stats import Section, Target, median, median_ratio, percentile
from payment_outbox import timeouts
from payment_outbox.adapters.db.engine import make_engine
from payment_outbox.adapters.db.schema import OrderRow
from payment_outbox.adapters.sns_publisher import message_attributes
from payment_outbox.clock import SystemClock
from payment_outbox.domain.orders import OrderStatus
from payment_outbox.domain.signature import sign


def _notify_body(order_no: str, amount: str, transaction_id: str) -> str:
    return json.dumps(
        {
            "orderNo": order_no,
            "transactionId": transaction_id,
            "amount": amount,
            "currency": "CNY",
            "paidAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    )


def _create_orders(count: int) -> list[tuple[str, str]]:
    from payment_outbox.adapters.aws import AwsClients
    from payment_outbox.composition.database import connect_database
    from payment_outbox.services.payments import NewOrder, PaymentService
    from payment_outbox.settings import DatabaseSettings

    database = connect_database(DatabaseSettings(), AwsClients())
    service = PaymentService(database.unit_of_work, SystemClock(), after_commit_lease=timedelta(seconds=60))
    created = []
    for i in range(count):
        order = service.create_order(NewOrder(1_000 + i % 97, "+8613812345678", Decimal("128.50"), "CNY"))
        created.append((order.order_no, f"{order.amount:.2f}"))
    database.engine.dispose()
    return created


def _create_orders_via_api(world: BenchWorld, count: int) -> tuple[list[tuple[str, str]], list[float]]:
    """Orders created by POST /orders through the real PaymentApi handler, each timed."""
    import json

    world.functions.cold_start("PaymentApiFunction")
    created, elapsed_ms = [], []
    for i in range(count):
        body = json.dumps(
            {"userId": 1_000 + i % 97, "phone": "+8613812345678", "amount": "128.50", "currency": "CNY"}
        )
        started = time.perf_counter()
        response = world.functions.call_api("POST", "/orders", body, {"Content-Type": "application/json"})
        elapsed_ms.append((time.perf_counter() - started) * 1000)
        if response.status not in (200, 201):
            raise RuntimeError(f"create order answered {response.status}: {response.body}")
        created.append((response.body["orderNo"], "128.50"))
    return created, elapsed_ms


class _Marks:
    """Timestamps of one callback: its commits (Session after_commit) and its PublishBatch answers."""

    def __init__(self) -> None:
        self.commits: list[float] = []
        self.publishes: list[float] = []

    def clear(self) -> None:
        self.commits.clear()
        self.publishes.clear()


def callback_latency(
    world: BenchWorld,
    *,
    samples: int,
    rounds: int,
    progress: Callable[[str], None],
    bare_publishes: bool = False,
    delay_ms: float | None = None,
) -> tuple[Section, Section]:
    """With ``bare_publishes`` (the latency SNS run) the bare transaction is followed by one
    PublishBatch of the order's two messages through a client configured as the after-commit path's:
    the least a callback that publishes after its commit can do."""
    from sqlalchemy import event

    from bench.env import on_new_clients
    from payment_outbox.adapters.aws import new_client
    from payment_outbox.settings import OutboxSettings

    engine = make_engine(world.database_url)
    reset_outbox(engine)
    per_round = max(1, samples // rounds)
    warmup = 10
    if bare_publishes:  # the create request through the real handler too: its duration is a figure
        real_orders, create_ms = _create_orders_via_api(world, per_round * rounds + warmup)
    else:
        real_orders, create_ms = _create_orders(per_round * rounds + warmup), []
    bare_orders = _create_orders(per_round * rounds)
    clock = SystemClock()

    def real_call(order_no: str, amount: str, txn: str) -> float:
        body = _notify_body(order_no, amount, txn)
        headers = {"X-Signature": sign(body.encode(), WEBHOOK_SECRET, int(time.time()))}
        started = time.perf_counter()
        response = world.functions.call_api("POST", "/payments/notify", body, headers)
        elapsed = time.perf_counter() - started
        if response.status != 200 or response.body.get("status") != OrderStatus.PAID:
            raise RuntimeError(f"callback answered {response.status}: {response.body}")
        return elapsed

    # The bare side's SNS client, configured as the after-commit path's; made here, before the hook
    # below that marks the handler's own PublishBatch answers.
    bare_sns = (
        new_client(
            "sns",
            budget=timeouts.after_commit_publish(OutboxSettings().outbox_immediate_publish_timeout_seconds),
        )
        if bare_publishes
        else None
    )
    bare_entries = [
        {"Id": str(i), "Message": m.content, "MessageAttributes": message_attributes(m)}
        for i, m in enumerate(due_messages(2))
    ]

    def bare_call(order_no: str, txn: str) -> float:
        """The least a callback can do: one UPDATE of the order, committed (and, with
        ``bare_publishes``, one PublishBatch of its two messages)."""
        started = time.perf_counter()
        now = clock.now()
        with engine.begin() as conn:
            conn.execute(
                update(OrderRow)
                .where(OrderRow.order_no == order_no)
                .values(status=OrderStatus.PAID.value, pay_time=now, payment_txn_id=txn, updated_at=now)
            )
        if bare_sns is not None:
            bare_sns.publish_batch(TopicArn=world.topic_arn, PublishBatchRequestEntries=bare_entries)
        return time.perf_counter() - started

    marks = _Marks()
    # Transaction ids are unique per run: both callback runs pay orders in the same database.
    run = "latency-" if bare_publishes else "moto-"

    def on_commit(_session: Session) -> None:
        marks.commits.append(time.perf_counter())

    def on_publish(**_: Any) -> None:
        marks.publishes.append(time.perf_counter())

    def hook_publish(client: Any) -> None:
        client.meta.events.register("after-call.sns.PublishBatch", on_publish)

    # Hook the PublishBatch answer of the after-commit path: the handler's own SNS client, which its
    # fresh container creates during the warm-up.
    world.functions.cold_start("PaymentApiFunction")
    with QueueDrainer([world.queue_url(q) for q in QUEUES]), on_new_clients("sns", hook_publish) as sns:
        for i, (order_no, amount) in enumerate(real_orders[:warmup]):
            real_call(order_no, amount, f"{run}warm-{i}")
            bare_call(bare_orders[i % len(bare_orders)][0], f"{run}warm-bare-{i}")
        # And the commits of the callback.
        event.listen(Session, "after_commit", on_commit)
        real_ms: list[list[float]] = []
        bare_ms: list[list[float]] = []
        before_commit_ms: list[float] = []
        after_commit_ms: list[float] = []
        to_publish: list[list[float]] = []
        to_sent: list[list[float]] = []
        try:
            index = warmup
            for round_no in range(rounds):
                real_round, bare_round = [], []
                publish_round: list[float] = []
                sent_round: list[float] = []
                for j in range(per_round):
                    order_no, amount = real_orders[index]
                    bare_no, _ = bare_orders[index - warmup]
                    txn = f"{run}txn-{index}"
                    if j % 2:
                        bare_round.append(bare_call(bare_no, "bare-" + txn) * 1000)
                    marks.clear()
                    started = time.perf_counter()
                    real_round.append(real_call(order_no, amount, txn) * 1000)
                    if len(marks.commits) >= 2 and marks.publishes:
                        before_commit_ms.append((marks.commits[0] - started) * 1000)
                        after_commit_ms.append(real_round[-1] - before_commit_ms[-1])
                        publish_round.append((marks.publishes[0] - marks.commits[0]) * 1000)
                        sent_round.append((marks.commits[1] - marks.commits[0]) * 1000)
                    if not j % 2:
                        bare_round.append(bare_call(bare_no, "bare-" + txn) * 1000)
                    index += 1
                real_ms.append(real_round)
                bare_ms.append(bare_round)
                to_publish.append(publish_round)
                to_sent.append(sent_round)
                progress(
                    f"callback round {round_no + 1}/{rounds}: real p50 {percentile(real_round, 50):.2f} ms, "
                    f"bare p50 {percentile(bare_round, 50):.2f} ms"
                )
        finally:
            event.remove(Session, "after_commit", on_commit)
            for client in sns:
                client.meta.events.unregister("after-call.sns.PublishBatch", on_publish)
    reset_outbox(engine)
    engine.dispose()

    real_p50, real_p99 = round_percentiles(real_ms, 50), round_percentiles(real_ms, 99)
    bare_p50, bare_p99 = round_percentiles(bare_ms, 50), round_percentiles(bare_ms, 99)
    p50_ratio = median_ratio(real_p50, bare_p50)
    p99_ratio = median_ratio(real_p99, bare_p99)
    before_commit_p50 = percentile(before_commit_ms, 50)
    after_commit_p50 = percentile(after_commit_ms, 50)
    publish_p50 = median(round_percentiles(to_publish, 50))
    publish_p99 = median(round_percentiles(to_publish, 99))
    sent_p50, sent_p99 = median(round_percentiles(to_sent, 50)), median(round_percentiles(to_sent, 99))
    samples_seen = sum(len(r) for r in to_publish)
    latency = (
        Section("latency_callback", "Payment callback against the latency SNS")
        if bare_publishes
        else Section("callback_latency", "Payment callback latency")
    )
    write_path_ratio = before_commit_p50 / median(bare_p50)
    latency.figures = {
        "samples_per_round": per_round,
        "rounds": rounds,
        "real_handler_ms": {"p50": median(real_p50), "p99": median(real_p99)},
        "bare_update_ms": {"p50": median(bare_p50), "p99": median(bare_p99)},
        "real_over_bare": {"p50": p50_ratio, "p99": p99_ratio},
        "real_handler_breakdown_ms_p50": {
            "request_to_commit": before_commit_p50,
            "commit_to_response": after_commit_p50,
        },
        "write_path_over_bare_p50": write_path_ratio,
        "rounds_p50_ms": {"real": real_p50, "bare": bare_p50},
        "create_order_ms": (
            {"p50": percentile(create_ms[warmup:], 50), "p99": percentile(create_ms[warmup:], 99)}
            if create_ms
            else None
        ),
        "bare_publishes": bare_publishes,
        "delay_ms": delay_ms,
    }
    if bare_publishes:
        latency.targets = [
            Target("Callback p50 vs bare order UPDATE + one PublishBatch (latency SNS)", p50_ratio, "<=", 1.5)
        ]
        publish = Section("latency_commit_to_publish", "Commit-to-publish latency")
        return _with_publish(
            latency, publish, samples_seen, rounds, publish_p50, publish_p99, sent_p50, sent_p99
        )
    latency.targets = [Target("Callback p50 latency vs bare order UPDATE", p50_ratio, "<=", 2.0)]

    publish = Section("commit_to_publish", "Commit-to-publish latency (after-commit publish path)")
    return _with_publish(latency, publish, samples_seen, rounds, publish_p50, publish_p99, sent_p50, sent_p99)


def _with_publish(
    latency: Section,
    publish: Section,
    samples_seen: int,
    rounds: int,
    publish_p50: float,
    publish_p99: float,
    sent_p50: float,
    sent_p99: float,
) -> tuple[Section, Section]:
    publish.figures = {
        "samples": samples_seen,
        "rounds": rounds,
        "commit_to_publish_ack_ms": {"p50": publish_p50, "p99": publish_p99},
        "commit_to_marked_sent_ms": {"p50": sent_p50, "p99": sent_p99},
    }
    return latency, publish


def round_percentiles(values: list[list[float]], pct: float) -> list[float]:
    return [percentile(v, pct) for v in values if v]
