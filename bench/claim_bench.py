"""Claim cost as the table grows: the same claim against 1,000 and against 1,000,000 sent rows."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url

from bench.data import due_messages, insert_messages, reset_outbox
from bench.env import DATABASE_NAME
from bench.stats import Section, Target, median, median_ratio, percentile
from payment_outbox.adapters.db.engine import make_engine, make_session_factory
from payment_outbox.adapters.db.migration import upgrade
from payment_outbox.adapters.db.unit_of_work import SqlUnitOfWork
from payment_outbox.clock import SystemClock

BIG_DATABASE = f"{DATABASE_NAME}_claims"  # unique to the run, like the benchmark's own database
PENDING_ROWS = 2_000
CLAIM_BATCH = 50

# Sent rows as the relay leaves them: status 1, due time and sent time in the past. No '%' in the
# statement: it goes to the driver as is.
_SENT_ROWS_SQL = """
INSERT INTO message_record (message_id, topic, content, status, retry_count, create_time, update_time,
  business_key, business_type, next_retry_at, sent_time)
SELECT CONCAT('sent-', seq), IF(MOD(seq, 2), 'topic.points', 'topic.sms'),
  CONCAT('{{"messageId":"sent-', seq, '","topic":"', IF(MOD(seq, 2), 'topic.points', 'topic.sms'),
         '","businessKey":"PO', LPAD(seq DIV 2, 18, '0'),
         '","businessType":"ORDER_PAID","occurredAt":"2026-11-01T00:00:00","payload":{{"userId":',
         1000 + MOD(seq, 97), ',"orderId":', seq DIV 2, ',"points":128}}}}'),
  1, 0, NOW(6) - INTERVAL 30 DAY, NOW(6) - INTERVAL 30 DAY, CONCAT('PO', LPAD(seq DIV 2, 18, '0')),
  'ORDER_PAID', NOW(6) - INTERVAL 30 DAY, NOW(6) - INTERVAL 30 DAY
FROM seq_{first}_to_{last}
"""


def insert_sent_rows(engine: Engine, first: int, last: int) -> float:
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.exec_driver_sql(_SENT_ROWS_SQL.format(first=first, last=last))
    with engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE TABLE message_record").all()
    return time.perf_counter() - started


@contextmanager
def _captured_claim_sql(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    captured: list[tuple[str, Any]] = []

    def capture(
        _conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool
    ) -> None:
        if "SKIP LOCKED" in statement:
            captured.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        yield captured
    finally:
        event.remove(engine, "before_cursor_execute", capture)


class ClaimProbe:
    """Claims a batch with the real repository and rolls it back, so every claim sees the same rows."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        self._uow = SqlUnitOfWork(make_session_factory(self.engine))
        self._clock = SystemClock()

    def claim_once(self) -> tuple[float, int]:
        now = self._clock.now()
        started = time.perf_counter()
        with self._uow as tx:
            claimed = tx.outbox.claim_due(now=now, limit=CLAIM_BATCH, lease_until=now + timedelta(seconds=60))
        return time.perf_counter() - started, len(claimed)

    def plan(self) -> dict[str, Any]:
        """EXPLAIN and MariaDB's ANALYZE (the plan plus the rows really read) of the claim's own SELECT."""
        with _captured_claim_sql(self.engine) as captured:
            self.claim_once()
        statement, parameters = captured[0]
        raw = self.engine.raw_connection()
        try:
            cursor: Any = raw.cursor()
            # The statement is the repository's own, captured above; only the prefix is added.
            cursor.execute("EXPLAIN " + statement, parameters)
            names = [c[0] for c in cursor.description]
            explain = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
            cursor.execute("ANALYZE FORMAT=JSON " + statement, parameters)
            analyzed = json.loads(cursor.fetchone()[0])
            raw.rollback()
        finally:
            raw.close()
        table_info = analyzed["query_block"].get("nested_loop", [{}])[0].get("table") or analyzed[
            "query_block"
        ].get("table", {})
        return {
            "statement": " ".join(statement.split()),
            "explain": [{k: (str(v) if v is not None else None) for k, v in row.items()} for row in explain],
            "index_used": table_info.get("key"),
            "rows_read": table_info.get("r_rows"),
            "access_type": table_info.get("access_type"),
        }

    def dispose(self) -> None:
        self.engine.dispose()


