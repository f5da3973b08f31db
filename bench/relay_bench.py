"""Relay throughput (the real relay against a naive one and against bare PublishBatch calls), and
several relays draining one backlog."""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Engine, create_engine, select, update

from bench.data import QueueDrainer, count_by_status, due_messages, insert_messages, reset_outbox
from bench.env import QUEUES, BenchWorld
from bench.stats import Section, Target, median, median_ratio, table
from payment_outbox.adapters.db.engine import make_engine
from payment_outbox.adapters.db.schema import MessageRecordRow
from payment_outbox.adapters.sns_publisher import MAX_BATCH_ENTRIES, SnsPublisher, message_attributes
from payment_outbox.clock import SystemClock
from payment_outbox.domain.outbox import OutboxMessage, OutboxStatus
from payment_outbox.ports import PublishOutcome


def real_relay_drain() -> int:
    """The deployed relay, as the scheduled handler builds it: SqlUnitOfWork + SnsPublisher."""
    from payment_outbox.composition.relay import build_outbox_relay

    relay = build_outbox_relay()
    published = 0
    while True:
        report = relay.relay_due_messages()
        published += report.published
        if report.claimed == 0:
            return published


def naive_relay_drain(engine: Engine, topic_arn: str, batch: int = 100) -> int:
    """The seed's way: read pending rows, then per row one SNS Publish and one UPDATE in its own commit."""
    import boto3

    sns: Any = boto3.client("sns")
    published = 0
    clock = SystemClock()
    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                select(
                    MessageRecordRow.id,
                    MessageRecordRow.message_id,
                    MessageRecordRow.topic,
                    MessageRecordRow.content,
                )
                .where(
                    MessageRecordRow.status == int(OutboxStatus.PENDING),
                    MessageRecordRow.next_retry_at <= clock.now(),
                )
                .order_by(MessageRecordRow.id)
                .limit(batch)
            ).all()
        if not rows:
            return published
        for row in rows:
            sns.publish(
                TopicArn=topic_arn,
                Message=row.content,
                MessageAttributes={
                    "topic": {"DataType": "String", "StringValue": row.topic},
                    "messageId": {"DataType": "String", "StringValue": row.message_id},
                },
            )
            now = clock.now()
            with engine.begin() as conn:
                conn.execute(
                    update(MessageRecordRow)
                    .where(MessageRecordRow.id == row.id)
                    .values(status=int(OutboxStatus.SENT), sent_time=now, update_time=now)
                )
            published += 1


def publish_chunk(sns: Any, topic_arn: str, chunk: Sequence[OutboxMessage]) -> int:
    """One PublishBatch of up to 10 payloads, no database: the unit of every limit loop."""
    response = sns.publish_batch(
        TopicArn=topic_arn,
        PublishBatchRequestEntries=[
            {"Id": str(i), "Message": m.content, "MessageAttributes": message_attributes(m)}
            for i, m in enumerate(chunk)
        ],
    )
    if response.get("Failed"):
        raise RuntimeError(f"PublishBatch failed entries: {response['Failed']}")
    return len(chunk)


def publish_batch_limit(messages: Sequence[OutboxMessage], topic_arn: str) -> int:
    """The ceiling: the same payloads in PublishBatch calls of 10, one after another, no database."""
    import boto3

    sns: Any = boto3.client("sns")
    for start in range(0, len(messages), MAX_BATCH_ENTRIES):
        publish_chunk(sns, topic_arn, messages[start : start + MAX_BATCH_ENTRIES])
    return len(messages)


