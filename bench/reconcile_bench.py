"""The reconciler's cost per run: every row sent in its window, read page after page in (sent_time,
id) order, each row's consumer effect looked up once.

The database side is measured (the keyset pages through ``idx_status_sent_time``, on MariaDB); the
effect lookups are counted, not timed (one DynamoDB read per row: ``GetItem`` of the SMS delivery
record, ``Query`` of the order's ledger entries), since the local emulator says nothing about
DynamoDB's latency.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import create_engine

from bench.data import insert_backlog, reset_orders, reset_outbox
from bench.stats import Section, median
from payment_outbox.adapters.db.database import Database
from payment_outbox.clock import SystemClock
from payment_outbox.ports import SmsDelivery, StuckIdempotencyRecord
from payment_outbox.services.reconcile import ReconcileLimits, Reconciler


class _CountedLookups:
    """Effect lookups that answer at once and count the DynamoDB reads they stand for."""

    def __init__(self) -> None:
        self.reads = 0

    def entries_for_order(self, user_id: int, order_id: int) -> list[dict[str, object]]:
        self.reads += 1
        return []

    def find(self, message_id: str) -> SmsDelivery | None:
        self.reads += 1
        return None


class _NoStuckRecords:
    def stuck_in_progress(self, *, now_epoch_seconds: float) -> list[StuckIdempotencyRecord]:
        return []


def reconciler_timeout_seconds() -> int:
    """The ReconcilerFunction's Timeout in template.yaml (or the template's global one)."""
    from bench.env import ROOT
    from payment_outbox_dev.checks.template import load_template

    template = load_template(ROOT / "template.yaml")
    own = template["Resources"]["ReconcilerFunction"]["Properties"].get("Timeout")
    return int(own or template["Globals"]["Function"]["Timeout"])


def reconcile_cost(
    database_url: str, *, rows: int, page_size: int, rounds: int, progress: Callable[[str], None]
) -> Section:
    engine = create_engine(database_url)
    reset_outbox(engine)
    # The callback section's paid orders lose their rows to reset_outbox: left in place, each would be
    # looked up as a PAID order without outbox rows, a cost no real window has.
    reset_orders(engine)
    written = insert_backlog(engine, rows)
    with engine.begin() as conn:
        # As the relay leaves them: sent an hour ago, inside the window past the 30-minute grace.
        conn.exec_driver_sql("UPDATE message_record SET status = 1, sent_time = NOW(6) - INTERVAL 1 HOUR")
        conn.exec_driver_sql("ANALYZE TABLE message_record")
    seconds: list[float] = []
    checked = reads = missing = 0
    database = Database.at_url(database_url)
    try:
        for number in range(rounds):
            lookups = _CountedLookups()
            reconciler = Reconciler(
                database.operations_unit_of_work,
                SystemClock(),
                points=lookups,
                sms=lookups,
                idempotency=_NoStuckRecords(),
                limits=ReconcileLimits(sent_page_size=page_size, effect_window=timedelta(hours=24)),
            )
            started = time.perf_counter()
            report = reconciler.reconcile()
            seconds.append(time.perf_counter() - started)
            checked, reads = report.sent_checked, lookups.reads
            missing = len(report.orders_missing_outbox)
            progress(f"reconcile round {number + 1}: {checked:,} sent rows in {seconds[-1]:.2f} s")
    finally:
        database.engine.dispose()
        reset_outbox(engine)
        engine.dispose()
    run_seconds = median(seconds)
    rate = round(checked / run_seconds) if run_seconds else 0
    timeout = reconciler_timeout_seconds()
    section = Section("reconcile_cost", "The reconciler's cost per run")
    section.figures = {
        "sent_rows": written,
        "checked_rows": checked,
        "page_size": page_size,
        "pages": -(-checked // page_size),
        "rounds": rounds,
        "run_seconds_median": round(run_seconds, 3),
        "rows_per_second": rate,
        "effect_reads": reads,
        "effect_reads_per_row": round(reads / checked, 3) if checked else 0,
        "paid_orders_found_without_outbox_rows": missing,
        "function_timeout_seconds": timeout,
        "rows_within_the_timeout_at_this_rate": rate * timeout,
    }
    return section


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.reconcile_bench``: the section alone, as JSON, on a database of its own."""
    import argparse
    import json
    import sys

    from bench.env import DEFAULT_SERVER_URL, database

    parser = argparse.ArgumentParser(prog="python -m bench.reconcile_bench", description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000, help="sent rows in the window (100,000)")
    parser.add_argument(
        "--page-size",
        type=int,
        default=ReconcileLimits().sent_page_size,
        help="rows per page (default: the reconciler's own, RECONCILE_SENT_PAGE_SIZE's default)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="runs, median reported (3)")
    parser.add_argument("--server-url", default=DEFAULT_SERVER_URL, help="MySQL/MariaDB server")
    args = parser.parse_args(argv)
    with database(args.server_url) as url:
        section = reconcile_cost(
            url,
            rows=args.rows,
            page_size=args.page_size,
            rounds=args.rounds,
            progress=lambda line: print(line, file=sys.stderr),
        )
    print(json.dumps({"title": section.title, "figures": section.figures}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