def claim_cost(
    small_url: str, *, big_rows: int, claims: int, rounds: int, progress: Callable[[str], None]
) -> Section:
    """Two databases side by side: 1,000 sent rows in one, ``big_rows`` in the other, the same pending
    rows in both; rounds alternate between them."""
    small_sent = 1_000
    big_url = make_url(small_url).set(database=BIG_DATABASE)
    admin = create_engine(make_url(small_url).set(database=""))
    with admin.begin() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS `{BIG_DATABASE}`"))
        conn.execute(text(f"CREATE DATABASE `{BIG_DATABASE}` CHARACTER SET utf8mb4"))
    try:
        big_engine = create_engine(big_url)
        upgrade(big_engine)
        small_engine = create_engine(small_url)
        reset_outbox(small_engine)
        insert_sent_rows(small_engine, 1, small_sent)
        progress(f"claim cost: inserting {big_rows:,} sent rows")
        load_seconds = insert_sent_rows(big_engine, 1, big_rows)
        pending = due_messages(PENDING_ROWS)
        insert_messages(small_engine, pending)
        insert_messages(big_engine, pending)
        for engine in (small_engine, big_engine):
            with engine.connect() as conn:
                conn.exec_driver_sql("ANALYZE TABLE message_record").all()

        probes = {"small": ClaimProbe(small_url), "big": ClaimProbe(big_url.render_as_string(False))}
        samples: dict[str, list[float]] = {"small": [], "big": []}
        round_medians: dict[str, list[float]] = {"small": [], "big": []}
        for probe in probes.values():
            for _ in range(20):  # warm the buffer pool and the connection
                probe.claim_once()
        for round_no in range(rounds):
            timings: dict[str, list[float]] = {"small": [], "big": []}
            for i in range(claims):
                # Claim by claim, alternating which table goes first: drift hits both alike.
                for name in ("small", "big") if i % 2 == 0 else ("big", "small"):
                    seconds, claimed = probes[name].claim_once()
                    if claimed != CLAIM_BATCH:
                        raise RuntimeError(f"claim on the {name} table returned {claimed} rows")
                    timings[name].append(seconds * 1000)
            for name, values in timings.items():
                samples[name] += values
                round_medians[name].append(median(values))
            progress(
                f"claim round {round_no + 1}/{rounds}: 1k {round_medians['small'][-1]:.2f} ms, "
                f"{big_rows // 1000}k {round_medians['big'][-1]:.2f} ms"
            )
        plans = {name: probe.plan() for name, probe in probes.items()}
        for probe in probes.values():
            probe.dispose()
        small_engine.dispose()
        big_engine.dispose()
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{BIG_DATABASE}`"))
        admin.dispose()

    growth = median_ratio(round_medians["big"], round_medians["small"])
    section = Section("claim_cost", "Claim cost as the table grows")
    section.figures = {
        "claim_batch": CLAIM_BATCH,
        "pending_rows": PENDING_ROWS,
        "sent_rows": {"small": small_sent, "big": big_rows},
        "claims_per_round": claims,
        "rounds": rounds,
        "claim_ms_median": {k: median(v) for k, v in samples.items()},
        "claim_ms_p99": {k: percentile(v, 99) for k, v in samples.items()},
        "claim_ms_round_medians": round_medians,
        "big_over_small_median": growth,
        "bulk_insert_seconds": load_seconds,
        "plans": plans,
    }
    section.targets = [Target(f"Claim time, {big_rows:,} vs {small_sent:,} sent rows", growth, "<=", 1.5)]
    return section
