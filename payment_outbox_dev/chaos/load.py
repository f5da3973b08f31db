"""``make load``: locust against local stacks of its own on MariaDB/MySQL, headless, for a bounded time
per worker count; records what it measured and renders docs/load.md's figures from that record.

    python -m payment_outbox_dev.chaos.load [--workers 1,2,4] [--users 8] [--seconds 30] [--out docs]

For each worker count it starts the emulator and ``payment-outbox local`` (that many processes per
function, on a database unique to the run, dropped after), runs payment_outbox_dev/chaos/locustfile.py
headless with --users clients for --seconds, and keeps locust's final statistics: paid orders per
second (callbacks answered 200 with the order PAID, over the run time) and the latency percentiles of
order creation and of the callback. Then it writes OUT/load.json (the figures, the inputs, the machine
and its load average while measuring) and renders the figures part of OUT/load.md from that JSON alone
(python -m payment_outbox_dev.chaos.load_figures renders it again without measuring).

It exits 1, with one line saying why, when any request failed, a run paid no order or could not
measure at all. Progress goes to stderr; stdout gets the rendered figures.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess  # nosec B404 - starts this project's own processes
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

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
from payment_outbox_dev.measurement import LoadSampler, machine_info

#: The names the locustfile gives its two requests in locust's statistics.
CREATE, NOTIFY = "POST /orders", "POST /payments/notify"
#: The latency percentiles recorded per request (as locust takes them: 0..1).
PERCENTILES = (0.5, 0.95, 0.99)
#: How long locust may run past its --run-time (its own start and stop) before it is killed.
LOCUST_MARGIN_SECONDS = 120
PROGRESS_POLL_SECONDS = 1.0
LOAD_WEBHOOK_SECRET = "load-webhook-secret-signs-its-own-callbacks"  # noqa: S105 - signs its own callbacks  # nosec B105
#: What the record's figures count, in the words the JSON carries beside them.
UNITS = {
    "paid_orders": "callbacks answered 200 with the order PAID, during the run",
    "paid_orders_per_second": "paid orders over the run's seconds (inputs.seconds)",
    "latency_ms": "locust's response-time percentiles, milliseconds",
    "failed_requests": "requests locust counted failed: a creation not answered 201, a callback not "
    "answered 200 with the order PAID, or no answer",
    "load": "the one-minute load average (payment_outbox_dev.measurement.LoadSampler)",
    "wall_seconds": "the whole sweep, seconds",
}
DEFAULT_WORKERS = (1, 2, 4)
DEFAULT_USERS = 8
DEFAULT_SECONDS = 30


def run_load(
    root: Path, *, workers: int, users: int, seconds: int, server_url: str, progress: Progress
) -> dict[str, Any]:
    """One run: a stack of ``workers`` processes per function driven by locust; its figures."""
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
                try:
                    wait_until_serving(api, stack, log)
                except RuntimeError as exc:  # the log goes with the scratch folder: keep its last word
                    raise RuntimeError(f"{exc}; its log ends: {_last_line(log)}") from exc
                progress.phase(f"locust drives {users} client(s) for {seconds} s")
                statistics = _drive(api, scratch, users=users, seconds=seconds, progress=progress)
                progress.phase("stopping the stack")
            finally:
                os.killpg(stack.pid, signal.SIGINT)
                try:
                    stack.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(stack.pid, signal.SIGKILL)
                    stack.wait(timeout=10)
    return run_figures(statistics, workers=workers, seconds=seconds)


def _drive(api: str, scratch: Path, *, users: int, seconds: int, progress: Progress) -> dict[str, Any]:
    """Locust, headless, for ``seconds``: the final statistics its locustfile writes as it quits."""
    stats_file = scratch / "locust-statistics.json"
    locust_log = scratch / "locust.log"
    locust = Path(sys.executable).parent / "locust"
    with locust_log.open("wb") as sink:
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
                "--only-summary",
                "--loglevel",
                "WARNING",
            ],
            env={
                **os.environ,
                "LOAD_WEBHOOK_SECRET": LOAD_WEBHOOK_SECRET,
                "LOAD_DATA_DIR": str(scratch / "stack"),
                "LOAD_STATS_FILE": str(stats_file),
            },
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        _follow(driving, seconds, progress)
    if not stats_file.is_file():
        raise RuntimeError(
            f"locust wrote no statistics (exit code {driving.returncode}); its log ends: "
            f"{_last_line(locust_log)}"
        )
    loaded: dict[str, Any] = json.loads(stats_file.read_text(encoding="utf-8"))
    return {**loaded, "exit_code": driving.returncode}


def _follow(driving: subprocess.Popen[bytes], seconds: int, progress: Progress) -> None:
    """Wait for locust (at most its run time and a margin), saying how far it got."""
    started = time.monotonic()
    while driving.poll() is None:
        elapsed = time.monotonic() - started
        if elapsed > seconds + LOCUST_MARGIN_SECONDS:
            driving.kill()
            driving.wait(timeout=10)
            raise RuntimeError(f"locust did not stop within {LOCUST_MARGIN_SECONDS} s of its run time")
        progress.done(min(seconds, int(elapsed)))
        time.sleep(PROGRESS_POLL_SECONDS)
    progress.done(seconds)


def _last_line(log: Path) -> str:
    lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines() if log.is_file() else []
    return lines[-1].strip() if lines else "(empty)"


def run_figures(statistics: dict[str, Any], *, workers: int, seconds: int) -> dict[str, Any]:
    """One run's record from locust's final statistics: a paid order is a callback that succeeded."""
    by_name = statistics["requests"]
    notify = by_name.get(NOTIFY, {"count": 0, "failures": 0})
    paid = notify["count"] - notify["failures"]
    return {
        "workers": workers,
        "error": None,
        "paid_orders": paid,
        "paid_orders_per_second": paid / seconds,
        "failed_requests": sum(r["failures"] for r in by_name.values()),
        "requests": by_name,
        "errors": statistics["errors"],
        "exceptions": statistics["exceptions"],
        "locust_exit_code": statistics["exit_code"],
    }


def problems(doc: dict[str, Any]) -> list[str]:
    """What makes the sweep a failure, one phrase per run that failed: it could not measure, a request
    failed, or it paid no order."""
    found = []
    for run in doc["runs"]:
        if run["error"]:
            said = [f"not measured ({run['error']})"]
        else:
            said = []
            if run["failed_requests"]:
                first = run["errors"][0] if run["errors"] else None
                example = f" (first: {first['request']} {first['error']})" if first else ""
                said.append(f"{run['failed_requests']} failed request(s){example}")
            if run["exceptions"]:
                first = run["exceptions"][0]
                said.append(
                    f"{len(run['exceptions'])} kind(s) of exception in the clients (first: {first['error']})"
                )
            if run["paid_orders"] <= 0:
                said.append("no paid order")
            if run["locust_exit_code"] and not said:
                said.append(f"locust exited with {run['locust_exit_code']}")
        if said:
            found.append(" ".join(f"{run['workers']} worker(s): {', '.join(said)}".split()))
    return found


def database_server(server_url: str) -> dict[str, str]:
    """Where the runs' databases are made, and what answers there (its own version string)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = make_url(server_url)
    engine = create_engine(url.set(database=""))
    try:
        with engine.connect() as conn:
            version = str(conn.execute(text("SELECT VERSION()")).scalar_one())
    finally:
        engine.dispose()
    return {"server": f"{url.host}:{url.port or 3306}", "version": version}