def relay_throughput(
    world: BenchWorld, *, rows: int, rounds: int, progress: Callable[[str], None]
) -> Section:
    engine = make_engine(world.database_url)
    drainer_urls = [world.queue_url(q) for q in QUEUES]
    rates: dict[str, list[float]] = {"real": [], "naive": [], "limit": []}
    #: CPU this thread spends per message (the queue drainer runs on another thread).
    cpu_ms: dict[str, list[float]] = {"real": [], "naive": [], "limit": []}

    def timed(variant: str) -> float:
        reset_outbox(engine)
        messages = due_messages(rows)
        insert_messages(engine, messages)
        with QueueDrainer(drainer_urls):
            started, cpu_started = time.perf_counter(), time.thread_time()
            if variant == "real":
                done = real_relay_drain()
            elif variant == "naive":
                done = naive_relay_drain(engine, world.topic_arn)
            else:
                done = publish_batch_limit(messages, world.topic_arn)
            elapsed = time.perf_counter() - started
            cpu_ms[variant].append((time.thread_time() - cpu_started) * 1000 / rows)
        if done != rows:
            raise RuntimeError(f"{variant} relay published {done} of {rows} rows")
        if variant != "limit" and count_by_status(engine) != {int(OutboxStatus.SENT): rows}:
            raise RuntimeError(f"{variant} relay left rows unsent: {count_by_status(engine)}")
        return rows / elapsed

    timed("real")  # warm-up: connections, clients, caches; not counted
    cpu_ms["real"].clear()
    order = ["real", "naive", "limit"]
    for round_no in range(rounds):
        # Rotate the order so that drift on the machine does not always favour the same variant.
        for variant in order[round_no % 3 :] + order[: round_no % 3]:
            rates[variant].append(timed(variant))
        progress(
            f"relay round {round_no + 1}/{rounds}: "
            + ", ".join(f"{v} {rates[v][-1]:.0f} msg/s" for v in order)
        )
    reset_outbox(engine)
    engine.dispose()

    vs_naive = median_ratio(rates["real"], rates["naive"])
    vs_limit = median_ratio(rates["real"], rates["limit"])
    section = Section("relay_throughput", "1. Relay throughput (due rows to SNS)")
    section.figures = {
        "rows_per_run": rows,
        "rounds": rounds,
        "messages_per_second_median": {v: median(r) for v, r in rates.items()},
        "messages_per_second_rounds": rates,
        "real_over_naive_median": vs_naive,
        "real_over_limit_median": vs_limit,
        "cpu_ms_per_message_median": {v: median(c) for v, c in cpu_ms.items()},
    }
    section.markdown = [
        f"{rows} due rows per run (points and SMS envelopes of paid orders), {rounds} rounds, "
        "variants in rotating order; figures are medians of the rounds.",
        "",
        *table(
            ["Variant", "messages/s (median)", "rounds"],
            [
                [
                    "real relay (OutboxRelay + SqlUnitOfWork + SnsPublisher, batch 50)",
                    median(rates["real"]),
                    ", ".join(f"{r:.0f}" for r in rates["real"]),
                ],
                [
                    "naive relay (Publish + UPDATE/commit per row)",
                    median(rates["naive"]),
                    ", ".join(f"{r:.0f}" for r in rates["naive"]),
                ],
                [
                    "limit (bare PublishBatch loop, no database)",
                    median(rates["limit"]),
                    ", ".join(f"{r:.0f}" for r in rates["limit"]),
                ],
            ],
        ),
        "",
        f"Real / naive: **{vs_naive:.2f}x**; real / limit: **{vs_limit:.2f}x** "
        "(medians of per-round ratios).",
        "",
        "CPU of the driving thread per message (median): "
        + ", ".join(f"{v} {median(c):.3f} ms" for v, c in cpu_ms.items())
        + " — the rest of each run is waiting on the network, the database and the emulator.",
    ]
    section.notes = [
        "All three variants publish to the same moto server, whose per-message work (filter policies, "
        "delivery to SQS inside the call) is the same for each; it narrows every ratio towards 1, so "
        "the real-over-naive figure here understates what real SNS latency would show.",
    ]
    section.targets = [
        Target("Relay throughput vs naive relay", vs_naive, ">=", 5.0),
        Target("Relay throughput vs bare PublishBatch limit", vs_limit, ">=", 0.7),
    ]
    return section


# --- several relays ---------------------------------------------------------------------------------


class _RecordingPublisher:
    """The real SnsPublisher, noting every message id SNS accepted."""

    def __init__(self, inner: SnsPublisher) -> None:
        self._inner = inner
        self.published: list[str] = []

    def publish(self, messages: Sequence[OutboxMessage]) -> PublishOutcome:
        outcome = self._inner.publish(messages)
        self.published.extend(outcome.published)
        return outcome


