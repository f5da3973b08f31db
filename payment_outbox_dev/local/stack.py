"""The local stack: the whole system live on one machine — no Docker, no AWS account.

    payment-outbox local [--api-port 3000] [--emulator-port 5000] [--data-dir .local-stack] ...

What runs, all derived from template.yaml:

- an AWS emulator (moto's server) on ``--emulator-port``, provisioned with the template's topics,
  queues with their DLQs and redrive policies, raw-delivery subscriptions with filter policies, and
  DynamoDB tables; ``AWS_ENDPOINT_URL`` points every boto3 client of the handlers at it;
- the database: SQLite in the data directory, or MySQL at ``--database-url``; migrated on start;
- the API: every ``Api`` event of the template served on ``--api-port``, each HTTP request turned into
  the API Gateway proxy event its function gets, and the function's result back into HTTP;
- every ``Schedule`` event, fired at its rate times ``--time-scale``;
- every ``SQS`` event source: the queue polled (by as many pollers as the function has workers) and
  the function invoked with real SQS batch events, with partial batch failures honoured — failed
  records come back after the queue's visibility timeout and, past the queue's maxReceiveCount, the
  emulator's redrive moves them to the DLQ;
- the template's single-metric alarms, evaluated on the metrics the handlers emit (EMF).

Each function runs in worker processes of its own (``--workers`` per function,
``payment_outbox_dev.local.workers``), like Lambda containers: supervised, replaced when they die, a worker
killed mid-invocation being a container dying mid-invocation. The emulator and the database live
outside the workers. Every duration the stack shortens is shortened by one factor,
``--time-scale`` (``payment_outbox_dev.local.timing``), so the template's orderings keep holding.

Local-only controls live under ``/_local/`` on the API port — they are not in the template and do
not exist in AWS: ``GET /_local/routes``, ``GET /_local/state``, ``GET /_local/workers``,
``POST /_local/faults``. The API's OpenAPI document is served at ``GET /openapi.json``.

On a clean stop (Ctrl-C, SIGTERM) the emulator's state is saved to the data directory and loaded on
the next start (see ``payment_outbox_dev.local.snapshot``); the SQLite file is the database itself.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
import warnings
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any, TextIO
from urllib.parse import parse_qs, urlsplit

import boto3

from payment_outbox_dev.checks.template import (
    AlarmSpec,
    Route,
    ScheduleSource,
    SqsEventSource,
    alarms,
    api_routes,
    load_template,
    resources_of_type,
    schedules,
    sqs_event_sources,
)
from payment_outbox_dev.local.describe import describe as _describe
from payment_outbox_dev.local.describe import mask_phones
from payment_outbox_dev.local.emulator import EmulatorServer, Faults, SnsCall
from payment_outbox_dev.local.harness import REGION, Delivery, LocalFunctions
from payment_outbox_dev.local.provision import Provisioned, provision
from payment_outbox_dev.local.timing import DEFAULT_TIME_SCALE, Timing, scaled_timing
from payment_outbox_dev.local.workers import (
    FunctionPool,
    InvocationFailed,
    Outcome,
    WorkerDied,
    WorkerSpec,
    worker_context,
)

#: The webhook secret the local stack verifies callbacks with unless told otherwise.
LOCAL_WEBHOOK_SECRET = "local-webhook-secret"  # noqa: S105  # nosec B105 - local only, signs local callbacks
CONTROL_PREFIX = "/_local/"
#: The API's OpenAPI document (docs/openapi.json), served beside the routes.
OPENAPI_PATH = "/openapi.json"
CONTROL_ROUTES = (
    ("GET", "/_local/routes", "the API routes served, from template.yaml"),
    ("GET", "/_local/state", "faults, metrics, alarms, resources, timing, workers and outbox rows"),
    ("GET", "/_local/workers", "each function's worker processes (pid, busy)"),
    ("POST", "/_local/faults", 'set or clear a fault: {"sns": "outage" | "reject" | null}'),
)
SNAPSHOT_FILE = "emulator-state.json"
DATABASE_FILE = "payment_outbox.db"
DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "local",  # emulator credentials  # nosec B105
    "AWS_SECRET_ACCESS_KEY": "local",  # nosec B105
    "AWS_SESSION_TOKEN": "local",  # nosec B105
}


@dataclass
class StackConfig:
    root: Path
    host: str = "127.0.0.1"
    api_port: int = 3000
    emulator_port: int = 5000
    #: Attach to an emulator that is already running instead of starting one (its state is its own).
    emulator_url: str | None = None
    data_dir: Path = Path(".local-stack")
    database_url: str | None = None
    poll_interval: float = 1.0
    #: One factor for every duration the stack shortens (payment_outbox_dev.local.timing).
    time_scale: float = DEFAULT_TIME_SCALE
    #: Worker processes per function (each a Lambda container).
    workers: int = 2
    webhook_secret: str = LOCAL_WEBHOOK_SECRET
    parameters: dict[str, str] = field(default_factory=dict)
    verbose: bool = False

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / DATABASE_FILE).resolve()}"


class Narrator:
    """One readable line per thing that happens, from any thread."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def say(self, kind: str, text: str) -> None:
        stamp = datetime.now().strftime("%H:%M:%S")
        self.raw(f"{stamp} {kind:<6} {text}")

    def raw(self, line: str) -> None:
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()