def one_line(exc: BaseException) -> str:
    said = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {said}" if said else type(exc).__name__


def measure(
    root: Path,
    *,
    workers: list[int],
    users: int,
    seconds: int,
    server_url: str,
    database: dict[str, str],
    log: TextIO,
) -> dict[str, Any]:
    """The sweep, one stack per worker count, as the JSON records it."""
    from importlib.metadata import version

    started = time.monotonic()
    overall = LoadSampler()
    runs = []
    for count in workers:
        sampler = LoadSampler()
        progress = Progress(f"load ({count} worker(s))", seconds, log, unit="s of load")
        try:
            run = run_load(
                root, workers=count, users=users, seconds=seconds, server_url=server_url, progress=progress
            )
        except Exception as exc:  # one run that cannot measure must not cost the others their figures
            progress.phase(f"could not measure: {exc!r}")
            run = {"workers": count, "error": one_line(exc)}
        run["load"] = sampler.stop()
        runs.append(run)
    return {
        "units": UNITS,
        "machine": machine_info(),
        "load": overall.stop(),
        "wall_seconds": time.monotonic() - started,
        "inputs": {
            "users": users,
            "seconds": seconds,
            "workers": workers,
            "time_scale": DEFAULT_TIME_SCALE,
            "database": database,
            "locust": version("locust"),
        },
        "runs": runs,
    }


def _worker_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of worker counts: {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"worker counts must be 1 or more: {text!r}")
    return counts


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more: {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    from sqlalchemy.engine import make_url

    from payment_outbox_dev.arguments import find_root

    parser = argparse.ArgumentParser(
        prog="python -m payment_outbox_dev.chaos.load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--workers",
        type=_worker_counts,
        default=list(DEFAULT_WORKERS),
        help="worker processes per function, one run and stack per value, comma-separated (1,2,4)",
    )
    parser.add_argument(
        "--users", type=_positive, default=DEFAULT_USERS, help=f"concurrent locust clients ({DEFAULT_USERS})"
    )
    parser.add_argument(
        "--seconds",
        type=_positive,
        default=DEFAULT_SECONDS,
        help=f"how long locust drives each stack ({DEFAULT_SECONDS})",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("docs"),
        help="where load.json is written and load.md's figures rendered (docs)",
    )
    parser.add_argument(
        "--server-url",
        default=os.environ.get("LOAD_SERVER_URL", DEFAULT_SERVER_URL),
        help="MariaDB/MySQL server without a database; each run makes a database of its own there and "
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
    try:
        database = database_server(args.server_url)
    except Exception as exc:  # the driver's own error for a refused, unknown or denied server
        server = make_url(args.server_url).render_as_string()  # the password, if any, hidden
        print(f"load: FAILED: no database server answers at {server}: {one_line(exc)}", file=sys.stderr)
        return 1
    doc = measure(
        root,
        workers=args.workers,
        users=args.users,
        seconds=args.seconds,
        server_url=args.server_url,
        database=database,
        log=sys.stderr,
    )
    from payment_outbox_dev.chaos import load_figures

    json_path = load_figures.write_json(doc, args.out)
    markdown_path = load_figures.write_markdown(doc, args.out)
    print(load_figures.figures_section(doc), flush=True)
    print(f"load: wrote {json_path} and the figures of {markdown_path}", file=sys.stderr, flush=True)
    failed = problems(doc)
    if failed:
        print(f"load: FAILED: {'; '.join(failed)}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
