"""The capacity sections: the simulated outage's backlog, and the cost per order with the quotas."""

from __future__ import annotations

from typing import Any

from bench.report.format import Figures, or_missing
from payment_outbox_dev.measurement import fmt, table


def capacity_simulation(f: Figures, _doc: dict[str, Any]) -> tuple[str, list[str]]:
    i = f["inputs"]
    rule = i["rule"]
    charge = (
        "charges an attempt to the rows of each refused claim"
        if rule["refusal_charges_attempt"]
        else "charges no attempt for a whole-request refusal"
    )
    age = (
        f"gives up rows older than {fmt(rule['max_message_age_seconds'])} s when refused"
        if rule["max_message_age_seconds"] is not None
        else "has no age limit"
    )
    if not rule["refusal_charges_attempt"] and rule["outage_backs_off_by_age"]:
        charge += ", and backs a refused row off by its age"
    lines = [
        "bench/capacity_sim.py, a discrete-event simulation fed with this run's figures: one relay on a "
        f"{i['lambda_memory_mb']} MB Lambda drains {fmt(i['relay_messages_per_second'])} messages/s — the "
        f"rate measured here ({fmt(i['measured_relay_messages_per_second'])} messages/s using "
        f"{fmt(i['cores_used_while_measured'])} of a core at {fmt(i['cpu_ms_per_message'])} ms CPU per "
        "message) scaled to the Lambda's CPU share, and never above its latency bound of "
        f"{fmt(i['latency_bound_messages_per_second'])} messages/s ({i['in_flight']} requests of "
        f"{i['batch_entries']} per round trip, {fmt(i['round_trip_ms'])} ms p50 as the latency SNS served "
        f"it) — in claims of {i['claim_size']}; {fmt(i['orders_per_second'])} orders/s "
        f"({fmt(i['arrivals_messages_per_second'])} messages/s), SNS down {fmt(i['outage_minutes'])} "
        f"minutes, the schedule's next run {fmt(i['schedule_phase'])} s after recovery, fanned-out runs "
        "starting after "
        f"a {fmt(i['cold_start_seconds'])} s cold start ({f['cold_start_from']}), all within the SNS quota "
        f"of {fmt(i['sns_quota'])} messages/s less live traffic.",
        "",
        "The relay's rule for attempts during an outage, found by running it against the latency SNS "
        f"answering every call with a server error: the code {charge} (attempts after one refused run: "
        f"{', '.join(str(v) for v in f['rule_evidence']['attempts_after_refused_run'])}; after a failed "
        "after-commit publish: "
        f"{', '.join(str(v) for v in f['rule_evidence']['attempts_after_failed_after_commit_publish'])}), "
        f"gives up at {rule['max_attempts']} attempts, and {age}. While SNS is down each scheduled run's "
        f"first {i['refused_claims_per_run']} claims are refused and the run ends.",
        "",
        *table(
            [
                "",
                "backlog at recovery",
                "rows FAILED",
                "drained, minutes after recovery",
                f"oldest due < {fmt(f['age_threshold_seconds'])} s, minutes after",
                "relays started",
                "most at once",
            ],
            [
                [
                    "one relay"
                    if s["max_relays"] == 1
                    else f"fan-out, MaxRelayConcurrency {s['max_relays']}",
                    s["backlog_at_recovery"],
                    s["failed_rows"],
                    or_missing(s["drained_minutes_after_recovery"], "not drained"),
                    or_missing(s["oldest_due_under_10s_minutes_after_recovery"], "never"),
                    s["relays_started"],
                    s["most_relays_at_once"],
                ]
                for s in f["scenarios"]
            ],
        ),
        "",
        _quiet(f["quiet"], rule),
        "",
        "![Rows waiting and the oldest due row's age after the outage](capacity-drain.svg)",
    ]
    return "Capacity, simulated: the backlog of an SNS outage", lines


def _quiet(q: dict[str, Any], rule: dict[str, Any]) -> str:
    return (
        f"A quiet time instead — {fmt(q['orders_per_second'])} orders/s and SNS down "
        f"{fmt(q['outage_minutes'])} minutes, fan-out bound {q['max_relays']}: "
        f"{fmt(q['backlog_at_recovery'])} rows at recovery, **{fmt(q['failed_rows'])} FAILED** under this "
        "rule"
        + (
            ", since each run charges the few oldest rows again until they reach the last attempt."
            if rule["refusal_charges_attempt"]
            else "."
        )
    )


def cost(f: Figures, doc: dict[str, Any]) -> tuple[str, list[str]]:
    inputs = doc["inputs"]
    lines = [
        f"Per million paid orders, at AWS's published prices ({inputs['region']}, as of "
        f"{inputs['prices_as_of']}; bench/prices.py), from this run's durations and counts and the "
        "template's memory sizes (free tier, data transfer and SMS left aside):",
        "",
        *table(
            ["Item", "per order", "unit", "USD per million orders"],
            [
                [r["item"], r["per_order"], r["unit"], r["usd_per_million_orders"]]
                for r in f["per_million_orders"]
            ],
        ),
        "",
        f"In all: **USD {fmt(f['usd_per_million_orders'])} per million paid orders**.",
        "",
        "Fixed monthly cost, whatever the traffic:",
        "",
        *table(
            ["Item", "count", "USD a month"],
            [[r["item"], r["count"], r["usd_per_month"]] for r in f["fixed_monthly"]],
        ),
        "",
        "Where each stage reaches its quota at a steady rate (quotas as assumed in bench/prices.py; check "
        "Service Quotas):",
        "",
        *table(
            ["Stage", "quota", "per order", "orders/s at the quota"],
            [[r["stage"], r["quota"], r["per_order"], r["orders_per_second"]] for r in f["quota_rates"]],
        ),
    ]
    return "Cost per million paid orders, and where each stage meets its quota", lines
