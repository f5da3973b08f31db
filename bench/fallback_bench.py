"""The fallback path against the latency SNS: rows that missed the after-commit publish (the Lambda
died after the commit, or SNS refused the after-commit publish), published by scheduled runs polling
within their period; due → published and commit → published, from the rows' own times."""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, bindparam, text

from bench.data import count_by_status, insert_messages, reset_outbox
from bench.latency_bench import LatencyWorld
from bench.latency_sns import LatencySnsProcess
from bench.stats import Section, Target, percentile
from payment_outbox.adapters.db.engine import make_engine
from payment_outbox.domain.outbox import OutboxStatus


def _scheduler_process(ready: Any, stop: Any, period: float, timeout: float, busy: Any) -> None:
    """EventBridge and the relay function: a run every ``period`` seconds, each polling within its
    ``timeout`` as the scheduled handler does; reports the seconds each run was alive."""
    from payment_outbox.composition.relay import build_scheduled_relay

    scheduled = build_scheduled_relay()
    relay = scheduled.relay
    relay.oldest_due_age_seconds()  # connect
    ready.put(os.getpid())
    next_start = time.monotonic()
    alive = []
    while not stop.is_set():
        started = time.monotonic()
        deadline = started + timeout
        relay.relay_due_messages(
            lambda deadline=deadline: int((deadline - time.monotonic()) * 1000),  # type: ignore[misc]
            polling=scheduled.polling,
        )
        alive.append(time.monotonic() - started)
        next_start += period
        stop.wait(max(0.0, next_start - time.monotonic()))
    busy.put(alive)


def after_commit_relay() -> Any:
    """The after-commit publish's relay, as composition.payment_api builds it (one attempt, short
    timeouts, never gives up), on a client made now: at the endpoint configured now."""
    from payment_outbox.adapters.aws import AwsClients
    from payment_outbox.composition.database import connect_database
    from payment_outbox.composition.relay import outbox_relay, relay_publisher
    from payment_outbox.settings import DatabaseSettings, OutboxSettings

    clients, outbox = AwsClients(), OutboxSettings()
    database = connect_database(DatabaseSettings(), clients)
    return outbox_relay(outbox, database, relay_publisher(outbox, clients, after_commit=True))


@dataclass
class _Miss:
    kind: str
    committed: Any
    due: Any


def _miss_phase(
    world: LatencyWorld,
    engine: Engine,
    *,
    seconds: float,
    period: float,
    rate: float,
    kinds: Sequence[str],
    first_order: int,
) -> tuple[dict[str, _Miss], list[float]]:
    """Orders at ``rate`` a second for ``seconds``, each missing the after-commit publish in one of
    ``kinds`` (in turn), while a scheduler process runs the relay every ``period`` seconds."""
    import uuid

    from bench.data import paid_order
    from payment_outbox.clock import SystemClock
    from payment_outbox.domain.outbox import order_paid_envelopes, pending_message
    from payment_outbox.settings import OutboxSettings

    lease = timedelta(seconds=OutboxSettings().outbox_lease_seconds)
    clock = SystemClock()
    context = multiprocessing.get_context("spawn")
    ready, stop, busy = context.Queue(), context.Event(), context.Queue()
    # The scheduled relay (its own process) publishes to the healthy latency SNS.
    scheduler = context.Process(target=_scheduler_process, args=(ready, stop, period, period, busy))
    scheduler.start()
    ready.get(timeout=120)
    misses: dict[str, _Miss] = {}
    # This process's after-commit path publishes to a second latency SNS that is down.
    with LatencySnsProcess(world.delay_ms) as down:
        down.control(mode="outage")
        os.environ["AWS_ENDPOINT_URL_SNS"] = down.endpoint
        publisher = after_commit_relay()
        try:
            started = time.monotonic()
            number = 0
            while time.monotonic() - started < seconds:
                kind = kinds[number % len(kinds)]
                number += 1
                now = clock.now()
                order = paid_order(first_order + number, now)
                rows = [
                    pending_message(e, now=now, due_at=now + lease)
                    for e in order_paid_envelopes(order, now=now, new_id=lambda: uuid.uuid4().hex)
                ]
                insert_messages(engine, rows)
                if kind == "after-commit publish failed":
                    publisher.publish_after_commit(rows)  # SNS refuses: retried 1-2 s later
                for row in _due_times(engine, [r.message_id for r in rows]):
                    misses[row[0]] = _Miss(kind, now, row[1])
                time.sleep(max(0.0, started + number / rate - time.monotonic()))
            # Let the last rows fall due and be published.
            deadline = time.monotonic() + lease.total_seconds() + period + 5
            while time.monotonic() < deadline and count_by_status(engine).get(int(OutboxStatus.PENDING), 0):
                time.sleep(0.5)
        finally:
            os.environ["AWS_ENDPOINT_URL_SNS"] = world.sns.endpoint
            stop.set()
            alive: list[float] = busy.get(timeout=120)
            scheduler.join(timeout=60)
    return misses, alive


