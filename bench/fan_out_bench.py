"""Fan-out, proven: a backlog one relay run cannot drain before its deadline, drained by relays that
the real fan-out path starts.

Each relay is the real handler (``functions/outbox_relay/app.py``) in a process of its own, as a
Lambda container: a scheduled run is invoked with a Lambda context whose timeout is ``run_seconds``;
when it decides to fan out, it invokes its own function asynchronously through boto3 (the relay's
``LambdaRelayLauncher``), which reaches a stand-in Lambda service on loopback
(``AWS_ENDPOINT_URL_LAMBDA``). The stand-in answers 202 and queues each event for the function's other
containers, warm processes started beforehand, which run the handler with the event (a fanned-out run
stops by its starter's deadline). MAX_RELAY_CONCURRENCY is set per configuration, as the template sets
it from MaxRelayConcurrency.

The figures: how many relays each configuration started, and the messages per second of all relays
together in the window where every started relay was draining (from the rows' own sent times), for
1, 2 and 4; and whether the latency SNS accepted exactly one entry per row sent (none published twice).
"""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sqlalchemy import text

from bench.data import count_by_status, insert_backlog, reset_outbox
from bench.env import ROOT
from bench.stats import Section, Target, median
from payment_outbox.adapters.db.engine import make_engine
from payment_outbox.domain.outbox import OutboxStatus

FUNCTION = "OutboxRelayFunction"
HANDLER = ROOT / "functions" / "outbox_relay" / "app.py"


