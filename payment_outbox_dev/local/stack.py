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

The stack is its parts, each a module with one job: ``http_front`` (the WSGI front and its request
checks), ``pooled`` (the functions run by their worker pools), ``control`` (the local routes),
``schedule`` (schedules, queue pollers, the dead-letter watch), ``observe`` (narration, metrics,
alarms) and ``snapshot``; this module starts them in order and stops them in reverse.

The stack stays on loopback unless ``--expose`` is given with a webhook secret of the operator's own
(``http_front.check_bind``); the AWS emulator, which has no authentication, never leaves loopback.

On a clean stop (Ctrl-C, SIGTERM) the emulator's state is saved to the data directory and loaded on
the next start (see ``payment_outbox_dev.local.snapshot``); the SQLite file is the database itself.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Literal, TextIO

import boto3
from werkzeug.serving import BaseWSGIServer

from payment_outbox_dev.checks.template import (
    Route,
    alarms,
    api_routes,
    load_template,
    resources_of_type,
    schedules,
    sqs_event_sources,
)
from payment_outbox_dev.local.auth import (
    AUTH_FILE,
    JWKS_PATH,
    SERVICE,
    LocalAuthorizer,
    LocalCredentials,
)
from payment_outbox_dev.local.control import Control
from payment_outbox_dev.local.describe import describe
from payment_outbox_dev.local.emulator import EmulatorServer, Faults
from payment_outbox_dev.local.harness import REGION
from payment_outbox_dev.local.http_front import (
    Answer,
    ApiFront,
    LocalRoute,
    allowed_hosts,
    check_bind,
    is_loopback,
    serve,
)
from payment_outbox_dev.local.observe import MetricsBoard, NarratingLogHandler, Narrator, Observer
from payment_outbox_dev.local.pooled import PooledApi, PooledFunctions
from payment_outbox_dev.local.provision import Provisioned, provision
from payment_outbox_dev.local.schedule import EventSources
from payment_outbox_dev.local.timing import DEFAULT_TIME_SCALE, Timing, scaled_timing
from payment_outbox_dev.local.workers import FunctionPool, WorkerSpec, worker_context

#: The webhook secret the local stack verifies callbacks with unless told otherwise.
LOCAL_WEBHOOK_SECRET = "local-webhook-secret-for-this-machine-only"  # noqa: S105  # nosec B105 - local only, signs local callbacks
#: Where the AWS emulator listens when the API is bound elsewhere: it has no authentication.
EMULATOR_LOOPBACK = "127.0.0.1"
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
    #: Bind a non-loopback ``host`` (refused without it; needs a webhook secret of one's own too).
    expose: bool = False
    #: Host header names answered besides loopback and ``host`` (DNS rebinding stops at the rest).
    allowed_hosts: tuple[str, ...] = ()
    #: How the order routes know their caller (the template's CallerIdentity): SigV4 or a user's token.
    caller_identity: Literal["iam", "cognito"] = "iam"

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / DATABASE_FILE).resolve()}"

    def check_bind(self) -> None:
        """Raises ValueError when ``host`` would expose the stack without the operator asking."""
        check_bind(self.host, expose=self.expose, default_secret=self.webhook_secret == LOCAL_WEBHOOK_SECRET)

    @property
    def emulator_host(self) -> str:
        return self.host if is_loopback(self.host) else EMULATOR_LOOPBACK


