"""The relay's sections: its throughput against the latency SNS, fan-out, and the fallback path."""

from __future__ import annotations

from typing import Any

from bench.report.format import Figures, or_missing, percent, times
from payment_outbox_dev.measurement import fmt, table


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
        f"Real / bare: **{times(f['real_over_bare_median'])}**; real / naive: "
        f"**{times(f['real_over_naive_median'])}** (medians of per-round ratios).",
        "",
        f"Where the real relay's CPU goes (a separate run of {rows['real']} rows, each part on its own "
        f"threads' CPU clocks; {fmt(profile['cpu_ms_per_message'])} ms per message in all):",
        "",
        *table(
            ["Part", "CPU ms / message", "share"],
            [[k, v, percent(profile["parts_share"][k])] for k, v in profile["parts_ms_per_message"].items()],
        ),
        "",
        f"Inside one PublishBatch call of {f['batch_entries']} messages (cProfile of "
        f"{profile['profiled_calls']} calls one after another; time spent waiting on the network left out):",
        "",
        *table(
            ["", "share of the call's CPU"],
            [[k, percent(v)] for k, v in profile["publish_call_cpu_share"].items()],
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
                f"cores busy, of {f['cpus']} (median)",
                "relay CPU ms per message (median)",
            ],
            [
                [
                    n,
                    ", ".join(str(v) for v in s["relays_started"]),
                    s["messages_per_second_median"],
                    times(s["over_one_relay_median"]),
                    ", ".join(str(v) for v in s["backlog_left_at_the_deadline"]),
                    s["rows_published_twice"],
                    or_missing(s.get("cores_busy_median")),
                    or_missing(s.get("relay_cpu_ms_per_message_median")),
                ]
                for n, s in by.items()
            ],
        ),
        "",
        "Cores busy: the machine's CPU over each run, by anything (the relays, MariaDB, the latency SNS); "
        "relay CPU: the relay processes' own, per row they sent. Every relay here shares the machine's "
        "cores with the others and with the stand-ins, where on Lambda each has its own share: once the "
        "cores are busy, another relay adds little.",
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
        "(the rows wait for their after-commit lease), or **SNS refused the after-commit publish** (the real "
        "after-commit path against a second latency SNS that is down: the rows are retried after the retry "
        f"policy's first backoff). A scheduler process runs the real relay every {period} s with a "
        f"{period} s timeout, polling within its run (the schedule compressed from its minute; the "
        f"after-commit lease with it, {fmt(f['after_commit_lease_seconds'])} s); it publishes to the "
        "healthy latency SNS. Times from the rows' own columns (commit, due, sent). "
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
                    percent(v["run_alive_share_of_period"]),
                ]
                for p, v in phases.items()
            ],
        ),
        "",
        "- A run keeps polling while a pending row falls due before it must stop; it knows every row that "
        "died after its commit (its due time is its after-commit lease's end, at least a period away), so "
        "those rows wait at most the run's safety margin past falling due. A failed after-commit publish "
        "falls due soon after: a run that is alive publishes it within a poll interval; when no run is "
        "alive (the second phase: nothing else pending) it waits for the next scheduled run — up to the "
        "period.",
    ]
    return "The fallback path: rows that missed the after-commit publish", lines