class LambdaStandIn:
    """Lambda's Invoke API on loopback, for ``InvocationType=Event``: each event is queued for the
    function's containers; counts what it was asked to start."""

    def __init__(self, events: Any) -> None:
        self.invoked = 0
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("X-Amz-Invocation-Type") != "Event" or "/functions/" not in self.path:
                    self.send_response(400)
                    self.end_headers()
                    return
                name = self.path.split("/functions/")[1].split("/")[0]
                stand_in.invoked += 1
                events.put((name, json.loads(body or b"{}")))
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _container(environment: dict[str, str], events: Any, results: Any, timeout_seconds: float) -> None:
    """A warm Lambda container of the relay function: its environment, the handler imported and its
    relay built (as after a first invocation), then one handler call per event until told to stop."""
    os.environ.update(environment)
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the handler logs to stdout, as in Lambda
    from payment_outbox_dev.local.harness import LambdaContext

    spec = importlib.util.spec_from_file_location("outbox_relay_app", HANDLER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.scheduled_relay().relay.oldest_due_age_seconds()  # connect before the clock starts
    results.put(("ready", os.getpid(), 0.0, 0.0, 0))
    while (item := events.get()) is not None:
        name, event = item
        started = time.time()
        answer = module.lambda_handler(
            event, LambdaContext(function_name=name, timeout_seconds=timeout_seconds)
        )
        results.put(("done", os.getpid(), started, time.time(), int(answer["published"])))


def fan_out_run(
    *,
    database_url: str,
    environment: dict[str, str],
    sns: Any,
    max_relays: int,
    rows: int,
    run_seconds: float,
) -> dict[str, Any]:
    """One scheduled run of ``run_seconds`` over a backlog of ``rows`` with MaxRelayConcurrency
    ``max_relays``; what it started and how fast all relays together drained."""
    context = multiprocessing.get_context("spawn")
    fanned, scheduled, results = context.Queue(), context.Queue(), context.Queue()
    lambda_service = LambdaStandIn(fanned)
    env = {
        **environment,
        "MAX_RELAY_CONCURRENCY": str(max_relays),
        "AWS_ENDPOINT_URL_LAMBDA": lambda_service.endpoint,
        "AWS_ENDPOINT_URL_SNS": os.environ["AWS_ENDPOINT_URL_SNS"],
    }
    processes = [context.Process(target=_container, args=(env, scheduled, results, run_seconds))]
    processes += [
        context.Process(target=_container, args=(env, fanned, results, run_seconds + 5))
        for _ in range(max_relays - 1)
    ]
    engine = make_engine(database_url)
    try:
        for process in processes:
            process.start()
        relay_pids = []
        for _ in processes:
            kind, pid, *_ = results.get(timeout=180)
            if kind != "ready":
                raise RuntimeError("a relay container did not start")
            relay_pids.append(pid)
        reset_outbox(engine)
        rows = insert_backlog(engine, rows, first_order=30_000_000)
        sns.reset_stats()
        cpu_before = CpuSnapshot.take(relay_pids)
        started = time.time()
        scheduled.put((FUNCTION, {"source": "aws.events", "detail-type": "Scheduled Event"}))
        runs: list[dict[str, Any]] = []
        expected = 1
        deadline = started + run_seconds + 60
        while len(runs) < expected:
            try:
                _kind, pid, run_started, run_ended, published = results.get(
                    timeout=max(1.0, deadline - time.time())
                )
            except queue.Empty as exc:
                raise RuntimeError(f"relay runs did not finish: {len(runs)} of {expected}") from exc
            runs.append({"pid": pid, "started": run_started, "ended": run_ended, "published": published})
            expected = 1 + lambda_service.invoked
        cpu_after = CpuSnapshot.take(relay_pids)
        cpu = cpu_after.since(cpu_before) if cpu_after else None
        served = sns.stats()
        sent = count_by_status(engine).get(int(OutboxStatus.SENT), 0)
        # Every started relay draining: from the last run's start to the first run's end.
        window_start = max(r["started"] for r in runs)
        window_end = min(r["ended"] for r in runs)
        in_window = _sent_between(engine, window_start, window_end)
    finally:
        for _ in processes:
            scheduled.put(None)
            fanned.put(None)
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
        lambda_service.close()
        reset_outbox(engine)
        engine.dispose()
    window = max(1e-9, window_end - window_start)
    return {
        "max_relays": max_relays,
        "rows": rows,
        "run_seconds": run_seconds,
        "relays_started": lambda_service.invoked,
        "relay_runs": len(runs),
        "rows_sent_by_the_deadline": sent,
        "backlog_left_at_the_deadline": rows - sent,
        "window_seconds": window,
        "messages_per_second": in_window / window,
        "sns_entries_accepted": served["entries"],
        "rows_published_twice": max(0, served["entries"] - sent),
        "sns_round_trip_ms": served["round_trip_ms"],
        # Where the machine's CPU went during the run: every relay and stand-in shares its cores.
        "cores_busy": cpu.cores_busy if cpu else None,
        "relay_cpu_seconds": cpu.relay_seconds if cpu else None,
        "relay_cpu_ms_per_message": cpu.relay_seconds * 1000 / sent if cpu and sent else None,
        "relay_runs_detail": [
            {
                "started_s": r["started"] - started,
                "ended_s": r["ended"] - started,
                "published": r["published"],
            }
            for r in sorted(runs, key=lambda r: r["started"])
        ],
    }


@dataclass(frozen=True)
class CpuSnapshot:
    """The machine's busy and total CPU time (all cores, /proc/stat) and the relay processes' own
    (/proc/PID/stat), in seconds; Linux only (elsewhere ``take`` gives None)."""

    wall: float
    busy: float
    relays: float

    @classmethod
    def take(cls, relay_pids: Sequence[int]) -> CpuSnapshot | None:
        ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        try:
            with open("/proc/stat", encoding="ascii") as stat:
                fields = [int(v) for v in stat.readline().split()[1:]]
            relays = 0
            for pid in relay_pids:
                with open(f"/proc/{pid}/stat", encoding="ascii") as own:
                    after_name = own.read().rsplit(")", 1)[1].split()
                relays += int(after_name[11]) + int(after_name[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            return None
        idle = fields[3] + fields[4]  # idle, iowait
        return cls(time.monotonic(), (sum(fields[:8]) - idle) / ticks, relays / ticks)

    def since(self, earlier: CpuSnapshot | None) -> CpuUse | None:
        if earlier is None or self.wall <= earlier.wall:
            return None
        return CpuUse(
            cores_busy=(self.busy - earlier.busy) / (self.wall - earlier.wall),
            relay_seconds=self.relays - earlier.relays,
        )


@dataclass(frozen=True)
class CpuUse:
    #: Cores kept busy on average (by anything: relays, MariaDB, the latency SNS, the rest).
    cores_busy: float
    #: CPU seconds the relay containers spent, together.
    relay_seconds: float


def _median_measured(values: Sequence[float | None]) -> float | None:
    """The median, or None when a run could not measure it (no /proc)."""
    return None if any(v is None for v in values) else median([v for v in values if v is not None])


def _sent_between(engine: Any, start: float, end: float) -> int:
    """Rows whose sent time (UTC, as the relay records it) falls within [start, end) epoch seconds."""
    with engine.connect() as conn:
        sent = conn.execute(text("SELECT sent_time FROM message_record WHERE status = 1")).scalars().all()
    return sum(1 for t in sent if start <= t.replace(tzinfo=UTC).timestamp() < end)


def fan_out_section(
    *,
    database_url: str,
    environment: dict[str, str],
    sns: Any,
    relays: Sequence[int],
    run_seconds: float,
    one_relay_rate: float,
    rounds: int,
    progress: Callable[[str], None],
) -> Section:
    """1, 2 and 4 relays (MaxRelayConcurrency) on a backlog one run cannot drain: sized from the
    single relay's rate measured in this run, so that even all of them cannot drain it in time."""
    # The scheduled run starts MaxRelayConcurrency - 1 more only when the due rows exceed that many
    # runs' worth at its own rate: size the backlog at the largest bound's worth of whole runs, with
    # room for a run faster than the one measured, so every configuration starts all it may.
    rows = int(one_relay_rate * run_seconds * max(relays) * 1.5)
    by_relays: dict[str, list[dict[str, Any]]] = {str(n): [] for n in relays}
    for round_no in range(rounds):
        for n in relays:
            outcome = fan_out_run(
                database_url=database_url,
                environment=environment,
                sns=sns,
                max_relays=n,
                rows=rows,
                run_seconds=run_seconds,
            )
            by_relays[str(n)].append(outcome)
            progress(
                f"fan-out round {round_no + 1}/{rounds}, MaxRelayConcurrency {n}: "
                f"{outcome['relays_started']} started, {outcome['messages_per_second']:.0f} msg/s, "
                f"{outcome['backlog_left_at_the_deadline']} left"
            )
    one = str(relays[0])
    summary: dict[str, dict[str, Any]] = {}
    for key, outcomes in by_relays.items():
        summary[key] = {
            "relays_started": [o["relays_started"] for o in outcomes],
            "messages_per_second_median": median([o["messages_per_second"] for o in outcomes]),
            "messages_per_second_rounds": [o["messages_per_second"] for o in outcomes],
            "over_one_relay_median": median(
                [
                    o["messages_per_second"] / b["messages_per_second"]
                    for o, b in zip(outcomes, by_relays[one], strict=True)
                ]
            ),
            "backlog_left_at_the_deadline": [o["backlog_left_at_the_deadline"] for o in outcomes],
            "rows_published_twice": sum(o["rows_published_twice"] for o in outcomes),
            "window_seconds": [o["window_seconds"] for o in outcomes],
            "cores_busy_median": _median_measured([o["cores_busy"] for o in outcomes]),
            "relay_cpu_ms_per_message_median": _median_measured(
                [o["relay_cpu_ms_per_message"] for o in outcomes]
            ),
        }
    section = Section("fan_out", "Fan-out: relays started by the real fan-out path")
    section.figures = {
        "backlog_rows": max(o["rows"] for outcomes in by_relays.values() for o in outcomes),
        "run_seconds": run_seconds,
        "rounds": rounds,
        "one_relay_rate_sizing_the_backlog": one_relay_rate,
        "cpus": os.cpu_count(),
        "by_max_relays": summary,
        "runs": by_relays,
    }
    targets = [
        Target(
            "Rows published twice, every fan-out configuration",
            sum(s["rows_published_twice"] for s in summary.values()),
            "<=",
            0,
        ),
    ]
    for n in relays[1:]:
        wanted = n - 1
        targets.append(
            Target(
                f"Relays started by fan-out with MaxRelayConcurrency {n} (fewest in a round)",
                min(summary[str(n)]["relays_started"]),
                ">=",
                wanted,
            )
        )
    targets.append(
        Target(
            "Fan-out backlog left at the run's deadline, fewest rows (one run could not drain it)",
            min(min(s["backlog_left_at_the_deadline"]) for s in summary.values()),
            ">=",
            1,
        )
    )
    if "2" in summary:
        targets.append(
            Target("Fan-out throughput, 2 relays vs 1", summary["2"]["over_one_relay_median"], ">=", 1.6)
        )
    section.targets = targets
    return section
