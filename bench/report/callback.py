"""The payment callback's sections: its latency, and from its commit to the publish."""

from __future__ import annotations

from typing import Any

from bench.report.format import Figures, times
from payment_outbox_dev.measurement import fmt, table


def latency_callback(f: Figures, _doc: dict[str, Any]) -> tuple[str, list[str]]:
    real, bare, ratio = f["real_handler_ms"], f["bare_update_ms"], f["real_over_bare"]
    breakdown = f["real_handler_breakdown_ms_p50"]
    create = f.get("create_order_ms")
    lines = [
        "The real PaymentApi handler invoked in-process through the local harness (a signed body: API "
        "Gateway event, Powertools resolver, signature check, the pay transaction, and the after-commit "
        "after-commit publish to the latency SNS), against the bare transaction that only updates the order "
        "(one UPDATE, committed, same driver and server; then one PublishBatch of the order's messages). "
        f"{f['samples_per_round']} callbacks of each per round, interleaved, {f['rounds']} rounds; "
        "percentiles per round, then the median over rounds.",
        "",
        *table(
            ["", "p50 ms", "p99 ms"],
            [
                ["real handler", real["p50"], real["p99"]],
                ["bare UPDATE + COMMIT + one PublishBatch", bare["p50"], bare["p99"]],
                ["ratio", times(ratio["p50"]), times(ratio["p99"])],
                *(
                    [["create order (POST /orders, the real handler)", create["p50"], create["p99"]]]
                    if create
                    else []
                ),
            ],
        ),
        "",
        "Where the real handler's time goes (p50): request to commit "
        f"{fmt(breakdown['request_to_commit'])} ms; "
        f"commit to response (after-commit publish + mark sent) {fmt(breakdown['commit_to_response'])} ms.",
    ]
    return f"Payment callback against SNS at a {fmt(f['delay_ms'])} ms round trip", lines


def commit_to_publish(f: Figures, _doc: dict[str, Any]) -> tuple[str, list[str]]:
    ack, sent = f["commit_to_publish_ack_ms"], f["commit_to_marked_sent_ms"]
    lines = [
        "Measured inside the same real callbacks: from the pay transaction's commit (SQLAlchemy "
        "`after_commit`) to SNS answering the PublishBatch (botocore `after-call` on the handler's own "
        f"client), and to the rows' mark-sent commit; {f['samples']} callbacks, percentiles per round, "
        "median over rounds.",
        "",
        *table(
            ["", "p50 ms", "p99 ms"],
            [
                ["commit → PublishBatch acknowledged", ack["p50"], ack["p99"]],
                ["commit → rows marked sent", sent["p50"], sent["p99"]],
            ],
        ),
    ]
    return "Commit-to-publish latency", lines