class MetricsBoard:
    """Totals of the metrics handlers emit, and the template's alarms evaluated on them."""

    def __init__(self, specs: list[AlarmSpec]) -> None:
        self._specs = specs
        self._lock = threading.Lock()
        self.totals: dict[str, float] = {}
        self._samples: dict[str, deque[tuple[float, float]]] = {s.logical_id: deque() for s in specs}
        self.states: dict[str, str] = {s.logical_id: "OK" for s in specs}

    def record(self, document: dict[str, Any], now: float | None = None) -> list[tuple[AlarmSpec, float]]:
        """Add one EMF document; returns the watched metrics it carried, with their values."""
        now = time.monotonic() if now is None else now
        watched = []
        with self._lock:
            for directive in document.get("_aws", {}).get("CloudWatchMetrics", []):
                for metric in directive.get("Metrics", []):
                    name = metric.get("Name")
                    raw = document.get(name, 0)
                    value = float(sum(raw) if isinstance(raw, list) else raw)
                    self.totals[name] = self.totals.get(name, 0.0) + value
                    for spec in self._specs:
                        if (
                            spec.metric == name
                            and spec.namespace == directive.get("Namespace")
                            and all(document.get(k) == v for k, v in spec.dimensions.items())
                        ):
                            self._samples[spec.logical_id].append((now, value))
                            watched.append((spec, value))
        return watched

    def evaluate(self, now: float | None = None) -> list[tuple[AlarmSpec, str, float]]:
        """Alarms whose state changed: (alarm, new state, the statistic over its period)."""
        now = time.monotonic() if now is None else now
        changed = []
        with self._lock:
            for spec in self._specs:
                samples = self._samples[spec.logical_id]
                while samples and samples[0][0] < now - spec.period_seconds:
                    samples.popleft()
                values = [v for _, v in samples]
                statistic = _statistic(spec.statistic, values)
                state = "ALARM" if values and spec.breached(statistic) else "OK"
                if state != self.states[spec.logical_id]:
                    self.states[spec.logical_id] = state
                    changed.append((spec, state, statistic))
        return changed

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"metrics": dict(self.totals), "alarms": dict(self.states)}


def _statistic(name: str, values: list[float]) -> float:
    if not values:
        return 0.0
    if name == "Maximum":
        return max(values)
    if name == "Minimum":
        return min(values)
    if name == "Average":
        return sum(values) / len(values)
    if name == "SampleCount":
        return float(len(values))
    return sum(values)


class _PooledFunctions(LocalFunctions):
    """The harness's API Gateway and SQS plumbing, each invocation run by the function's worker pool;
    the supervisor itself never imports a handler."""

    def __init__(self, root: Path, template: dict[str, Any], pools: dict[str, FunctionPool]) -> None:
        super().__init__(root, template)
        self.pools = pools
        self._last = threading.local()

    def invoke(self, logical_id: str, event: dict[str, Any]) -> Any:
        self._last.outcome = None
        outcome = self.pools[logical_id].invoke(event)
        self._last.outcome = outcome
        return outcome.result

    def last_outcome(self) -> Outcome | None:
        """This thread's last invocation that answered (None if it raised or its worker died)."""
        outcome: Outcome | None = getattr(self._last, "outcome", None)
        return outcome