def _relay_worker(ready: Any, start: Any, results: Any) -> None:
    """One relay process: build the real relay, wait for the start signal, drain until nothing is due."""

    from payment_outbox.adapters.aws import AwsClients
    from payment_outbox.composition.database import connect_database
    from payment_outbox.composition.relay import outbox_relay
    from payment_outbox.settings import DatabaseSettings, OutboxSettings

    settings, clients = OutboxSettings(), AwsClients()
    database = connect_database(DatabaseSettings(), clients)
    sns = clients.factory("sns")
    publisher = _RecordingPublisher(SnsPublisher(sns, settings.order_events_topic_arn))
    relay = outbox_relay(settings, database, publisher)
    with database.unit_of_work() as tx:  # connect before the clock starts; claims nothing
        tx.outbox.get("warm-up")
    sns()
    ready.put(os.getpid())
    start.wait()
    while relay.relay_due_messages().claimed:
        pass
    results.put((os.getpid(), publisher.published))


def concurrent_relays(
    world: BenchWorld, *, rows: int, rounds: int, relays: Sequence[int], progress: Callable[[str], None]
) -> Section:
    engine = create_engine(world.database_url)
    context = multiprocessing.get_context("spawn")
    rates: dict[int, list[float]] = {n: [] for n in relays}
    duplicates: dict[int, int] = {n: 0 for n in relays}
    missing: dict[int, int] = {n: 0 for n in relays}
    drainer_urls = [world.queue_url(q) for q in QUEUES]
    for round_no in range(rounds):
        for count in relays:
            reset_outbox(engine)
            ready, start, results = context.Queue(), context.Event(), context.Queue()
            workers = [
                context.Process(target=_relay_worker, args=(ready, start, results)) for _ in range(count)
            ]
            for worker in workers:
                worker.start()
            for _ in workers:  # every worker has imported, connected and built its relay
                ready.get(timeout=120)
            insert_messages(engine, due_messages(rows))
            with QueueDrainer(drainer_urls):
                started = time.perf_counter()
                start.set()
                published: Counter[str] = Counter()
                for _ in workers:
                    _pid, ids = results.get(timeout=300)
                    published.update(ids)
                elapsed = time.perf_counter() - started
            for worker in workers:
                worker.join(timeout=30)
            duplicates[count] += sum(n - 1 for n in published.values() if n > 1)
            sent = count_by_status(engine).get(int(OutboxStatus.SENT), 0)
            missing[count] += rows - sent
            rates[count].append(rows / elapsed)
        progress(
            f"concurrent relays round {round_no + 1}/{rounds}: "
            + ", ".join(f"{n}: {rates[n][-1]:.0f} msg/s" for n in relays)
        )
    reset_outbox(engine)
    engine.dispose()

    one = relays[0]
    section = Section("concurrent_relays", "3. Several relays on one backlog")
    scaling = {n: median_ratio(rates[n], rates[one]) for n in relays}
    section.figures = {
        "rows_per_run": rows,
        "rounds": rounds,
        "messages_per_second_median": {str(n): median(rates[n]) for n in relays},
        "messages_per_second_rounds": {str(n): rates[n] for n in relays},
        "throughput_over_one_relay_median": {str(n): scaling[n] for n in relays},
        "rows_published_twice": {str(n): duplicates[n] for n in relays},
        "rows_left_unsent": {str(n): missing[n] for n in relays},
    }
    section.markdown = [
        f"{rows} due rows per run, drained by N relay processes started together "
        f"(each the real OutboxRelay, batch 50, SKIP LOCKED claims); {rounds} rounds.",
        "",
        *table(
            ["Relays", "messages/s (median)", "vs 1 relay", "rows published twice", "rows left unsent"],
            [[n, median(rates[n]), f"{scaling[n]:.2f}x", duplicates[n], missing[n]] for n in relays],
        ),
    ]
    total_duplicates = sum(duplicates.values())
    section.targets = [
        Target("Rows published twice by concurrent relays (all runs)", total_duplicates, "<=", 0),
    ]
    if 2 in relays:
        section.targets.append(Target("Throughput with 2 relays vs 1", scaling[2], ">=", 1.0))
    return section
