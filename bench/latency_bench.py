"""The relay against the latency SNS (bench/latency_sns.py): what our code costs at a realistic
round trip, with no emulator in the way; and the latency SNS set up for every benchmark that runs
against it (``latency_sns``).

Throughput: the real relay (one invocation, concurrent PublishBatch requests) against a bare loop of
concurrent PublishBatch calls with the same in-flight limit and no database, and against the naive
seed-style relay (one Publish + UPDATE/commit per row); CPU per message and where it goes. Relays
fanned out from a scheduled run are bench/fan_out_bench.py's; the fallback path, bench/fallback_bench.py's.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from bench.data import count_by_status, due_messages, insert_messages, reset_outbox
from bench.latency_sns import LatencySnsProcess
from bench.relay_bench import naive_relay_drain, publish_chunk
from bench.stats import Section, Target, median, median_ratio
from payment_outbox import timeouts
from payment_outbox.adapters.db.engine import make_engine
from payment_outbox.adapters.sns_publisher import MAX_BATCH_ENTRIES, SnsPublisher
from payment_outbox.domain.outbox import OutboxMessage, OutboxStatus

#: The per-call delay of the latency SNS: a realistic PublishBatch round trip to SNS.
DEFAULT_DELAY_MS = 20.0


@dataclass
class LatencyWorld:
    sns: LatencySnsProcess
    database_url: str
    topic_arn: str
    delay_ms: float


@contextmanager
def latency_sns(
    database_url: str, topic_arn: str, delay_ms: float = DEFAULT_DELAY_MS
) -> Iterator[LatencyWorld]:
    """Point every SNS client made from now on in this process (and in processes it spawns) at the
    latency SNS; functions and relays built inside the block make their clients then."""
    with LatencySnsProcess(delay_ms) as sns:
        saved = os.environ.get("AWS_ENDPOINT_URL_SNS")
        os.environ["AWS_ENDPOINT_URL_SNS"] = sns.endpoint  # botocore: per-service endpoint wins
        try:
            yield LatencyWorld(sns, database_url, topic_arn, delay_ms)
        finally:
            if saved is None:
                os.environ.pop("AWS_ENDPOINT_URL_SNS", None)
            else:
                os.environ["AWS_ENDPOINT_URL_SNS"] = saved


def in_flight() -> int:
    from payment_outbox.settings import RelaySettings

    return RelaySettings().relay_max_in_flight


def drain_with_real_relay(relay: Any) -> int:
    """The relay as the scheduled handler builds it, run until nothing is due."""
    published = 0
    while True:
        report = relay.relay_due_messages()
        published += int(report.published)
        if report.claimed == 0:
            return published


def bare_concurrent_publish(
    messages: Sequence[OutboxMessage], topic_arn: str, sns: Any, pool: ThreadPoolExecutor
) -> int:
    """The limit: the same payloads in PublishBatch calls of 10, as many in flight as ``pool`` has
    threads, no database, through a client configured as the relay's."""
    chunks = [messages[i : i + MAX_BATCH_ENTRIES] for i in range(0, len(messages), MAX_BATCH_ENTRIES)]

    return sum(pool.map(lambda chunk: publish_chunk(sns, topic_arn, chunk), chunks))


#: Where a PublishBatch call's own CPU goes, by the module a profiled function lives in.
_CATEGORIES = (
    ("waiting (network, locks)", ("recv_into", "select", "poll", "acquire", "sleep", "wait")),
    ("botocore: build the request (validate, serialize)", ("botocore/serialize", "botocore/validate")),
    ("botocore: sign it (SigV4)", ("botocore/auth", "botocore/signers", "hashlib", "hmac", "_hashlib")),
    ("botocore: parse the XML answer", ("botocore/parsers", "xml", "expat")),
    ("HTTP: urllib3, http.client, sockets", ("urllib3", "http/client", "socket", "ssl", "email")),
    ("botocore: events, endpoint, retries, the rest", ("botocore", "boto3", "dateutil")),
    ("payment_outbox publisher (entries, outcome)", ("payment_outbox",)),
)