class _NarratingLogHandler(logging.Handler):
    """The library's own log records (``payment_outbox.*``), as narration lines."""

    def __init__(self, narrator: Narrator) -> None:
        super().__init__()
        self._narrator = narrator

    def emit(self, record: logging.LogRecord) -> None:
        self._narrator.say(
            "log", f"{record.levelname.lower()} {record.name.rsplit('.', 1)[-1]}: {record.getMessage()}"
        )


class LocalStack:
    def __init__(self, config: StackConfig, out: TextIO | None = None) -> None:
        self.config = config
        self.narrator = Narrator(out or sys.stdout)
        self.template = load_template(config.root / "template.yaml")
        self.faults = Faults()
        self.metrics = MetricsBoard(alarms(self.template))
        self.resources = Provisioned()
        self.functions: _PooledFunctions | None = None
        self.timing: Timing = scaled_timing(self.template, config.time_scale, config.parameters)
        self.pools: dict[str, FunctionPool] = {}
        self.emulator: EmulatorServer | None = None
        self.emulator_url = ""
        self.api_url = ""
        self._http: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._engine: Any = None
        self._log_handler: logging.Handler | None = None
        self._state_loaded = False
        self._serving = False

    # --- life cycle -------------------------------------------------------------------------------

    @property
    def routes(self) -> list[Route]:
        if self.functions is None:
            raise RuntimeError("start() first")
        return self.functions.routes

    @property
    def snapshot_path(self) -> Path:
        return self.config.data_dir / SNAPSHOT_FILE

    def start(self) -> None:
        config = self.config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        # Bind the API port first: a port in use fails the start before anything else runs.
        self._http = _ApiServer((config.host, config.api_port), _request_handler(self))
        self._http.narrator = self.narrator
        self._configure_process()
        broken = self.timing.violations()
        if broken:
            raise ValueError("--time-scale breaks the template's timing: " + "; ".join(broken))
        if config.emulator_url:
            self.emulator_url = config.emulator_url.rstrip("/")
        else:
            self.emulator = EmulatorServer(
                config.host, config.emulator_port, faults=self.faults, observer=self._on_sns_call
            )
            self.emulator.start()
            self.emulator_url = self.emulator.url
        os.environ["AWS_ENDPOINT_URL"] = self.emulator_url
        self.narrator.say(
            "aws", f"emulator at {self.emulator_url}" + ("" if self.emulator else " (attached)")
        )

        self.resources = provision(
            self.template,
            region=REGION,
            parameters=config.parameters,
            visibility_timeouts=self.timing.visibilities,
        )
        self._narrate_resources()
        if self.emulator is not None:
            self._restore_snapshot()
            # From here on the emulator holds the saved state (or none was saved): stopping may save it.
            self._state_loaded = True

        from payment_outbox.adapters.db.engine import make_engine
        from payment_outbox.migrations.runner import upgrade

        database_url = config.resolved_database_url()
        self._engine = make_engine(database_url)
        upgrade(self._engine)
        self.narrator.say("db", f"{self._engine.url.render_as_string()} (migrated to head)")

        overrides = {
            "DATABASE_URL": database_url,
            "WEBHOOK_SECRET": config.webhook_secret,
            "POWERTOOLS_TRACE_DISABLED": "true",
            # The relay's claims and the payment API's hand-off, leased on the stack's clock.
            "OUTBOX_LEASE_SECONDS": str(self.timing.lease_seconds),
        }
        if not config.verbose:
            overrides["POWERTOOLS_LOG_LEVEL"] = "WARNING"
        self._start_pools(self.resources.environments(self.template, overrides))
        self.functions = _PooledFunctions(config.root, self.template, self.pools)

        host, port = self._http.server_address[:2]
        self.api_url = f"http://{host!s}:{port}"
        self._spawn("api", self._http.serve_forever)
        self._serving = True
        for schedule in schedules(self.template):
            if schedule.enabled:
                self._spawn(f"schedule-{schedule.function}", self._schedule_loop, schedule)
        for source in sqs_event_sources(self.template):
            # Lambda polls with as many concurrent batches as the function may run.
            for number in range(self.pools[source.function].size):
                self._spawn(f"poll-{source.queue}-{number}", self._poll_loop, source)
        self._spawn("watch", self._watch_loop)
        self._spawn("supervise", self._supervise_loop)
        for route in self.routes:
            self.narrator.say("api", f"{route.method:<6} {self.api_url}{route.path}  → {route.function}")
        self.narrator.say(
            "ready",
            f"API {self.api_url} · emulator {self.emulator_url} · data {config.data_dir} · Ctrl-C stops",
        )

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self.narrator.say("stop", "stopping: API, schedules and pollers first")
        if self._http is not None:
            if self._serving:
                self._http.shutdown()
            self._http.server_close()
        for pool in self.pools.values():
            pool.close()
        for pool in self.pools.values():
            pool.stop()
        for thread in self._threads:
            thread.join(timeout=30)
        if self.emulator is not None:
            if self._state_loaded:
                try:
                    self._save_snapshot()
                except Exception as exc:
                    self.narrator.say("error", f"emulator state not saved: {_describe(exc)}")
            self.emulator.stop()
        if self.functions is not None:
            self.functions.close()
        if self._engine is not None:
            self._engine.dispose()
        if self._log_handler is not None:
            logging.getLogger("payment_outbox").removeHandler(self._log_handler)
        self.narrator.say("stop", "stopped")

    def run(self) -> int:
        """Start, serve until SIGINT or SIGTERM, stop cleanly."""
        requested = threading.Event()

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            self.narrator.say("stop", f"{signal.Signals(signum).name} received")
            requested.set()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            try:
                self.start()
            except (OSError, ValueError) as exc:
                self.narrator.say("error", f"cannot start: {exc}")
                return 1
            while not requested.wait(0.5):
                pass
            return 0
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _configure_process(self) -> None:
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
            os.environ.pop(name, None)
        os.environ.update(DUMMY_CREDENTIALS)
        os.environ.update(
            {"AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION, "POWERTOOLS_TRACE_DISABLED": "true"}
        )
        # Consumers emit no metric of their own; Powertools warns about that on every invocation.
        warnings.filterwarnings("ignore", message="No application metrics to publish")
        library = logging.getLogger("payment_outbox")
        self._log_handler = _NarratingLogHandler(self.narrator)
        library.addHandler(self._log_handler)
        library.setLevel(logging.INFO if self.config.verbose else logging.WARNING)
        library.propagate = False

    def _start_pools(self, environments: dict[str, dict[str, str]]) -> None:
        """A pool for each function an event of the template invokes (API, schedule, queue), all
        started at once; each worker gets the function's environment and its time-scaled timeout."""
        invoked = {route.function for route in api_routes(self.template)}
        invoked |= {s.function for s in schedules(self.template) if s.enabled}
        invoked |= {s.function for s in sqs_event_sources(self.template)}
        process_environment = {
            name: value
            for name, value in os.environ.items()
            if name.startswith(("AWS_", "POWERTOOLS_", "PATH", "HOME", "LANG", "TZ", "PYTHON"))
        }
        context = worker_context()
        level = logging.INFO if self.config.verbose else logging.WARNING
        for logical_id in sorted(invoked):
            spec = WorkerSpec(
                root=str(self.config.root),
                logical_id=logical_id,
                environment=process_environment | environments[logical_id],
                timeout_seconds=self.timing.function_timeouts[logical_id],
                library_log_level=level,
            )
            self.pools[logical_id] = FunctionPool(
                spec, self.config.workers, context, self._on_handler_line, self.narrator.say
            )
        errors: list[BaseException] = []

        def start(pool: FunctionPool) -> None:
            try:
                pool.start()
            except BaseException as exc:
                errors.append(exc)

        starters = [threading.Thread(target=start, args=(pool,)) for pool in self.pools.values()]
        for starter in starters:
            starter.start()
        for starter in starters:
            starter.join()
        if errors:
            raise errors[0]
        self.narrator.say(
            "worker",
            f"{self.config.workers} worker process(es) per function: {', '.join(self.pools)}"
            f" · time scale {self.timing.scale:g}",
        )

    def _supervise_loop(self) -> None:
        """Workers that died while idle are replaced at once (not at the next invocation)."""
        while not self._stop.wait(0.2):
            for pool in self.pools.values():
                pool.check()

    def workers(self) -> list[dict[str, Any]]:
        return [worker for pool in self.pools.values() for worker in pool.workers()]

    def _spawn(self, name: str, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    # --- emulator state ---------------------------------------------------------------------------

    def _queues(self) -> dict[str, str]:
        return {q: self.resources.refs[q] for q in resources_of_type(self.template, "AWS::SQS::Queue")}

    def _tables(self) -> list[str]:
        return [self.resources.refs[t] for t in resources_of_type(self.template, "AWS::DynamoDB::Table")]

    def _restore_snapshot(self) -> None:
        from payment_outbox_dev.local import snapshot

        state = snapshot.load(self.snapshot_path)
        if state is None:
            return
        counts = snapshot.restore(boto3.client("dynamodb"), boto3.client("sqs"), state, self._queues())
        self.narrator.say(
            "aws",
            f"restored {counts['items']} item(s) and {counts['messages']} message(s)"
            f" from {self.snapshot_path}",
        )

    def _save_snapshot(self) -> None:
        from payment_outbox_dev.local import snapshot

        state = snapshot.capture(
            boto3.client("dynamodb"),
            boto3.client("sqs"),
            self._tables(),
            self._queues(),
            in_flight_wait_seconds=max(self.timing.visibilities.values(), default=0) + 1,
        )
        snapshot.save(self.snapshot_path, state)
        items = sum(len(v) for v in state["dynamodb"].values())
        messages = sum(len(v) for v in state["sqs"].values())
        self.narrator.say("aws", f"saved {items} item(s) and {messages} message(s) to {self.snapshot_path}")

    def _narrate_resources(self) -> None:
        kinds = {"AWS::SNS::Topic": "topic", "AWS::SQS::Queue": "queue", "AWS::DynamoDB::Table": "table"}
        for resource_type, kind in kinds.items():
            names = ", ".join(resources_of_type(self.template, resource_type))
            self.narrator.say("aws", f"{kind}s: {names}")

    # --- API --------------------------------------------------------------------------------------

    def serve_api(
        self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        if self.functions is None:
            raise RuntimeError("start() first")
        text = body.decode("utf-8", "replace") if body else None
        try:
            result = self.functions.api_result(
                method, path, text, headers, query=query or None, default_content_type=False
            )
        except WorkerDied as exc:
            # API Gateway's answer when the function's container dies without answering.
            self.narrator.say("error", f"{method} {path}: {exc}; answered 502")
            return 502, [("Content-Type", "application/json")], b'{"message": "Internal server error"}'
        except InvocationFailed as exc:
            self.narrator.say("error", f"{method} {path}: the function raised {_why(exc)}; answered 502")
            if self.config.verbose:
                self.narrator.raw(exc.trace)
            return 502, [("Content-Type", "application/json")], b'{"message": "Internal server error"}'
        except Exception as exc:
            self.narrator.say("error", f"{method} {path}: {_describe(exc)}; answered 502")
            if self.config.verbose:
                self.narrator.raw(traceback.format_exc())
            return 502, [("Content-Type", "application/json")], b'{"message": "Internal server error"}'
        response_headers = [(k, str(v)) for k, v in (result.get("headers") or {}).items()]
        for name, values in (result.get("multiValueHeaders") or {}).items():
            response_headers.extend((name, str(v)) for v in values)
        raw = result.get("body") or ""
        payload = _b64decode(raw) if result.get("isBase64Encoded") else str(raw).encode()
        return int(result.get("statusCode", 502)), response_headers, payload

    def serve_openapi(self) -> tuple[int, list[tuple[str, str]], bytes]:
        """The checked-in OpenAPI document (a test keeps it equal to what the handlers declare)."""
        document = self.config.root / "docs" / "openapi.json"
        if not document.exists():
            return 404, [("Content-Type", "application/json")], b'{"message": "docs/openapi.json is missing"}'
        return 200, [("Content-Type", "application/json")], document.read_bytes()

    def serve_control(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        if (method, path) == ("GET", "/_local/routes"):
            return 200, {
                "routes": [{"method": r.method, "path": r.path, "function": r.function} for r in self.routes],
                "control": [{"method": m, "path": p, "what": w} for m, p, w in CONTROL_ROUTES],
            }
        if (method, path) == ("GET", "/_local/state"):
            return 200, self.state()
        if (method, path) == ("GET", "/_local/workers"):
            return 200, {"workers": self.workers(), "timing": self.timing.describe()}
        if (method, path) == ("POST", "/_local/faults"):
            try:
                requested = json.loads(body or b"{}")
                if not isinstance(requested, dict):
                    raise ValueError("expected a JSON object")
                if "sns" in requested:
                    self.faults.set_sns_publish(requested["sns"])
            except ValueError as exc:
                return 400, {"message": str(exc)}
            current = self.faults.snapshot()
            self.narrator.say("fault", f"SNS publish to topics: {current['sns'] or 'healthy'}")
            return 200, {"faults": current}
        return 404, {
            "message": "no such local control",
            "control": [f"{m} {p}" for m, p, _ in CONTROL_ROUTES],
        }

    def state(self) -> dict[str, Any]:
        from sqlalchemy import text

        with self._engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT message_id, topic, business_key, status, retry_count, next_retry_at, last_error,"
                    " sent_time, content FROM message_record ORDER BY id"
                )
            ).all()
        outbox = [
            {
                "messageId": r.message_id,
                "topic": r.topic,
                "businessKey": r.business_key,
                "status": r.status,
                "retryCount": r.retry_count,
                "nextRetryAt": _iso(r.next_retry_at),
                "lastError": r.last_error,
                "sentTime": _iso(r.sent_time),
                "content": r.content,
            }
            for r in rows
        ]
        return {
            "faults": self.faults.snapshot(),
            **self.metrics.snapshot(),
            "resources": dict(self.resources.refs),
            "timing": self.timing.describe(),
            "workers": self.workers(),
            "emulator": self.emulator_url,
            "outbox": outbox,
        }

    # --- schedules, queues, alarms ----------------------------------------------------------------

    def _schedule_loop(self, schedule: ScheduleSource) -> None:
        if self.functions is None:
            raise RuntimeError("start() first")
        period = self.timing.schedule_periods[(schedule.function, schedule.name)]
        while not self._stop.wait(period):
            try:
                result = self.functions.run_scheduled(schedule.function)
            except Exception as exc:
                if self._stop.is_set():
                    return
                self.narrator.say(
                    "error", f"{schedule.function} ({schedule.expression}) raised {_describe(exc)}"
                )
                continue
            if isinstance(result, dict) and result.get("claimed"):
                failed = result.get("failed") or []
                self.narrator.say(
                    "relay",
                    f"{schedule.function}: claimed {result['claimed']}"
                    f" · published {result.get('published', 0)}"
                    f" · retry later {result.get('retried', 0)} · FAILED {len(failed)}"
                    + (f" {', '.join(failed)}" if failed else ""),
                )

    def _poll_loop(self, source: SqsEventSource) -> None:
        if self.functions is None:
            raise RuntimeError("start() first")
        sqs = boto3.client("sqs", region_name=REGION)
        url = self.resources.queue_url(source.queue)
        arn = self.resources.attributes[(source.queue, "Arn")]
        max_receives = self._max_receive_count(source.queue)
        while not self._stop.is_set():
            try:
                delivery = self.functions.deliver(
                    url,
                    source.function,
                    max_messages=source.batch_size,
                    retry_failed_now=False,
                    sqs_client=sqs,
                    queue_arn=arn,
                    reports_item_failures=source.reports_item_failures,
                    handler_errors_fail_batch=True,
                )
            except Exception as exc:
                if self._stop.is_set():
                    return
                self.narrator.say(
                    "error",
                    f"{source.queue} → {source.function}: {_describe(exc)}; polling again",
                )
                self._stop.wait(self.config.poll_interval)
                continue
            if delivery.received == 0:
                self._stop.wait(self.config.poll_interval)
                continue
            if self._stop.is_set() and isinstance(delivery.error, (WorkerDied, RuntimeError)):
                return  # stopping: the batch goes back to the queue untouched
            outcome = self.functions.last_outcome() if delivery.error is None else None
            errors = outcome.record_errors if outcome else {}
            if isinstance(delivery.error, InvocationFailed):
                errors = delivery.error.record_errors
            self._narrate_delivery(source, delivery, max_receives, errors)

    def _narrate_delivery(
        self,
        source: SqsEventSource,
        delivery: Delivery,
        max_receives: int | None,
        record_errors: dict[str, str],
    ) -> None:
        if isinstance(delivery.error, WorkerDied):
            self.narrator.say(
                "error",
                f"{source.queue} → {source.function}: {delivery.error}; its batch settles nothing",
            )
        elif delivery.error is not None:
            self.narrator.say(
                "error",
                f"{source.queue} → {source.function} raised {_why(delivery.error)} (the whole batch failed)",
            )
        ok = [m for m in delivery.messages if m["MessageId"] not in delivery.failed_ids]
        if ok:
            keys = ", ".join(_describe_message(m) for m in ok)
            self.narrator.say("sqs", f"{source.queue} → {source.function}: {len(ok)} record(s) done [{keys}]")
        for message in delivery.messages:
            if message["MessageId"] not in delivery.failed_ids:
                continue
            receives = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
            limit = f"{receives}/{max_receives}" if max_receives else str(receives)
            visibility = self.timing.visibilities.get(source.queue)
            then = (
                "next receive moves it to the dead-letter queue"
                if max_receives and receives >= max_receives
                else f"back in {visibility} s"
            )
            why = record_errors.get(message["MessageId"])
            if why is None and delivery.error is not None:
                why = _why(delivery.error)
            self.narrator.say(
                "retry" if not (max_receives and receives >= max_receives) else "dlq",
                f"{source.queue} → {source.function}: record [{_describe_message(message)}] failed"
                f" (receive {limit}): {why or 'reported failed by the function'}; {then}",
            )

    def _max_receive_count(self, queue: str) -> int | None:
        redrive = (
            resources_of_type(self.template, "AWS::SQS::Queue")[queue]
            .get("Properties", {})
            .get("RedrivePolicy")
        )
        return int(redrive["maxReceiveCount"]) if redrive else None

    def _watch_loop(self) -> None:
        """Dead-letter queues filling up, and alarms changing state."""
        sqs = boto3.client("sqs", region_name=REGION)
        queues = resources_of_type(self.template, "AWS::SQS::Queue")
        dlqs = {}
        for props in (q.get("Properties", {}) for q in queues.values()):
            target = props.get("RedrivePolicy", {}).get("deadLetterTargetArn")
            if isinstance(target, dict) and "Fn::GetAtt" in target:
                name = target["Fn::GetAtt"][0]
                dlqs[name] = self.resources.queue_url(name)
        depths = {name: self._depth(sqs, url) for name, url in dlqs.items()}
        while not self._stop.wait(max(self.config.poll_interval, 0.5)):
            for name, url in dlqs.items():
                depth = self._depth(sqs, url)
                if depth > depths[name]:
                    self.narrator.say(
                        "dlq",
                        f"{name} now holds {depth} message(s) (+{depth - depths[name]}):"
                        " the retry lines above say why; inspect, fix, redrive",
                    )
                depths[name] = depth
            self._narrate_alarms()

    @staticmethod
    def _depth(sqs: Any, url: str) -> int:
        try:
            attributes = sqs.get_queue_attributes(
                QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
            )
        except Exception:
            return 0
        return int(attributes["Attributes"]["ApproximateNumberOfMessages"])

    def _narrate_alarms(self) -> None:
        for spec, state, statistic in self.metrics.evaluate():
            if state == "ALARM":
                self.narrator.say(
                    "ALARM",
                    f"{spec.logical_id}: {spec.metric} {spec.statistic} = {statistic:g}"
                    f" over {spec.period_seconds} s"
                    f" ({spec.comparison} {spec.threshold:g}) → its AlarmActions would be notified",
                )
            else:
                self.narrator.say("alarm", f"{spec.logical_id} back to OK")

    # --- what the handlers and the emulator report ------------------------------------------------

    def _on_handler_line(self, function: str, line: str) -> None:
        try:
            document = json.loads(line)
        except ValueError:
            document = None
        if isinstance(document, dict) and "_aws" in document:
            watched = self.metrics.record(document)
            if self.config.verbose:
                self.narrator.raw(line)
            for spec, value in watched:
                if value:
                    self.narrator.say(
                        "metric", f"{function}: {spec.metric} = {value:g} (watched by {spec.logical_id})"
                    )
            self._narrate_alarms()
        elif self.config.verbose:
            self.narrator.raw(line)
        elif isinstance(document, dict) and "level" in document:
            extras = {
                k: v
                for k, v in document.items()
                if k in ("messageId", "status", "code", "claimed", "published", "retried", "failed")
            }
            detail = " ".join(f"{k}={v}" for k, v in extras.items())
            self.narrator.say(
                "log",
                mask_phones(
                    f"{function} {str(document['level']).lower()}: {document.get('message')} {detail}"
                ),
            )
        else:
            self.narrator.say("out", mask_phones(f"{function}: {line}"))

    def _on_sns_call(self, call: SnsCall) -> None:
        if call.phone:
            from payment_outbox.domain.sms import mask_phone

            self.narrator.say("sms", f"SNS SMS to {mask_phone(call.phone)} (HTTP {call.status})")
            return
        topics = ", ".join(call.topics) or "-"
        if call.fault:
            self.narrator.say(
                "sns",
                f"{call.action} to {call.topic_name} [{topics}] REFUSED by local fault '{call.fault}'",
            )
        else:
            self.narrator.say(
                "sns", f"{call.action} to {call.topic_name}: {len(call.topics)} message(s) [{topics}]"
            )


def _request_handler(stack: LocalStack) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "payment-outbox-local"
        # HTTP/1.1: keep-alive, and ``Expect: 100-continue`` answered before the body is read.
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self._serve()

        do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = do_GET

        def log_message(self, format: str, *args: Any) -> None:
            """The stack narrates each request itself."""

        def _serve(self) -> None:
            try:
                self._answer()
            except (ConnectionError, TimeoutError) as exc:
                # The client went away: nothing to answer, nothing to print but one line.
                self.close_connection = True
                stack.narrator.say("http", f"{self.command} {self.path}: client gone ({_describe(exc)})")

        def _answer(self) -> None:
            started = time.monotonic()
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if url.path == OPENAPI_PATH and self.command in ("GET", "HEAD"):
                status, headers, payload = stack.serve_openapi()
            elif url.path.startswith(CONTROL_PREFIX):
                status, document = stack.serve_control(self.command, url.path, body)
                headers = [("Content-Type", "application/json")]
                payload = json.dumps(document, default=str).encode()
            else:
                query = parse_qs(url.query, keep_blank_values=True)
                request_headers = {name: value for name, value in self.headers.items()}
                status, headers, payload = stack.serve_api(
                    self.command, url.path, query, request_headers, body
                )
            self.send_response(status)
            for name, value in headers:
                if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
            if not url.path.startswith(CONTROL_PREFIX):
                elapsed = (time.monotonic() - started) * 1000
                stack.narrator.say("http", f"{self.command} {url.path} → {status} ({elapsed:.0f} ms)")

    return Handler


def _why(error: BaseException) -> str:
    """A worker's death or a handler's exception as they describe themselves; others by class."""
    return str(error) if isinstance(error, WorkerDied | InvocationFailed) else _describe(error)


class _ApiServer(ThreadingHTTPServer):
    """The API front: one thread per connection, each request handed to the function's worker pool."""

    daemon_threads = True
    narrator: Narrator | None = None

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that disconnects mid-request is one narrated line, never a traceback."""
        exc = sys.exc_info()[1]
        if self.narrator is None or exc is None:
            return
        if isinstance(exc, (ConnectionError, TimeoutError, socket.timeout)):
            self.narrator.say("http", f"client {client_address[0]} gone ({_describe(exc)})")
        else:
            self.narrator.say("error", f"HTTP front: {_describe(exc)}")


def _describe_message(message: dict[str, Any]) -> str:
    """The envelope's topic and messageId when the body is one, else the SQS message id."""
    try:
        body = json.loads(message.get("Body", ""))
    except ValueError:
        body = None
    if isinstance(body, dict) and "messageId" in body:
        return f"{body.get('topic')} {body.get('businessKey')} {body['messageId']}"
    return f"sqs:{message['MessageId']} (not an envelope)"


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    return str(value)


def _b64decode(raw: str) -> bytes:
    import base64

    return base64.b64decode(raw)
