"""The database queries' sections: the relay's claim as the table grows, the reconciler's run."""

from __future__ import annotations

from typing import Any

from bench.report.format import Figures, times
from payment_outbox_dev.measurement import fmt, table


def claim_cost(f: Figures, _doc: dict[str, Any]) -> tuple[str, list[str]]:
    plans, sent = f["plans"], f["sent_rows"]
    lines = [
        f"A claim of {f['claim_batch']} due rows (the repository's own `claim_due`: SELECT … FOR UPDATE SKIP "
        "LOCKED, then the lease UPDATE, then rollback so every claim sees the same rows), with "
        f"{f['pending_rows']:,} pending rows and either {sent['small']:,} or {sent['big']:,} sent rows in "
        "the "
        f"table. {f['claims_per_round']} claims per table and round, interleaved claim by claim, "
        f"{f['rounds']} rounds. The {sent['big']:,} sent rows were inserted with one INSERT … SELECT in "
        f"{fmt(f['bulk_insert_seconds'])} s.",
        "",
        *table(
            ["Sent rows", "claim ms (median)", "claim ms (p99)", "index", "access", "rows read"],
            [
                [
                    f"{sent[size]:,}",
                    f["claim_ms_median"][size],
                    f["claim_ms_p99"][size],
                    plans[size]["index_used"],
                    plans[size]["access_type"],
                    plans[size]["rows_read"],
                ]
                for size in ("small", "big")
            ],
        ),
        "",
        f"Big / small: **{times(f['big_over_small_median'])}** (median of per-round ratios).",
        "",
        "EXPLAIN of the claim on the big table:",
        "",
        "```",
        plans["big"]["statement"],
        "```",
    ]
    return "Claim cost as the table grows", lines


def reconcile_cost(f: Figures, _doc: dict[str, Any]) -> tuple[str, list[str]]:
    lines = [
        "The reconciler's own run (`Reconciler.reconcile`, bench/reconcile_bench.py) over "
        f"{f['sent_rows']:,} rows sent inside its window, on MariaDB: it reads them page after page, "
        f"{f['page_size']:,} rows a page (`RECONCILE_SENT_PAGE_SIZE`'s default), in (sent time, id) order "
        "through `idx_status_sent_time`, each page starting past the last row of the one before, and looks "
        "up each row's consumer effect. The lookups answer at once and are counted, not timed: each stands "
        "for one DynamoDB read (`GetItem` of the SMS delivery record or `Query` of the order's ledger "
        f"entries), whose latency the local emulator would not tell. {f['rounds']} round(s), median.",
        "",
        *table(
            ["rows checked", "pages", "run s (median)", "rows/s", "effect reads", "effect reads / row"],
            [
                [
                    f["checked_rows"],
                    f["pages"],
                    f["run_seconds_median"],
                    f["rows_per_second"],
                    f["effect_reads"],
                    f["effect_reads_per_row"],
                ]
            ],
        ),
        "",
        f"At this rate a run within the function's {f['function_timeout_seconds']} s timeout "
        f"(template.yaml) reads at most {f['rows_within_the_timeout_at_this_rate']:,} sent rows, before "
        "any DynamoDB read is waited for; a window that holds more is not checked in one run, and the run "
        "says so (`SentWindowIncomplete`).",
    ]
    return "The reconciler's cost per run", lines
