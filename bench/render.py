"""The report, rendered from docs/benchmarks.json alone: docs/benchmarks.md, docs/capacity.md and
docs/capacity-drain.svg.

``make bench`` measures, writes the JSON, then calls this; ``python -m bench.render`` renders the docs
again from a JSON without measuring. Every number in the documents is a value of the JSON (a test
renders a recorded JSON and checks each one): the prose here carries words, never figures.
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.stats import fmt, table

Figures = dict[str, Any]
DOCS = ("benchmarks.md", "capacity.md", "capacity-drain.svg")
#: Sections in the report's order; each renders from its own figures (and the document's inputs).
ORDER = (
    "latency_relay_throughput",
    "fan_out",
    "fallback_latency",
    "latency_callback",
    "latency_commit_to_publish",
    "claim_cost",
    "reconcile_cost",
    "consumer_cost",
    "cold_start",
    "capacity_simulation",
    "cost",
)


def _x(value: float) -> str:
    return f"{fmt(value)}x"


def _pct(value: float) -> str:
    return f"{value:.0%}"


def _maybe(value: Any, missing: str = "-") -> Any:
    return missing if value is None else value


# --- sections ---------------------------------------------------------------------------------------


def relay_throughput(f: Figures, _doc: dict[str, Any]) -> tuple[str, list[str]]:
    rates, cpu = f["messages_per_second_median"], f["cpu_ms_per_message_median"]
    rounds = f["messages_per_second_rounds"]
    trips = f["sns_round_trip_ms"]
    profile = f["real_relay_cpu_profile"]
    rows = f["rows_per_run"]
    title = f"Relay throughput against SNS at a {fmt(f['delay_ms'])} ms round trip"
    lines = [
        f"The latency SNS answers every call after {fmt(f['delay_ms'])} ms and does no per-message work; "
        f"during the measured rounds it served {trips['calls']} calls with a round trip of "
        f"{fmt(trips['p50'])} ms p50 and {fmt(trips['p99'])} ms p99 (measured by the stand-in, from "
        f"request read to answer written). {rows['real']} due rows per run ({rows['naive']} for the naive "
        f"relay, which needs a round trip per row), {f['rounds']} round(s) in rotating order, medians. In "
        f"flight: {f['max_in_flight']} PublishBatch requests (RELAY_MAX_IN_FLIGHT), for the real relay and "
        "the bare loop alike.",
        "",
        *table(
            ["Variant", "messages/s (median)", "rounds", "process CPU ms / message"],
            [
                [
                    f"real relay (claims of {f['claim_size']}, {f['max_in_flight']} requests in flight, "
                    "mark-sent per claim)",
                    rates["real"],
                    ", ".join(fmt(v) for v in rounds["real"]),
                    cpu["real"],
                ],
                [
                    f"bare loop: PublishBatch of {f['batch_entries']}, {f['max_in_flight']} in flight, "
                    "no database",
                    rates["bare"],
                    ", ".join(fmt(v) for v in rounds["bare"]),
                    cpu["bare"],
                ],
                [
                    "naive relay (Publish + UPDATE/commit per row)",
                    rates["naive"],
                    ", ".join(fmt(v) for v in rounds["naive"]),
                    cpu["naive"],
                ],
            ],
        ),
        "",
        f"Real / bare: **{_x(f['real_over_bare_median'])}**; real / naive: "
        f"**{_x(f['real_over_naive_median'])}** (medians of per-round ratios).",
        "",
        f"Where the real relay's CPU goes (a separate run of {rows['real']} rows, each part on its own "
        f"threads' CPU clocks; {fmt(profile['cpu_ms_per_message'])} ms per message in all):",
        "",
        *table(
            ["Part", "CPU ms / message", "share"],
            [[k, v, _pct(profile["parts_share"][k])] for k, v in profile["parts_ms_per_message"].items()],
        ),
        "",
        f"Inside one PublishBatch call of {f['batch_entries']} messages (cProfile of "
        f"{profile['profiled_calls']} calls one after another; time spent waiting on the network left out):",
        "",
        *table(
            ["", "share of the call's CPU"],
            [[k, _pct(v)] for k, v in profile["publish_call_cpu_share"].items()],
        ),
        "",
        "- The bare loop pays boto3's whole cost per call (building and signing the request, parsing the "
        "XML answer) and nothing else; the relay adds its claims and records (two short transactions per "
        "claim) on the driving thread while the requests travel.",
    ]
    return title, lines


def fan_out(f: Figures, _doc: dict[str, Any]) -> tuple[str, list[str]]:
    by = f["by_max_relays"]
    one = next(iter(by))
    lines = [
        f"A backlog of {f['backlog_rows']} due rows, sized from the single relay's rate measured in this "
        f"run ({fmt(f['one_relay_rate_sizing_the_backlog'])} messages/s) so that no configuration drains it "
        f"within one run; one scheduled run with a {fmt(f['run_seconds'])} s Lambda timeout. Every relay "
        "is the real handler in a process of its own (a warm container); the scheduled run fans out "
        "through the relay's own launcher (an asynchronous Lambda Invoke through boto3) to a stand-in "
        "Lambda service, which hands each event to one of the function's other containers. Messages/s are "
        "those of all relays together while every started relay was draining, from the rows' sent times; "
        f"{f['rounds']} round(s), medians; this machine has {f['cpus']} CPUs.",
        "",
        *table(
            [
                "MaxRelayConcurrency",
                "relays started (per round)",
                "messages/s, all relays (median)",
                f"vs MaxRelayConcurrency {one}",
                "backlog left at the deadline",
                "rows published twice",
            ],
            [
                [
                    n,
                    ", ".join(str(v) for v in s["relays_started"]),
                    s["messages_per_second_median"],
                    _x(s["over_one_relay_median"]),
                    ", ".join(str(v) for v in s["backlog_left_at_the_deadline"]),
                    s["rows_published_twice"],
                ]
                for n, s in by.items()
            ],
        ),
        "",
        "Each relay run (seconds from the scheduled run's start; the rows it published):",
        "",
        *[
            f"- MaxRelayConcurrency {n}, round {i + 1}: "
            + "; ".join(
                f"from {r['started_s']:.1f} s to {r['ended_s']:.1f} s, {r['published']:,} rows"
                for r in run["relay_runs_detail"]
            )
            for n, runs in f["runs"].items()
            for i, run in enumerate(runs)
        ],
        "",
        "- Published twice: entries the latency SNS accepted beyond the rows marked sent.",
        "- A started run ends by its starter's deadline and, as the starter does, keeps its safety "
        "margin before it.",
        "- Relays beyond this machine's cores share them with MariaDB and the latency SNS: their figures "
        "here say that the fan-out decision starts them and that nothing is published twice; what they "
        "would add with a Lambda's own CPU each is the capacity simulation's.",
    ]
    return "Fan-out: relays started by the real fan-out path", lines


def fallback_latency(f: Figures, _doc: dict[str, Any]) -> tuple[str, list[str]]:
    phases = f["phases"]
    names = list(phases)
    rows_table = []
    for phase, figures in phases.items():
        for kind, values in figures["kinds"].items():
            rows_table.append(
                [
                    phase,
                    kind,
                    values["due_to_published"]["p50"],
                    values["due_to_published"]["p99"],
                    values["commit_to_published"]["p50"],
                    values["commit_to_published"]["p99"],
                ]
            )
    unsent = sum(p["rows_left_unsent"] for p in phases.values())
    period = fmt(f["schedule_period_seconds"])
    lines = [
        "Orders whose after-commit publish was missed, in two ways: the Lambda **died after the commit** "
        "(the rows wait for their hand-off lease), or **SNS refused the immediate publish** (the real "
        "hand-off path against a second latency SNS that is down: the rows are retried after the retry "
        f"policy's first backoff). A scheduler process runs the real relay every {period} s with a "
        f"{period} s timeout, polling within its run (the schedule compressed from its minute; the "
        f"hand-off lease with it, {fmt(f['hand_off_lease_seconds'])} s); it publishes to the healthy latency "
        "SNS. Times from the rows' own columns (commit, due, sent). "
        f"{names[0]}: {fmt(phases[names[0]]['orders_per_second'])} orders/s missing the publish, both kinds "
        f"in turn, {fmt(f['seconds_of_orders_per_phase'])} s after a first period left out (no run knows of "
        f"any row yet); {names[1]}: {fmt(phases[names[1]]['orders_per_second'])} orders/s, "
        f"{fmt(f['seconds_of_orders_per_phase'])} s. "
        + ("Every row was published." if unsent == 0 else "**Rows were left unsent**: see the table below."),
        "",
        *table(
            ["Phase", "missed how", "due → published p50 s", "p99 s", "commit → published p50 s", "p99 s"],
            rows_table,
        ),
        "",
        *table(
            ["Phase", "rows", "left unsent", "scheduled runs", "run alive, share of its period"],
            [
                [
                    p,
                    v["rows"],
                    v["rows_left_unsent"],
                    v["scheduled_runs"],
                    _pct(v["run_alive_share_of_period"]),
                ]
                for p, v in phases.items()
            ],
        ),
        "",
        "- A run keeps polling while a pending row falls due before it must stop; it knows every row that "
        "died after its commit (its due time is its hand-off lease's end, at least a period away), so those "
        "rows wait at most the run's safety margin past falling due. A failed immediate publish falls due "
        "soon after: a run that is alive publishes it within a poll interval; when no run is alive (the "
        "second phase: nothing else pending) it waits for the next scheduled run — up to the period.",
    ]
    return "The fallback path: rows that missed the after-commit publish", lines


def latency_callback(f: Figures, _doc: dict[str, Any]) -> tuple[str, list[str]]:
    real, bare, ratio = f["real_handler_ms"], f["bare_update_ms"], f["real_over_bare"]
    breakdown = f["real_handler_breakdown_ms_p50"]
    create = f.get("create_order_ms")
    lines = [
        "The real PaymentApi handler invoked in-process through the local harness (a signed body: API "
        "Gateway event, Powertools resolver, signature check, the pay transaction, and the after-commit "
        "immediate publish to the latency SNS), against the bare transaction that only updates the order "
        "(one UPDATE, committed, same driver and server; then one PublishBatch of the order's messages). "
        f"{f['samples_per_round']} callbacks of each per round, interleaved, {f['rounds']} rounds; "
        "percentiles per round, then the median over rounds.",
        "",
        *table(
            ["", "p50 ms", "p99 ms"],
            [
                ["real handler", real["p50"], real["p99"]],
                ["bare UPDATE + COMMIT + one PublishBatch", bare["p50"], bare["p99"]],
                ["ratio", _x(ratio["p50"]), _x(ratio["p99"])],
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
        f"commit to response (immediate publish + mark sent) {fmt(breakdown['commit_to_response'])} ms.",
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
        f"Big / small: **{_x(f['big_over_small_median'])}** (median of per-round ratios).",
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


def consumer_cost(f: Figures, _doc: dict[str, Any]) -> tuple[str, list[str]]:
    consumers = {k: v for k, v in f.items() if isinstance(v, dict)}
    lines = [
        f"Each consumer handler invoked in-process with SQS batch events of {f['batch']} records really "
        "received from its queue (published by SNS from real envelopes, moto), then the same event again "
        "(a duplicate delivery). DynamoDB calls and capacity units are counted with a "
        "`before-call.dynamodb` hook on the consumers' own client (units by the item-size rule for items "
        f"under a kilobyte), not timed. {f['batches']} batches per round, {f['rounds']} rounds after a "
        "warm-up round. Durations are against moto's DynamoDB: emulator-bound.",
        "",
        *table(
            [
                "Consumer",
                "calls / first delivery",
                "by operation",
                "calls / duplicate",
                "write units / record",
                "read units / record",
                "ms / record (first)",
                "records/s (duplicate)",
            ],
            [
                [
                    name,
                    c["dynamodb_calls_per_first_delivery"],
                    ", ".join(f"{op} {fmt(v)}" for op, v in c["first_delivery_calls_by_operation"].items()),
                    c["dynamodb_calls_per_duplicate"],
                    c["write_units_per_record"],
                    c["read_units_per_record"],
                    c["ms_per_record_median"],
                    c["duplicate_records_per_second_median"],
                ]
                for name, c in consumers.items()
            ],
        ),
    ]
    return "Consumer cost", lines


def cold_start(f: Figures, _doc: dict[str, Any]) -> tuple[str, list[str]]:
    functions = {k: v for k, v in f["functions"].items()}
    lines = [
        f"Each figure from fresh interpreters ({f['runs']} per handler, medians): the time to import the "
        "handler module (`functions/<name>/app.py`, which builds its Powertools Logger/Tracer/Metrics and "
        "resolver at import) against the time to import only the third-party modules that import brings in, "
        "and the peak RSS (`getrusage` maxrss) of a process that imports the handler and handles one event "
        "from `events/` against MariaDB and moto. Tracing is disabled, but the X-Ray SDK is still imported.",
        "",
        *table(
            [
                "Function",
                "import ms",
                "third-party only ms",
                "handler / third-party",
                "imports SQLAlchemy",
                "peak RSS MiB",
                "memory rule MB",
                "rules' MemorySize MB",
                "deciding rule",
                "template MemorySize MB",
            ],
            [
                [
                    name,
                    c["import_ms_median"],
                    c["third_party_import_ms_median"],
                    _x(c["handler_over_third_party"]),
                    "yes" if c["imports_sqlalchemy"] else "no",
                    _maybe(c["peak_rss_mib_median"]),
                    _maybe(c["memory_size_mb_from_rule"]),
                    _maybe(c["memory_size_mb"]),
                    c["memory_size_rule"],
                    c["template_memory_size_mb"],
                ]
                for name, c in functions.items()
            ],
        ),
        "",
        f"A bare interpreter peaks at {fmt(f['bare_interpreter_peak_rss_mib'])} MiB RSS.",
        "",
        "MemorySize is the largest of three rules, each from the figures above: **memory** — twice the peak "
        f"RSS in steps of {f['memory_step_mb']} MB, at least {f['memory_floor_mb']} MB; **cold start** (the "
        f"payment callback only) — Lambda gives one vCPU at {f['full_vcpu_mb']} MB and CPU in proportion "
        "below, so the import measured here on one core takes `import ms x "
        f"{f['full_vcpu_mb']} / MemorySize` there; keep it within {fmt(f['callback_import_budget_ms'])} ms; "
        "**relay CPU** — the relay's CPU per message (relay throughput above) within half of the time SNS "
        "takes per message at the bare PublishBatch loop's rate, so that a batch is not CPU-bound on "
        "Lambda's share, up to one vCPU "
        f"({f['one_interpreter_mb']} MB): the relay's Python work runs under one "
        "interpreter lock and cannot use more, so memory past it buys no CPU; more throughput then "
        "comes from fan-out. The template's MemorySize must be at least the rules' (a target).",
    ]
    return "Cold start and memory", lines


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
        f"{', '.join(str(v) for v in f['rule_evidence']['attempts_after_failed_immediate_publish'])}), "
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
                    _maybe(s["drained_minutes_after_recovery"], "not drained"),
                    _maybe(s["oldest_due_under_10s_minutes_after_recovery"], "never"),
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


RENDERERS: dict[str, Callable[[Figures, dict[str, Any]], tuple[str, list[str]]]] = {
    "latency_relay_throughput": relay_throughput,
    "fan_out": fan_out,
    "fallback_latency": fallback_latency,
    "latency_callback": latency_callback,
    "latency_commit_to_publish": commit_to_publish,
    "claim_cost": claim_cost,
    "reconcile_cost": reconcile_cost,
    "consumer_cost": consumer_cost,
    "cold_start": cold_start,
    "capacity_simulation": capacity_simulation,
    "cost": cost,
}


# --- the documents ----------------------------------------------------------------------------------


def _ordered(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    sections = doc["sections"]
    known = [k for k in ORDER if k in sections]
    return [(k, sections[k]) for k in known + [k for k in sections if k not in ORDER]]


def _load_line(load: dict[str, Any]) -> str:
    during = load["during"]
    return (
        f"load average (1, 5, 15 min) at the start {', '.join(fmt(v) for v in load['at_start'])}, at the end "
        f"{', '.join(fmt(v) for v in load['at_end'])}; the one-minute load sampled every "
        f"{fmt(during['every_seconds'])} s while measuring: mean {fmt(during['mean'])}, max "
        f"{fmt(during['max'])}, on {load['cpus']} CPUs"
    )


def benchmarks_md(doc: dict[str, Any]) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python -m bench`), rendered from docs/benchmarks.json by bench/render.py; "
        "do not edit by hand.",
        "",
    ]
    targets = [t for _k, s in _ordered(doc) for t in s.get("targets", [])]
    failed = [(k, s) for k, s in _ordered(doc) if s.get("failed")]
    if failed:
        lines += ["## Sections that could not measure", ""]
        lines += [f"- {k}: {s['error']}" for k, s in failed]
        lines.append("")
    if targets:
        lines += ["## Targets", "", "| Target | Measured | Bound | Met |", "|---|---|---|---|"]
        lines += [
            f"| {t['description']} | {fmt(t['value'])} | {t['op']} {fmt(t['bound'])} | "
            f"{'yes' if t['met'] else '**no**'} |"
            for t in targets
        ]
        lines.append("")
    lines += ["## Machine", ""]
    lines += [f"- {name}: {value}" for name, value in doc["machine"].items()]
    lines += [f"- {_load_line(doc['load'])}", f"- wall time: {fmt(doc['wall_seconds'])} s", ""]
    lines += ["## Settings", ""]
    lines += [f"- {name}: {_setting(value)}" for name, value in doc["settings"].items()]
    lines += ["", "## Method", ""]
    lines += [f"- {item}" for item in METHOD]
    for key, section in _ordered(doc):
        if section.get("failed"):
            lines += ["", f"## {section['title']}", "", f"Not measured: {section['error']}"]
            continue
        title, body = RENDERERS[key](section["figures"], doc)
        lines += ["", f"## {title}", "", *body]
    lines += [
        "",
        "## Load on the local stack",
        "",
        "`make load` drives create + signed callback with locust against a local stack on MariaDB: its "
        "figures and how they are taken are in [docs/load.md](load.md), apart from the figures above.",
    ]
    return "\n".join(lines).rstrip() + "\n"


def _setting(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_setting(v) for v in value)
    return fmt(value) if isinstance(value, int | float) and not isinstance(value, bool) else str(value)


METHOD = [
    "The relay's figures are measured against the latency SNS (bench/latency_sns.py): an asyncio HTTP "
    "endpoint in its own process that speaks the SNS query protocol for Publish and PublishBatch, answers "
    "every call after a fixed delay (the settings' delay; calls wait concurrently), refuses what SNS "
    "refuses with SNS's error codes, records the round trip it gave each call, and fails on demand "
    "(outage, throttling, failed entries); botocore reaches it through AWS_ENDPOINT_URL_SNS.",
    "Fan-out runs the relay's real handler in separate processes, started by the relay's own launcher "
    "through a stand-in Lambda Invoke endpoint (AWS_ENDPOINT_URL_LAMBDA).",
    "The consumers and the cold-start probes use moto (`ThreadedMotoServer` in a child process on a free "
    "loopback port), provisioned from template.yaml; their durations describe the emulator as much as "
    "our code, their call and capacity-unit counts do not.",
    "MariaDB in a database of the benchmark's own, named uniquely per run, migrated with the project's "
    "Alembic migrations and dropped at the end.",
    "Every headline figure is a ratio of two things measured in the same run, in alternating or rotating "
    "order, or a median over repeated rounds. A section that cannot measure, or a missed target, makes "
    "`make bench` exit non-zero.",
    "Every figure in this report, in docs/capacity.md and in the capacity figure is rendered from "
    "docs/benchmarks.json (bench/render.py); `python -m bench.render` renders them again from it.",
]


CHANGES = [
    "- **SMS sending** (usually the first limit with default quotas): raise the SMS spend limit and the "
    "sending rate for the destination countries. `SmsMaximumConcurrency` (the SMS event source's "
    "`ScalingConfig.MaximumConcurrency`) paces the consumer at the quota instead of failing into the "
    "DLQ; the rest of the pipeline (points, the order, the outbox) is unaffected.",
    "- **The relay, while the after-commit publish fails**: normally the callback publishes its own "
    "messages and the relay idles; during an outage every message waits for it. A run that finds more "
    "due rows than it can drain before its deadline starts up to `MaxRelayConcurrency - 1` more (the "
    "fan-out section above); if the backlog still grows (`OldestDueMessageAgeSeconds`, "
    "`RelaysStarted`), raise `MaxRelayConcurrency`. Each relay adds two short transactions per claim on "
    "the database.",
    "- **SNS publish**: request a quota increase; both paths already use PublishBatch.",
    "- **API Gateway**: request a quota increase, or create orders elsewhere so that only the callback "
    "passes through this API.",
    "- **Lambda concurrency**: reserve concurrency for PaymentApi, cap the consumers with their "
    "event sources' `MaximumConcurrency`, raise the account quota; a consumer scaling out can starve "
    "the payment API otherwise.",
    "- **DynamoDB**: request a table quota increase; keys are random message ids or one balance item "
    "per user, so a partition's limit is reached only by one very busy user.",
    "- **The database**: each order is a few short write transactions and each concurrent API instance "
    "holds one connection. Commit latency and the writer's CPU decide the ceiling, which this benchmark "
    "(a local MariaDB on a shared disk) cannot say for Aurora: use the RDS Proxy (`CreateDatabase=true` "
    "puts one in front), raise the cluster's `MaxCapacity` (its ServerlessV2ScalingConfiguration in "
    "template.yaml) when `DatabaseCapacityAlarm` fires, and load "
    "test in the account.",
]


def capacity_md(doc: dict[str, Any]) -> str:
    sections = doc["sections"]
    lines = [
        "# Capacity: what one paid order costs, where each stage meets its quota, and an outage",
        "",
        "Rendered by `make bench` from docs/benchmarks.json (bench/render.py); do not edit by hand. The "
        "durations and counts are the ones measured in that run (docs/benchmarks.md: the machine, its load "
        "and the method); prices and quotas are the named inputs of bench/prices.py, AWS's published "
        "defaults on the date they state. Check each against the account's Service Quotas and the price "
        "pages before relying on a figure here: accounts and Regions differ, and both change.",
    ]
    for key in (
        "cost",
        "capacity_simulation",
        "fan_out",
        "latency_relay_throughput",
        "fallback_latency",
        "reconcile_cost",
    ):
        section = sections.get(key)
        if section is None:
            continue
        if section.get("failed"):
            lines += ["", f"## {section['title']}", "", f"Not measured: {section['error']}"]
            continue
        title, body = RENDERERS[key](section["figures"], doc)
        lines += ["", f"## {title}", "", *body]
    lines += ["", "## What to change at each limit", "", *CHANGES]
    lines += [
        "",
        "## With ordered delivery (`OrderedDelivery=true`)",
        "",
        "The same stages, on FIFO topics and queues (message-group throughput scope, high-throughput "
        "queues, as the template sets them), whose quotas apply per message group. A stream's rate is "
        "bounded by one publish plus one consumer invocation per message, since the relay claims only a "
        "stream's head and a FIFO queue delivers a group's next message once the previous one is done; "
        "every order is its own streams, so this limits a busy business key, not the number of orders. "
        "The claim's cost with waiting streams is measured in docs/architecture.md (*Per-stream order*).",
    ]
    return "\n".join(lines).rstrip() + "\n"


def capacity_figure(doc: dict[str, Any]) -> Any:
    """The outage's backlog over time, one line per fan-out bound: rows waiting and the oldest due row's
    age, the outage shaded (a matplotlib Figure)."""
    import matplotlib

    matplotlib.use("svg")
    import matplotlib.pyplot as plt

    section = doc["sections"].get("capacity_simulation")
    plt.rcParams.update({"svg.hashsalt": "payment-outbox", "font.size": 10, "svg.fonttype": "none"})
    figure, (rows_axis, age_axis) = plt.subplots(2, 1, figsize=(9, 7), sharex=True, layout="constrained")
    if section is None or section.get("failed"):
        figure.suptitle("Capacity simulation not measured in this run")
    else:
        f = section["figures"]
        outage_minutes = f["inputs"]["outage_minutes"]
        for summary in f["scenarios"]:
            curve = f["curves"][str(summary["max_relays"])]
            minutes = [point[0] / 60 for point in curve]
            label = (
                "one relay"
                if summary["max_relays"] == 1
                else f"fan-out, MaxRelayConcurrency {summary['max_relays']}"
            )
            drained = summary["drained_minutes_after_recovery"]
            label += (
                f": drained {fmt(drained)} min after recovery" if drained is not None else ": not drained"
            )
            rows_axis.plot(minutes, [point[1] / 1e6 for point in curve], linewidth=2, label=label)
            age_axis.plot(minutes, [point[2] / 60 for point in curve], linewidth=2, label=label)
        ends = [s["drained_minutes_after_recovery"] for s in f["scenarios"]]
        if all(e is not None for e in ends):  # show the recovery, not the quiet hour after it
            rows_axis.set_xlim(0, outage_minutes + max(ends) + f["inputs"]["schedule_period"] / 60 * 5)
        for axis in (rows_axis, age_axis):
            axis.axvspan(0, outage_minutes, color="0.92", label="_nolegend_")
            axis.grid(True, color="0.85", linewidth=0.6)
        rows_axis.text(
            outage_minutes / 2,
            0.95,
            "SNS down",
            transform=rows_axis.get_xaxis_transform(),
            ha="center",
            va="top",
            color="0.4",
        )
        rows_axis.set_ylabel("rows waiting (millions)")
        age_axis.set_ylabel("oldest due row's age (minutes)")
        age_axis.set_xlabel("minutes since SNS went down")
        rows_axis.legend(loc="upper right", frameon=True)
        inputs = f["inputs"]
        figure.suptitle(
            f"{fmt(inputs['orders_per_second'])} orders/s, SNS down {fmt(outage_minutes)} min: "
            "the backlog after recovery"
        )
    return figure


def capacity_svg(doc: dict[str, Any]) -> str:
    """The figure as SVG text, written without dates or random ids: the same JSON, the same file."""
    import matplotlib.pyplot as plt

    figure = capacity_figure(doc)
    out = io.StringIO()
    figure.savefig(out, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(figure)
    return out.getvalue()


def render(doc: dict[str, Any]) -> dict[str, str]:
    """Every document, by file name, from the JSON alone."""
    return {
        "benchmarks.md": benchmarks_md(doc),
        "capacity.md": capacity_md(doc),
        "capacity-drain.svg": capacity_svg(doc),
    }


def write(doc: dict[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in render(doc).items():
        path = out / name
        path.write_text(content, encoding="utf-8")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.render", description=__doc__)
    parser.add_argument(
        "--json",
        type=Path,
        default=Path("docs/benchmarks.json"),
        help="the report to render (docs/benchmarks.json)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("docs"), help="where the Markdown and the SVG go (docs)"
    )
    args = parser.parse_args(argv)
    for path in write(json.loads(args.json.read_text(encoding="utf-8")), args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