def _category(filename: str, function: str) -> str:
    where = f"{filename} {function}".lower()
    if filename == "~":  # a builtin: judge by its name alone
        where = function.lower()
    for name, needles in _CATEGORIES:
        if any(n in where for n in needles):
            return name
    return "other (stdlib, builtins)"


class _CpuMeter:
    """Thread CPU seconds spent inside a callable, summed over every thread that calls it."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._lock = threading.Lock()

    def wrap(self, function: Callable[..., Any]) -> Callable[..., Any]:
        def measured(*args: Any, **kwargs: Any) -> Any:
            started = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                spent = time.thread_time() - started
                with self._lock:
                    self.seconds += spent

        return measured


class _MeteredPublisher:
    def __init__(self, inner: SnsPublisher, meter: _CpuMeter) -> None:
        self.publish = meter.wrap(inner.publish)


def profile_real_relay(engine: Engine, rows: int, topic_arn: str) -> dict[str, Any]:
    """CPU per message of one real relay run, split by part: claims and records (the driving
    thread's database work), the publish requests (the pool threads), the rest (the relay's loop,
    the pool); and a PublishBatch call's own CPU split by where it goes (cProfile of sequential
    calls, waiting left out)."""
    from payment_outbox.adapters.aws import AwsClients
    from payment_outbox.composition.database import connect_database
    from payment_outbox.composition.relay import outbox_relay, relay_publisher
    from payment_outbox.settings import DatabaseSettings, OutboxSettings

    limit = in_flight()
    claims, records, publishes = _CpuMeter(), _CpuMeter(), _CpuMeter()
    clients, settings = (
        AwsClients(),
        OutboxSettings().model_copy(update={"order_events_topic_arn": topic_arn}),
    )
    publisher = relay_publisher(settings, clients, max_in_flight=limit)
    database = connect_database(DatabaseSettings(), clients)
    relay = outbox_relay(settings, database, _MeteredPublisher(publisher, publishes), max_in_flight=limit)
    relay.claim_due = claims.wrap(relay.claim_due)  # type: ignore[method-assign]
    relay._record = records.wrap(relay._record)  # type: ignore[method-assign]
    reset_outbox(engine)
    messages = due_messages(rows)
    insert_messages(engine, messages)
    cpu_started = time.process_time()
    while relay.relay_due_messages().claimed:
        pass
    total = time.process_time() - cpu_started
    parts = {
        "claims (SELECT … FOR UPDATE SKIP LOCKED, lease UPDATE, COMMIT)": claims.seconds,
        "records (mark-sent UPDATE, retries, COMMIT)": records.seconds,
        "publish requests (SnsPublisher + boto3 PublishBatch)": publishes.seconds,
    }
    parts["the rest (relay loop, thread pool, other threads)"] = max(0.0, total - sum(parts.values()))

    calls = [
        messages[i : i + MAX_BATCH_ENTRIES] for i in range(0, min(len(messages), 500), MAX_BATCH_ENTRIES)
    ]
    profile = cProfile.Profile()
    profile.enable()
    for chunk in calls:
        publisher.publish(chunk)
    profile.disable()
    by_category: dict[str, float] = defaultdict(float)
    for (filename, _line, function), row in pstats.Stats(profile).stats.items():  # type: ignore[attr-defined]
        by_category[_category(filename, function)] += row[2]  # own time
    by_category.pop("waiting (network, locks)", None)
    call_cpu = sum(by_category.values())
    return {
        "cpu_ms_per_message": total * 1000 / rows,
        "parts_ms_per_message": {k: v * 1000 / rows for k, v in parts.items()},
        "parts_share": {k: v / total if total else 0.0 for k, v in parts.items()},
        "profiled_calls": len(calls),
        "publish_call_cpu_share": {
            k: v / call_cpu for k, v in sorted(by_category.items(), key=lambda kv: -kv[1])
        },
    }


def relay_throughput(
    world: LatencyWorld, *, rows: int, naive_rows: int, rounds: int, progress: Callable[[str], None]
) -> Section:
    engine = make_engine(world.database_url)
    from payment_outbox.adapters.aws import new_client
    from payment_outbox.composition.relay import build_scheduled_relay

    limit = in_flight()
    relay = build_scheduled_relay().relay
    bare_sns = new_client("sns", budget=timeouts.SNS_RELAY, max_pool_connections=limit)
    bare_pool = ThreadPoolExecutor(limit, thread_name_prefix="bare-publish")
    variants = ("real", "bare", "naive")
    rates: dict[str, list[float]] = {v: [] for v in variants}
    cpu_ms: dict[str, list[float]] = {v: [] for v in variants}

    def timed(variant: str) -> float:
        count = naive_rows if variant == "naive" else rows
        reset_outbox(engine)
        messages = due_messages(count)
        insert_messages(engine, messages)
        started, cpu_started = time.perf_counter(), time.process_time()
        if variant == "real":
            done = drain_with_real_relay(relay)
        elif variant == "bare":
            done = bare_concurrent_publish(messages, world.topic_arn, bare_sns, bare_pool)
        else:
            done = naive_relay_drain(engine, world.topic_arn)
        elapsed = time.perf_counter() - started
        cpu_ms[variant].append((time.process_time() - cpu_started) * 1000 / count)
        if done != count:
            raise RuntimeError(f"{variant} published {done} of {count} rows")
        if variant != "bare" and count_by_status(engine) != {int(OutboxStatus.SENT): count}:
            raise RuntimeError(f"{variant} left rows unsent: {count_by_status(engine)}")
        return count / elapsed

    timed("real")  # warm-up: connections, clients, thread pool
    timed("bare")
    cpu_ms["real"].clear()
    cpu_ms["bare"].clear()
    world.sns.reset_stats()  # the round trips the stand-in gave during the measured rounds
    for round_no in range(rounds):
        shift = round_no % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            rates[variant].append(timed(variant))
        progress(
            f"latency relay round {round_no + 1}/{rounds}: "
            + ", ".join(f"{v} {rates[v][-1]:.0f} msg/s" for v in variants)
        )
    bare_pool.shutdown()
    served = world.sns.stats()
    if served["refused"]:
        raise RuntimeError(f"the latency SNS refused requests SNS would refuse: {served['refused']}")
    profile = profile_real_relay(engine, rows, world.topic_arn)
    reset_outbox(engine)
    engine.dispose()

    vs_bare = median_ratio(rates["real"], rates["bare"])
    vs_naive = median_ratio(rates["real"], rates["naive"])
    real_rate = median(rates["real"])
    section = Section("latency_relay_throughput", "Relay throughput against the latency SNS")
    section.figures = {
        "delay_ms": world.delay_ms,
        "max_in_flight": limit,
        "rows_per_run": {"real": rows, "bare": rows, "naive": naive_rows},
        "rounds": rounds,
        "messages_per_second_median": {v: median(r) for v, r in rates.items()},
        "messages_per_second_rounds": rates,
        "real_over_bare_median": vs_bare,
        "real_over_naive_median": vs_naive,
        "cpu_ms_per_message_median": {v: median(c) for v, c in cpu_ms.items()},
        "real_relay_cpu_profile": profile,
        "sns_round_trip_ms": served["round_trip_ms"],
        "claim_size": _claim_size(),
        "batch_entries": MAX_BATCH_ENTRIES,
    }
    section.targets = [
        Target("Relay vs bare concurrent PublishBatch loop (latency SNS)", vs_bare, ">=", 0.8),
        Target("Relay messages/s against the latency SNS", real_rate, ">=", 2000),
        Target("Relay vs naive relay (latency SNS)", vs_naive, ">=", 10.0),
    ]
    return section


def _claim_size() -> int:
    from payment_outbox.settings import OutboxSettings

    return OutboxSettings().outbox_batch_size