def _due_times(engine: Engine, ids: Sequence[str]) -> list[tuple[str, Any]]:
    with engine.connect() as conn:
        return [
            (r[0], r[1])
            for r in conn.execute(
                text(
                    "SELECT message_id, next_retry_at FROM message_record WHERE message_id IN :ids"
                ).bindparams(bindparam("ids", expanding=True)),
                {"ids": list(ids)},
            )
        ]


def fallback_latency(
    world: LatencyWorld, *, seconds: float, period: float, rate: float, progress: Callable[[str], None]
) -> Section:
    """Rows that missed the after-commit publish, published by scheduled runs polling within their
    period: due → published and commit → published, from the rows' own times."""
    engine = make_engine(world.database_url)
    # Every failed after-commit publish logs a warning: expected here, and not for the terminal.
    relay_log = logging.getLogger("payment_outbox")
    level = relay_log.level
    relay_log.setLevel(logging.ERROR)
    phases = {
        "steady misses (both kinds)": ("died after commit", "after-commit publish failed"),
        "isolated failed publishes only": ("after-commit publish failed",),
    }
    saved = os.environ.get("OUTBOX_LEASE_SECONDS")
    # The schedule is compressed from 1 minute to ``period`` seconds; the after-commit lease with it,
    # since the rule that keeps a run alive depends on the lease covering the period.
    os.environ["OUTBOX_LEASE_SECONDS"] = str(int(period))
    results: dict[str, dict[str, Any]] = {}
    try:
        for number, (phase, kinds) in enumerate(phases.items()):
            reset_outbox(engine)
            phase_rate = rate if number == 0 else rate / 5
            # Phase 1 runs a period longer and leaves that first period out of its figures: at the
            # start no run knows of any row, as after a quiet spell; the figures are the steady state.
            warm_up = period if number == 0 else 0.0
            misses, alive = _miss_phase(
                world,
                engine,
                seconds=seconds + warm_up,
                period=period,
                rate=phase_rate,
                kinds=kinds,
                first_order=20_000_000 + number * 1_000_000,
            )
            with engine.connect() as conn:
                sent = {
                    r[0]: r[1]
                    for r in conn.execute(
                        text("SELECT message_id, sent_time FROM message_record WHERE status = 1")
                    )
                }
            by_kind: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
            first_commit = min(m.committed for m in misses.values())
            counted = {
                i: m for i, m in misses.items() if (m.committed - first_commit).total_seconds() >= warm_up
            }
            for message_id, miss in counted.items():
                if message_id in sent:
                    by_kind[miss.kind]["due_to_published"].append(
                        (sent[message_id] - miss.due).total_seconds()
                    )
                    by_kind[miss.kind]["commit_to_published"].append(
                        (sent[message_id] - miss.committed).total_seconds()
                    )
            results[phase] = {
                "orders_per_second": phase_rate,
                "rows": len(counted),
                "rows_left_unsent": len(misses) - sum(1 for m in misses if m in sent),
                "scheduled_runs": len(alive),
                "run_alive_share_of_period": sum(alive) / max(1e-9, len(alive) * period),
                "warm_up_seconds_left_out": warm_up,
                "kinds": {
                    kind: {
                        name: {"p50": percentile(v, 50), "p99": percentile(v, 99)}
                        for name, v in values.items()
                    }
                    for kind, values in by_kind.items()
                },
            }
            progress(f"fallback, {phase}: {results[phase]}")
    finally:
        relay_log.setLevel(level)
        if saved is None:
            os.environ.pop("OUTBOX_LEASE_SECONDS", None)
        else:
            os.environ["OUTBOX_LEASE_SECONDS"] = saved
        reset_outbox(engine)
        engine.dispose()

    section = Section("fallback_latency", "The fallback path: rows that missed the after-commit publish")
    section.figures = {
        "schedule_period_seconds": period,
        "after_commit_lease_seconds": period,
        "seconds_of_orders_per_phase": seconds,
        "phases": results,
    }
    steady = results["steady misses (both kinds)"]
    due_p99 = max(v["due_to_published"]["p99"] for v in steady["kinds"].values())
    section.targets = [
        Target("Fallback due → published p99 while runs poll (steady misses), seconds", due_p99, "<=", 10.0),
    ]
    return section
