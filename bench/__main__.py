"""``python -m bench``: run every benchmark against MariaDB, the latency SNS and moto, and write
the report.

python -m bench              # the full run (make bench), about 8-10 minutes on 2 cores
python -m bench --quick      # a smoke run in a minute or two

The relay's figures are measured against the latency SNS (bench/latency_sns.py: every call answered
after a fixed delay, no per-message work), so they describe our code at a realistic round trip; the
figures measured against moto follow in their own, emulator-bound sections.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.stats import Report, Section, machine_info

LATENCY_SECTIONS = ("latency-relay", "latency-relays", "fallback", "latency-callback", "capacity")
MOTO_SECTIONS = ("relay", "claim", "relays", "callback", "consumer", "cold")
SECTIONS = LATENCY_SECTIONS + MOTO_SECTIONS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes and one round: a smoke run")
    parser.add_argument("--rounds", type=int, help="repeated rounds per benchmark (default 3; quick 1)")
    parser.add_argument("--relay-rows", type=int, help="due rows per relay throughput run (default 600)")
    parser.add_argument("--big-rows", type=int, help="sent rows in the large claim table (default 1,000,000)")
    parser.add_argument("--claims", type=int, help="claims per round and table (default 100)")
    parser.add_argument(
        "--concurrent-rows", type=int, help="backlog for the several-relays runs (default 2,000)"
    )
    parser.add_argument("--relays", default="1,2,4", help="relay counts to compare (default 1,2,4)")
    parser.add_argument("--callbacks", type=int, help="payment callbacks per variant (default 300)")
    parser.add_argument("--consumer-batches", type=int, help="batches of 10 per consumer round (default 5)")
    parser.add_argument("--import-runs", type=int, help="fresh processes per import figure (default 7)")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="latency SNS delay per call (20)")
    parser.add_argument("--latency-rows", type=int, help="due rows per latency relay run (default 6,000)")
    parser.add_argument("--naive-rows", type=int, help="due rows per naive relay run (default 150)")
    parser.add_argument("--fan-out-rows", type=int, help="backlog for the fan-out run (default 30,000)")
    parser.add_argument("--fallback-seconds", type=float, help="orders per fallback phase, s (default 20)")
    parser.add_argument("--fallback-period", type=float, help="compressed schedule period, s (default 20)")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument(
        "--server-url",
        default=os.environ.get("BENCH_SERVER_URL"),
        help="MariaDB/MySQL server URL without a database (default root@127.0.0.1:3306)",
    )
    parser.add_argument("--out", type=Path, default=Path("docs"), help="where benchmarks.md/.json go")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "rounds": 1 if quick else 3,
        "relay_rows": 100 if quick else 600,
        "big_rows": 20_000 if quick else 1_000_000,
        "claims": 20 if quick else 100,
        "concurrent_rows": 200 if quick else 2_000,
        "callbacks": 20 if quick else 300,
        "consumer_batches": 1 if quick else 5,
        "import_runs": 2 if quick else 7,
        "latency_rows": 1_000 if quick else 6_000,
        "naive_rows": 60 if quick else 150,
        "fan_out_rows": 4_000 if quick else 30_000,
        "fallback_seconds": 8.0 if quick else 20.0,
        "fallback_period": 10.0 if quick else 20.0,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.relay_counts = [int(n) for n in args.relays.split(",")]
    args.sections = args.only.split(",") if args.only else list(SECTIONS)
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    return args


METHOD = [
    "The relay's headline figures (sections 1-4) are measured against the latency SNS "
    "(bench/latency_sns.py): an asyncio HTTP endpoint in its own process that speaks the SNS query "
    "protocol for Publish and PublishBatch, answers every call after a fixed delay (20 ms, a "
    "realistic round trip to SNS; calls wait concurrently) and does no per-message work beyond echoing "
    "each entry's id; botocore reaches it through AWS_ENDPOINT_URL_SNS. It fails on demand (outage, "
    "throttling, failed entries) for the fallback-path figures.",
    "The sections marked emulator-bound publish to moto instead: there moto's single-threaded server "
    "and its delivery to SQS inside each call are the limit, so their ratios describe the emulator "
    "as much as our code; they are kept for continuity with earlier runs.",
    "One process drives everything; moto (`ThreadedMotoServer`) runs in a child process on a free "
    "loopback port so it does not share the benchmark's interpreter lock; boto3 reaches it through "
    "AWS_ENDPOINT_URL with dummy credentials. The template's topics, queues, SNS→SQS subscriptions "
    "(raw delivery, filter policies) and tables are provisioned from template.yaml.",
    "MariaDB on 127.0.0.1:3306, in a database of the benchmark's own, named uniquely per run "
    "(payment_outbox_bench_<pid>_<random>, migrated with the project's Alembic migrations, dropped at "
    "the end), so that runs sharing the server never meet.",
    "Every headline figure is a ratio of two things measured in the same run, in alternating or "
    "rotating order, and every figure is the median over repeated rounds. No figure is a pass/fail "
    "test; the targets table only reports whether a ratio is on the right side of its bound.",
    "moto's SendMessage rescans the whole queue on each message, so publishing slows as a queue "
    "fills (real SQS does not): the queues are purged continuously while publishing is measured and "
    "between rounds (moto's one-purge-a-minute rule is switched off in its process).",
    "Latencies are wall-clock (`time.perf_counter`) around the real call; DynamoDB calls are counted "
    "with botocore event hooks, not timed.",
]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    log = sys.stderr

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", file=log, flush=True)

    from bench.env import DATABASE_NAME, DEFAULT_SERVER_URL, world

    server_url = args.server_url or DEFAULT_SERVER_URL
    load_at_start = _loadavg()
    report = Report(
        machine=machine_info(),
        settings={
            "mode": "quick" if args.quick else "full",
            "load average at start (1, 5, 15 min)": load_at_start,
            "latency SNS delay per call": f"{args.latency_ms:g} ms",
            "rounds": args.rounds,
            "latency relay rows per run (naive relay)": f"{args.latency_rows} ({args.naive_rows})",
            "fan-out backlog": args.fan_out_rows,
            "fallback: seconds of orders per phase, compressed schedule period": (
                f"{args.fallback_seconds:g} s, {args.fallback_period:g} s"
            ),
            "relay rows per run (moto)": args.relay_rows,
            "sent rows in the large claim table": f"{args.big_rows:,}",
            "claims per round": args.claims,
            "several-relays backlog": args.concurrent_rows,
            "relay counts": args.relay_counts,
            "payment callbacks per variant": args.callbacks,
            "consumer batches of 10 per round": args.consumer_batches,
            "fresh processes per import figure": args.import_runs,
            "database": DATABASE_NAME,
        },
        method=METHOD,
    )
    # The handlers log through Powertools to stdout, as in Lambda; keep the terminal for progress.
    with (
        open(os.devnull, "w") as devnull,
        contextlib.redirect_stdout(devnull),
        world(server_url) as bench_world,
    ):
        from bench import (
            api_bench,
            capacity_sim,
            claim_bench,
            cold_start,
            consumer_bench,
            latency_bench,
            relay_bench,
        )

        def at_latency(run: Callable[[Any], Section | tuple[Section, ...]]) -> Callable[[], Any]:
            def wrapped() -> Section | tuple[Section, ...]:
                with latency_bench.latency_sns(
                    bench_world.database_url, bench_world.topic_arn, args.latency_ms
                ) as latency_world:
                    return run(latency_world)

            return wrapped

        runs: list[tuple[str, Callable[[], Section | tuple[Section, ...]]]] = [
            (
                "latency-relay",
                at_latency(
                    lambda lw: latency_bench.relay_throughput(
                        lw,
                        rows=args.latency_rows,
                        naive_rows=args.naive_rows,
                        rounds=max(1, min(args.rounds, 3)),
                        progress=progress,
                    )
                ),
            ),
            (
                "latency-relays",
                at_latency(
                    lambda lw: latency_bench.relays_section(
                        lw,
                        rows=args.latency_rows,
                        relays=args.relay_counts,
                        rounds=1,
                        fan_out_rows=args.fan_out_rows,
                        progress=progress,
                    )
                ),
            ),
            (
                "fallback",
                at_latency(
                    lambda lw: latency_bench.fallback_latency(
                        lw,
                        seconds=args.fallback_seconds,
                        period=args.fallback_period,
                        rate=1.0,
                        progress=progress,
                    )
                ),
            ),
            (
                "latency-callback",
                at_latency(
                    lambda _lw: api_bench.callback_latency(
                        bench_world,
                        samples=args.callbacks,
                        rounds=args.rounds,
                        progress=progress,
                        bare_publishes=True,
                    )
                ),
            ),
            (
                "capacity",
                lambda: capacity_sim.capacity_section(
                    next((s.figures for s in report.sections if s.key == "latency_relay_throughput"), None),
                    args.out / "capacity-drain.svg",
                ),
            ),
            (
                "relay",
                lambda: relay_bench.relay_throughput(
                    bench_world, rows=args.relay_rows, rounds=args.rounds, progress=progress
                ),
            ),
            (
                "claim",
                lambda: claim_bench.claim_cost(
                    bench_world.database_url,
                    big_rows=args.big_rows,
                    claims=args.claims,
                    rounds=args.rounds,
                    progress=progress,
                ),
            ),
            (
                "relays",
                lambda: relay_bench.concurrent_relays(
                    bench_world,
                    rows=args.concurrent_rows,
                    rounds=max(1, min(args.rounds, 3)),
                    relays=args.relay_counts,
                    progress=progress,
                ),
            ),
            (
                "callback",
                lambda: api_bench.callback_latency(
                    bench_world, samples=args.callbacks, rounds=args.rounds, progress=progress
                ),
            ),
            (
                "consumer",
                lambda: consumer_bench.consumer_cost(
                    bench_world, batches=args.consumer_batches, rounds=args.rounds, progress=progress
                ),
            ),
            (
                "cold",
                lambda: cold_start.cold_start(
                    bench_world,
                    runs=args.import_runs,
                    progress=progress,
                    relay_figures=next(
                        (s.figures for s in report.sections if s.key == "relay_throughput"), None
                    ),
                ),
            ),
        ]
        for name, run in runs:
            if name not in args.sections:
                continue
            progress(f"--- {name}")
            try:
                result = run()
            except Exception as exc:  # one broken benchmark must not cost the figures of the others
                progress(f"{name} failed: {exc!r}")
                failed = Section(name, f"{name}: not measured", failed=True)
                failed.notes = [f"This benchmark failed: {type(exc).__name__}: {exc}"]
                report.sections.append(failed)
                continue
            sections = list(result) if isinstance(result, tuple) else [result]
            if name in MOTO_SECTIONS:
                for section in sections:
                    section.title = f"Emulator-bound (moto): {section.title}"
                    for target in section.targets:
                        target.description = f"[moto] {target.description}"
                    if section.key == "relay_throughput":
                        section.notes.append(
                            "The relay runs as deployed (RELAY_MAX_IN_FLIGHT requests in flight) against "
                            "moto's single process, which does each message's delivery to SQS inside the "
                            "call: concurrent requests queue up there. Section 1 measures the relay itself."
                        )
            report.sections += sections
    report.settings["load average at end (1, 5, 15 min)"] = _loadavg()
    report.settings["wall time"] = f"{time.monotonic() - started:.0f} s"
    markdown_path, json_path = args.out / "benchmarks.md", args.out / "benchmarks.json"
    report.write(markdown_path, json_path)
    for section in report.sections:
        for target in section.targets:
            progress(
                f"{'MET ' if target.met else 'MISS'} {target.description}: {target.value:.3g} "
                f"{target.op} {target.bound:g}"
            )
    progress(f"wrote {markdown_path} and {json_path}")
    return exit_status(report, progress)


def exit_status(report: Report, say: Callable[[str], None]) -> int:
    """Non-zero when any section could not measure or any target was missed: a benchmark that
    fails must fail the command, whatever the report says."""
    failed = [s.key for s in report.sections if s.failed]
    missed = [t.description for s in report.sections for t in s.targets if not t.met]
    for key in failed:
        say(f"FAILED section: {key}")
    for description in missed:
        say(f"MISSED target: {description}")
    return 1 if failed or missed else 0


def _loadavg() -> str:
    """How busy the shared machine was: every figure here competes with it for the 2 cores."""
    try:
        return ", ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
