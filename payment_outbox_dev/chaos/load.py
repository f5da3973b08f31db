"""``make load``: locust against a local stack of its own on MariaDB/MySQL, headless, for a bounded time.

    python -m payment_outbox_dev.chaos.load [--workers 2] [--users 8] [--seconds 30] [--server-url mysql+pymysql://...]

Starts the emulator and ``payment-outbox local`` (``--workers`` processes per function, a database
unique to the run, dropped after), runs ``payment_outbox_dev/chaos/locustfile.py`` headless with ``--users``
concurrent clients for ``--seconds``, and prints paid orders per second and the latency percentiles
of order creation and of the callback (ms), from locust's own statistics.
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import subprocess  # nosec B404 - starts this project's own processes
import sys
import tempfile
import time
from pathlib import Path

from payment_outbox_dev.chaos.processes import (
    DEFAULT_SERVER_URL,
    emulator_process,
    free_port,
    run_database,
    start_stack,
    wait_until_serving,
)
from payment_outbox_dev.chaos.report import Progress
from payment_outbox_dev.local.timing import DEFAULT_TIME_SCALE

#: The names the locustfile gives its two requests in locust's statistics.
CREATE, NOTIFY = "POST /orders", "POST /payments/notify"
#: How long locust may run past its --run-time (its own start and stop) before it is killed.
LOCUST_MARGIN_SECONDS = 120
PROGRESS_POLL_SECONDS = 1.0
LOAD_WEBHOOK_SECRET = "load-webhook-secret-signs-its-own-callbacks"  # noqa: S105 - signs its own callbacks  # nosec B105


def run_load(
    root: Path, *, workers: int, users: int, seconds: int, server_url: str, progress: Progress | None = None
) -> dict[str, dict[str, float]]:
    """Locust's figures per request name (``POST /orders``, ``POST /payments/notify``, ``Aggregated``)."""
    progress = progress or Progress("load", seconds, unit="s of load")
    progress.phase(
        f"starting the emulator and a stack ({workers} worker(s) per function) on a database of its own"
    )
    with tempfile.TemporaryDirectory(prefix="payment-outbox-load-") as scratch_name:
        scratch = Path(scratch_name)
        with run_database(server_url) as database_url, emulator_process(scratch) as emulator_url:
            port = free_port()
            api = f"http://127.0.0.1:{port}"
            log = scratch / "stack.log"
            stack = start_stack(
                root,
                api_port=port,
                emulator_url=emulator_url,
                database_url=database_url,
                data_dir=scratch / "stack",
                workers=workers,
                time_scale=DEFAULT_TIME_SCALE,
                webhook_secret=LOAD_WEBHOOK_SECRET,
                log=log,
            )
            try:
                wait_until_serving(api, stack, log)
                progress.phase(f"locust drives {users} client(s) for {seconds} s")
                locust = Path(sys.executable).parent / "locust"
                driving = subprocess.Popen(  # noqa: S603  # nosec B603 - fixed argv, no shell
                    [
                        str(locust),
                        "-f",
                        str(Path(__file__).with_name("locustfile.py")),
                        "--headless",
                        "--host",
                        api,
                        "--users",
                        str(users),
                        "--spawn-rate",
                        str(users),
                        "--run-time",
                        f"{seconds}s",
                        "--csv",
                        str(scratch / "load"),
                        "--only-summary",
                        "--loglevel",
                        "WARNING",
                    ],
                    env={
                        **os.environ,
                        "LOAD_WEBHOOK_SECRET": LOAD_WEBHOOK_SECRET,
                        "LOAD_DATA_DIR": str(scratch / "stack"),
                    },
                    stdout=subprocess.DEVNULL,
                )
                _follow(driving, seconds, progress)
                progress.phase("stopping the stack")
            finally:
                os.killpg(stack.pid, signal.SIGINT)
                try:
                    stack.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(stack.pid, signal.SIGKILL)
                    stack.wait(timeout=10)
            with (scratch / "load_stats.csv").open() as handle:
                return {row["Name"]: _figures(row) for row in csv.DictReader(handle)}


def _follow(driving: subprocess.Popen[bytes], seconds: int, progress: Progress) -> None:
    """Wait for locust (at most its run time and a margin), saying how far it got."""
    started = time.monotonic()
    while driving.poll() is None:
        elapsed = time.monotonic() - started
        if elapsed > seconds + LOCUST_MARGIN_SECONDS:
            driving.kill()
            driving.wait(timeout=10)
            return
        progress.done(min(seconds, int(elapsed)))
        time.sleep(PROGRESS_POLL_SECONDS)
    progress.done(seconds)


def _figures(row: dict[str, str]) -> dict[str, float]:
    def number(name: str) -> float:
        value = row.get(name) or "0"
        return float(value) if value != "N/A" else 0.0

    return {
        "requests": number("Request Count"),
        "failures": number("Failure Count"),
        "rps": number("Requests/s"),
        "p50": number("50%"),
        "p95": number("95%"),
        "p99": number("99%"),
    }


def render(figures: dict[str, dict[str, float]], *, workers: int, users: int, seconds: int) -> str:
    notify = figures.get(NOTIFY, {})
    paid = notify.get("requests", 0) - notify.get("failures", 0)
    lines = [
        f"load: {users} clients for {seconds} s, {workers} worker(s) per function",
        f"paid orders/s: {paid / seconds:.1f}"
        f"  ({paid:.0f} paid, {notify.get('failures', 0):.0f} callbacks failed)",
        "request                 count  fail   p50 ms   p95 ms   p99 ms",
    ]
    for name in (CREATE, NOTIFY):
        f = figures.get(name)
        if f:
            counts = f"{name:<22} {f['requests']:6.0f} {f['failures']:5.0f}"
            lines.append(f"{counts} {f['p50']:8.0f} {f['p95']:8.0f} {f['p99']:8.0f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from payment_outbox_dev.arguments import find_root

    parser = argparse.ArgumentParser(
        prog="python -m payment_outbox_dev.chaos.load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--workers", type=int, default=2, help="worker processes per function (2)")
    parser.add_argument("--users", type=int, default=8, help="concurrent locust clients (8)")
    parser.add_argument("--seconds", type=int, default=30, help="how long locust drives the stack (30)")
    parser.add_argument(
        "--server-url",
        default=os.environ.get("LOAD_SERVER_URL", DEFAULT_SERVER_URL),
        help="MariaDB/MySQL server without a database; the run makes a database of its own there and "
        "drops it after (default $LOAD_SERVER_URL, else root@127.0.0.1:3306)",
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=None,
        help="project folder holding template.yaml (default: found from here)",
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    root = (args.root or find_root(Path.cwd())).resolve()
    figures = run_load(
        root,
        workers=args.workers,
        users=args.users,
        seconds=args.seconds,
        server_url=args.server_url,
        progress=Progress("load", args.seconds, sys.stderr, unit="s of load"),
    )
    print(render(figures, workers=args.workers, users=args.users, seconds=args.seconds), flush=True)
    notify = figures.get(NOTIFY, {})
    return 0 if notify.get("requests", 0) > 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