class LocalStack:
    def __init__(self, config: StackConfig, out: TextIO | None = None) -> None:
        self.config = config
        self.narrator = Narrator(out or sys.stdout)
        self.template = load_template(config.root / "template.yaml")
        self.faults = Faults()
        self.metrics = MetricsBoard(alarms(self.template))
        self.observer = Observer(self.narrator, self.metrics, verbose=config.verbose)
        self.resources = Provisioned()
        self.functions: PooledFunctions | None = None
        self.timing: Timing = scaled_timing(self.template, config.time_scale, config.parameters)
        self.pools: dict[str, FunctionPool] = {}
        self.emulator: EmulatorServer | None = None
        self.emulator_url = ""
        self.api_url = ""
        self._http: BaseWSGIServer | None = None
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
        config.check_bind()
        config.data_dir.mkdir(parents=True, exist_ok=True)
        # Bind the API port first: a port in use fails the start before anything else runs.
        self._http = serve(config.host, config.api_port, self.narrator.say)
        self._configure_process()
        broken = self.timing.violations()
        if broken:
            raise ValueError("--time-scale breaks the template's timing: " + "; ".join(broken))
        if config.emulator_url:
            self.emulator_url = config.emulator_url.rstrip("/")
        else:
            self.emulator = EmulatorServer(
                config.emulator_host,
                config.emulator_port,
                faults=self.faults,
                observer=self.observer.sns_call,
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
        from payment_outbox.adapters.db.migration import upgrade

        database_url = config.resolved_database_url()
        self._engine = make_engine(database_url)
        upgrade(self._engine)
        self.narrator.say("db", f"{self._engine.url.render_as_string()} (migrated to head)")

        overrides = {
            "DATABASE_URL": database_url,
            "WEBHOOK_SECRET": config.webhook_secret,
            "POWERTOOLS_TRACE_DISABLED": "true",
            # The relay's claims and the payment API's after-commit publish, leased on the stack's clock.
            "OUTBOX_LEASE_SECONDS": str(self.timing.lease_seconds),
            "CALLER_IDENTITY": config.caller_identity,
        }
        # The handlers log at the template's level (INFO): every line goes to the trace journal
        # (GET /_local/trace); without --verbose only warnings and errors are narrated.
        self._start_pools(self.resources.environments(self.template, overrides))
        self.functions = PooledFunctions(config.root, self.template, self.pools)
        control = Control(
            root=config.root,
            routes_served=lambda: self.routes,
            workers=self.workers,
            faults=self.faults,
            metrics=self.metrics,
            resources=self.resources,
            timing=self.timing,
            narrator=self.narrator,
            engine=self._engine,
            emulator_url=self.emulator_url,
            journal=self.observer.journal,
        )
        credentials = LocalCredentials.load_or_create(config.data_dir)
        authorizer = LocalAuthorizer(credentials, config.caller_identity)
        jwks = LocalRoute(
            "GET", JWKS_PATH, "the public key local tokens are signed with (JWKS)",
            lambda _: Answer.json(200, credentials.jwks()),
        )  # fmt: skip
        self._http.app = ApiFront(
            PooledApi(self.functions, self.narrator, verbose=config.verbose, authorizer=authorizer),
            [*control.routes(), jwks],
            hosts=allowed_hosts(config.host, config.allowed_hosts),
            say=self.narrator.say,
        )

        host, port = self._http.server_address[:2]
        self.api_url = f"http://{_url_host(str(host))}:{port}"
        self._spawn("api", self._http.serve_forever)
        self._serving = True
        sources = EventSources(
            self.template,
            self.functions,
            self.resources,
            self.timing,
            self.observer,
            self._stop,
            config.poll_interval,
        )
        for name, loop in sources.loops():
            self._spawn(name, loop)
        self._spawn("supervise", self._supervise_loop)
        for route in self.routes:
            mode = authorizer.mode_of(route)
            self.narrator.say(
                "api", f"{route.method:<6} {self.api_url}{route.path}  → {route.function} ({mode})"
            )
        self._narrate_auth(credentials)
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
                    self.narrator.say("error", f"emulator state not saved: {describe(exc)}")
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
        self._log_handler = NarratingLogHandler(self.narrator)
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
                spec, self.config.workers, context, self.observer.handler_line, self.narrator.say
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

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
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

    def _narrate_auth(self, credentials: LocalCredentials) -> None:
        """How to call the authorised routes, as API Gateway would check them."""
        self.narrator.say(
            "auth",
            f"iam routes: SigV4 ({SERVICE}, {REGION}) with AWS_ACCESS_KEY_ID={credentials.access_key_id}"
            f" AWS_SECRET_ACCESS_KEY={credentials.secret_access_key}"
            f" (kept in {self.config.data_dir / AUTH_FILE})",
        )
        if self.config.caller_identity == "cognito":
            self.narrator.say(
                "auth",
                f"order routes: Authorization: $(payment-outbox token --user <id> --data-dir"
                f" {self.config.data_dir}); keys at {self.api_url}{JWKS_PATH}",
            )

    def _narrate_resources(self) -> None:
        kinds = {"AWS::SNS::Topic": "topic", "AWS::SQS::Queue": "queue", "AWS::DynamoDB::Table": "table"}
        for resource_type, kind in kinds.items():
            names = ", ".join(resources_of_type(self.template, resource_type))
            self.narrator.say("aws", f"{kind}s: {names}")


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
