"""``python -m bench``: run every benchmark against MariaDB, the latency SNS and moto, write
docs/benchmarks.json, and render the report from it (bench/render.py).

python -m bench              # the full run (make bench)
python -m bench --quick      # a smoke run: small sizes, one round

It exits non-zero when a section could not measure or a target was missed. The wall time of the run
that wrote the committed report is in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.stats import Report, Section
from payment_outbox_dev.measurement import LoadSampler, machine_info

SECTIONS = (
    "latency-relay",
    "fan-out",
    "fallback",
    "latency-callback",
    "claim",
    "reconcile",
    "consumer",
    "cold",
    "capacity",
    "cost",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes and one round: a smoke run")
    parser.add_argument("--rounds", type=int, help="repeated rounds per benchmark (default 3; quick 1)")
    parser.add_argument("--big-rows", type=int, help="sent rows in the large claim table (default 1,000,000)")
    parser.add_argument("--claims", type=int, help="claims per round and table (default 100)")
    parser.add_argument("--relays", default="1,2,4", help="MaxRelayConcurrency values for fan-out (1,2,4)")
    parser.add_argument(
        "--fan-out-seconds", type=float, help="the fan-out run's Lambda timeout, s (default 20)"
    )
    parser.add_argument(
        "--fan-out-rounds",
        type=int,
        help="fan-out rounds, each running every MaxRelayConcurrency value in turn; the speed-up is the "
        "median of the rounds' own ratios (default 3; quick 1)",
    )
    parser.add_argument("--callbacks", type=int, help="payment callbacks per variant (default 300)")
    parser.add_argument(
        "--reconcile-rows", type=int, help="sent rows in the reconciler's window (default 100,000)"
    )
    parser.add_argument("--consumer-batches", type=int, help="batches of 10 per consumer round (default 5)")
    parser.add_argument("--import-runs", type=int, help="fresh processes per import figure (default 5)")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="latency SNS delay per call (20)")
    parser.add_argument("--latency-rows", type=int, help="due rows per latency relay run (default 6,000)")
    parser.add_argument("--naive-rows", type=int, help="due rows per naive relay run (default 150)")
    parser.add_argument("--fallback-seconds", type=float, help="orders per fallback phase, s (default 20)")
    parser.add_argument("--fallback-period", type=float, help="compressed schedule period, s (default 20)")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument(
        "--server-url",
        default=os.environ.get("BENCH_SERVER_URL"),
        help="MariaDB/MySQL server URL without a database (default root@127.0.0.1:3306)",
    )
    parser.add_argument("--out", type=Path, default=Path("docs"), help="where the JSON and the docs go")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "rounds": 1 if quick else 3,
        "big_rows": 20_000 if quick else 1_000_000,
        "claims": 20 if quick else 100,
        "callbacks": 20 if quick else 300,
        "reconcile_rows": 5_000 if quick else 100_000,
        "consumer_batches": 1 if quick else 5,
        "import_runs": 2 if quick else 5,
        "latency_rows": 1_000 if quick else 6_000,
        "naive_rows": 60 if quick else 150,
        "fan_out_seconds": 15.0 if quick else 20.0,
        "fan_out_rounds": 1 if quick else 3,
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    log = sys.stderr

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", file=log, flush=True)

    from bench.env import DEFAULT_SERVER_URL, world
    from bench.prices import as_inputs
    from payment_outbox.services.reconcile import ReconcileLimits

    server_url = args.server_url or DEFAULT_SERVER_URL
    load = LoadSampler()
    report = Report(
        machine=machine_info(),
        settings={
            "mode": "quick" if args.quick else "full",
            "latency SNS delay per call, ms": args.latency_ms,
            "rounds": args.rounds,
            "latency relay rows per run": args.latency_rows,
            "naive relay rows per run": args.naive_rows,
            "fan-out: MaxRelayConcurrency values": args.relay_counts,
            "fan-out: the run's Lambda timeout, s": args.fan_out_seconds,
            "fan-out: rounds": args.fan_out_rounds,
            "fallback: seconds of orders per phase": args.fallback_seconds,
            "fallback: compressed schedule period, s": args.fallback_period,
            "sent rows in the large claim table": args.big_rows,
            "claims per round": args.claims,
            "sent rows in the reconciler's window": args.reconcile_rows,
            "payment callbacks per variant": args.callbacks,
            "consumer batches per round": args.consumer_batches,
            "fresh processes per import figure": args.import_runs,
        },
        inputs=as_inputs(),
    )

    def measured(key: str) -> dict[str, Any] | None:
        section = next((s for s in report.sections if s.key == key and not s.failed), None)
        return section.figures if section else None

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
            cost,
            fallback_bench,
            fan_out_bench,
            latency_bench,
            reconcile_bench,
        )

        def at_latency(run: Callable[[Any], Section | tuple[Section, ...]]) -> Callable[[], Any]:
            def wrapped() -> Section | tuple[Section, ...]:
                with latency_bench.latency_sns(
                    bench_world.database_url, bench_world.topic_arn, args.latency_ms
                ) as latency_world:
                    return run(latency_world)

            return wrapped

        def one_relay_rate() -> float:
            relay = measured("latency_relay_throughput")
            if relay is None:
                raise RuntimeError(
                    "fan-out sizes its backlog from the relay throughput section of the same run"
                )
            return float(relay["messages_per_second_median"]["real"])

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
                "fan-out",
                at_latency(
                    lambda lw: fan_out_bench.fan_out_section(
                        database_url=bench_world.database_url,
                        environment=bench_world.environments["OutboxRelayFunction"],
                        sns=lw.sns,
                        relays=args.relay_counts,
                        run_seconds=args.fan_out_seconds,
                        one_relay_rate=one_relay_rate(),
                        rounds=args.fan_out_rounds,
                        progress=progress,
                    )
                ),
            ),
            (
                "fallback",
                at_latency(
                    lambda lw: fallback_bench.fallback_latency(
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
                    lambda lw: api_bench.callback_latency(
                        bench_world,
                        samples=args.callbacks,
                        rounds=args.rounds,
                        progress=progress,
                        bare_publishes=True,
                        delay_ms=lw.delay_ms,
                    )
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
                "reconcile",
                lambda: reconcile_bench.reconcile_cost(
                    bench_world.database_url,
                    rows=args.reconcile_rows,
                    page_size=ReconcileLimits().sent_page_size,
                    rounds=args.rounds,
                    progress=progress,
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
                    relay_figures=measured("latency_relay_throughput"),
                ),
            ),
            (
                "capacity",
                at_latency(
                    lambda lw: capacity_sim.capacity_section(
                        lw.sns,
                        bench_world.database_url,
                        measured("latency_relay_throughput"),
                        measured("cold_start"),
                    )
                ),
            ),
            ("cost", lambda: cost.cost_section(report.to_json()["sections"])),
        ]
        for name, run in runs:
            if name not in args.sections:
                continue
            progress(f"--- {name}")
            try:
                result = run()
            except Exception as exc:  # one broken benchmark must not cost the figures of the others
                progress(f"{name} failed: {exc!r}\n{traceback.format_exc()}")
                report.sections.append(
                    Section(name, f"{name}: not measured", failed=True, error=f"{type(exc).__name__}: {exc}")
                )
                continue
            report.sections += list(result) if isinstance(result, tuple) else [result]
    report.load = load.stop()
    report.wall_seconds = time.monotonic() - started
    json_path = args.out / "benchmarks.json"
    report.write(json_path)
    from bench.report import pages

    for path in pages.write(report.to_json(), args.out):
        progress(f"wrote {path}")
    for section in report.sections:
        for target in section.targets:
            progress(
                f"{'MET ' if target.met else 'MISS'} {target.description}: {target.value:.3g} "
                f"{target.op} {target.bound:g}"
            )
    progress(f"wrote {json_path}")
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


if __name__ == "__main__":
    raise SystemExit(main())
