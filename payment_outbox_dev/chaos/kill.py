"""The kill chaos run: real process death against a live local stack, as an operator would try it.

    payment-outbox chaos --kill --orders 1000 --kills 20 --seed 7
    make chaos-kill ARGS="--orders 200 --kills 6"

What it does, on MySQL/MariaDB (a database of its own, created for the run and dropped after):

1. starts the AWS emulator as a process of its own, and ``payment-outbox local`` on it (workers per
   function, the run's database) as another process group;
2. drives N seeded orders over HTTP from several client threads: create, then the provider's signed
   callback (sometimes twice); a request that gets no answer (connection refused or cut, a 502 from a
   worker that died) is sent again after a short wait, as a payment provider retries its callbacks;
3. meanwhile SIGKILLs random workers (a container dying, mid-invocation when one is busy) and,
   sometimes, the whole stack (supervisor and every worker at once), which it starts again;
4. stops killing, lets the stack heal (the relay's leases and SQS visibility timeouts run out on
   the stack's own clock), stops it cleanly, and checks the same invariants as ``make chaos``
   (``payment_outbox_dev.chaos.report.SystemView.check_invariants``): per paid order exactly two
   outbox rows SENT, one credit, one SMS recorded and sent, exact balances, empty queues and
   dead-letter queues.

The seed fixes the orders and the kill plan (when, whom); the moments the signals land, and so what
each kill interrupts, depend on the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess  # nosec B404 - starts this project's own processes
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from payment_outbox_dev.arguments import find_root
from payment_outbox_dev.chaos.outage import row_states, set_sns_fault
from payment_outbox_dev.chaos.processes import (
    DEFAULT_SERVER_URL,
    START_DEADLINE_SECONDS,
    emulator_process,
    free_port,
    run_database,
    start_stack,
    wait_until_serving,
)
from payment_outbox_dev.chaos.report import ChaosReport, PaidOrder, Progress, SystemView, emulator_sms_texts
from payment_outbox_dev.local.auth import LocalCredentials
from payment_outbox_dev.local.callback import callback_body
from payment_outbox_dev.local.timing import DEFAULT_TIME_SCALE

KILL_WEBHOOK_SECRET = "kill-chaos-webhook-secret-signs-its-callbacks"  # noqa: S105 - signs its own callbacks  # nosec B105
REQUEST_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class KillConfig:
    orders: int = 200
    #: At least this many SIGKILLs (workers or the whole stack) while orders are driven.
    kills: int = 6
    seed: int = 7
    #: Client threads sending orders and callbacks.
    clients: int = 4
    workers: int = 2
    time_scale: float = DEFAULT_TIME_SCALE
    #: Chance that a kill takes the whole stack down rather than one worker.
    stack_kill_rate: float = 0.2
    duplicate_rate: float = 0.1
    #: The MySQL/MariaDB server (its database part is ignored: the run creates its own database).
    server_url: str = os.environ.get("CHAOS_SERVER_URL", DEFAULT_SERVER_URL)
    root: Path | None = None
    #: Upper bound of the healing phase.
    heal_seconds: float = 600.0
    #: Where the stack's narration goes (None: a temporary file, shown when the run fails).
    stack_log: Path | None = None
    #: An SNS outage from the first order on, this many minutes of the template's schedule long
    #: (times the time scale in real time): every publish to the topic answered 503 by the emulator.
    sns_outage_minutes: float = 0.0


@dataclass
class _Plan:
    user_id: int
    amount: str
    duplicate: bool


@dataclass
class _Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    counts: Counter[str] = field(default_factory=Counter)

    def add(self, what: str, count: int = 1) -> None:
        with self.lock:
            self.counts[what] += count


def run_kill_chaos(config: KillConfig, progress: Progress | None = None) -> ChaosReport:
    progress = progress or Progress("kill chaos run", config.orders)
    root = (config.root or find_root(Path.cwd())).resolve()
    with (
        tempfile.TemporaryDirectory(prefix="payment-outbox-kill-") as scratch,
        run_database(config.server_url) as database_url,
        emulator_process(Path(scratch)) as emulator_url,
    ):
        log = config.stack_log or Path(scratch) / "stack.log"
        return _KillRun(config, root, database_url, emulator_url, Path(scratch), log, progress).execute()


class _KillRun:
    def __init__(
        self,
        config: KillConfig,
        root: Path,
        database_url: str,
        emulator_url: str,
        scratch: Path,
        log: Path,
        progress: Progress,
    ) -> None:
        from sqlalchemy import create_engine

        self.config = config
        self.progress = progress
        self.root = root
        self.database_url = database_url
        self.emulator_url = emulator_url
        self.scratch = scratch
        self.log = log
        self.rng = random.Random(config.seed)  # noqa: S311 - reproducible plan  # nosec B311
        self.api_port = free_port()
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.stack: subprocess.Popen[bytes] | None = None
        self.stack_lock = threading.Lock()
        self.stack_up = threading.Event()
        self.db = create_engine(database_url)
        self.tally = _Tally()
        self.report = ChaosReport(
            config.orders, config.seed, "mysql", title="kill chaos run", counts_inside=False
        )
        self.paid: list[PaidOrder] = []
        self._outage_rows = "not measured"
        self.done = 0
        self.done_lock = threading.Lock()
        self.failures: list[str] = []
        base_user = 5_000_000 + config.seed * 10_000
        users = max(1, config.orders // 5)
        self.plans = [
            _Plan(
                user_id=base_user + self.rng.randrange(users),
                amount=f"{self.rng.randrange(1, 500)}.{self.rng.randrange(100):02d}",
                duplicate=self.rng.random() < config.duplicate_rate,
            )
            for _ in range(config.orders)
        ]

    # --- the run ----------------------------------------------------------------------------------

    def execute(self) -> ChaosReport:
        started = time.monotonic()
        try:
            self.progress.phase("starting the stack")
            self._start_stack()
            system = SystemView(
                self.db,
                self._aws("dynamodb"),
                self._aws("sqs"),
                self._resources(),
                lambda: emulator_sms_texts(self.emulator_url),
            )
            self.progress.phase(f"paying {self.config.orders} orders while SIGKILLing workers and the stack")
            clients = [
                threading.Thread(target=self._client, args=(number,), name=f"client-{number}")
                for number in range(self.config.clients)
            ]
            work = iter(range(self.config.orders))
            self._work = work
            self._work_lock = threading.Lock()
            outage = self._start_sns_outage()
            for client in clients:
                client.start()
            self._kill_while_driving(clients)
            for client in clients:
                client.join()
            if outage is not None:
                self.progress.phase("orders paid: waiting for the SNS outage to end")
                outage.join()
            self.progress.phase("kills over: waiting for the stack to heal")
            healed = self._heal(system)
            if self.config.sns_outage_minutes > 0:
                self.report.notes.append(f"outbox rows at the outage's end: {self._outage_rows}")
                failed = row_states(self.db)
                self.report.notes.append(f"outbox rows once healed:      {failed}")
                if "FAILED" in failed:
                    self.failures.append(f"rows FAILED after the SNS outage: {failed}")
            self.report.notes.append(
                f"healed in:                    {healed:.1f} s after the last order was paid"
            )
            self.progress.phase("deciding each SMS parked as uncertain, as the runbook says")
            self._decide_uncertain_sms(system)
            self._stop_stack()
            self.progress.phase("checking every order")
            self._check(system)
        finally:
            self._kill_stack()
            self.db.dispose()
        self.report.elapsed_seconds = time.monotonic() - started
        self.report.faults.update(self.tally.counts)
        kills = sum(n for kind, n in self.tally.counts.items() if "SIGKILLed" in kind)
        scale = f"{self.config.workers} worker(s) per function, time scale {self.config.time_scale:g}"
        self.report.notes.insert(0, f"SIGKILLs:                     {kills} ({scale})")
        self.report.callbacks = self.tally.counts["callback answered"]
        for kind in ("callback answered", "order created"):
            self.report.faults.pop(kind, None)
        self.report.problems.extend(self.failures)
        return self.report

    # --- the stack --------------------------------------------------------------------------------

    def _start_stack(self) -> None:
        process = start_stack(
            self.root,
            api_port=self.api_port,
            emulator_url=self.emulator_url,
            database_url=self.database_url,
            data_dir=self.scratch / "stack",
            workers=self.config.workers,
            time_scale=self.config.time_scale,
            webhook_secret=KILL_WEBHOOK_SECRET,
            log=self.log,
        )
        with self.stack_lock:
            self.stack = process
        wait_until_serving(self.api, process, self.log)
        self.stack_up.set()

    def _kill_stack(self) -> None:
        with self.stack_lock:
            process = self.stack
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def _stop_stack(self) -> None:
        with self.stack_lock:
            process = self.stack
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.failures.append("the stack did not stop within 120 s of SIGINT")

    def _resources(self) -> dict[str, str]:
        status, state = self._request("GET", "/_local/state")
        if status != 200:
            raise RuntimeError(f"GET /_local/state answered {status}")
        refs: dict[str, str] = state["resources"]
        return refs

    # --- the SNS outage ---------------------------------------------------------------------------

    def _start_sns_outage(self) -> threading.Thread | None:
        """Make the emulator answer every publish to the topic 503 for the outage's length (on the
        stack's clock), then heal it; the emulator outlives the stack's deaths, so does the outage."""
        minutes = self.config.sns_outage_minutes
        if minutes <= 0:
            return None
        seconds = minutes * 60 * self.config.time_scale
        set_sns_fault(self.emulator_url, "outage")

        def end() -> None:
            time.sleep(seconds)
            self._outage_rows = row_states(self.db)
            set_sns_fault(self.emulator_url, None)

        thread = threading.Thread(target=end, name="sns-outage", daemon=True)
        thread.start()
        self.report.notes.append(
            f"SNS outage:                   {minutes:g} min of schedule ({seconds:.0f} s at time scale"
            f" {self.config.time_scale:g}), every publish to the topic answered 503, from the first order on"
        )
        return thread

    # --- killing ----------------------------------------------------------------------------------

    def _kill_while_driving(self, clients: list[threading.Thread]) -> None:
        """Kill number k falls when k/(kills+1) of the orders are done (plus a seeded jitter), so the
        kills spread over the whole run; kills still owed when the orders are done fall at once."""
        kills = self.config.kills
        plan = [
            (self.rng.uniform(0.0, 1.5), self.rng.random() < self.config.stack_kill_rate, self.rng.random())
            for _ in range(kills)
        ]
        if kills >= 3 and self.config.stack_kill_rate > 0 and not any(whole for _, whole, _ in plan):
            # "Sometimes the whole stack": at least once in any run of three kills or more.
            jitter, _, pick = plan[kills // 2]
            plan[kills // 2] = (jitter, True, pick)
        for number, (jitter, whole_stack, pick) in enumerate(plan, start=1):
            mark = self.config.orders * number / (kills + 1)
            while self._done() < mark and any(c.is_alive() for c in clients):
                time.sleep(0.05)
            time.sleep(jitter)
            if whole_stack:
                self._kill_whole_stack()
            else:
                self._kill_a_worker(pick)

    def _kill_whole_stack(self) -> None:
        self.stack_up.clear()
        self._kill_stack()
        self.tally.add("whole stack SIGKILLed (supervisor and every worker), restarted")
        self._start_stack()

    def _kill_a_worker(self, pick: float) -> None:
        try:
            status, answer = self._request("GET", "/_local/workers", timeout=10)
        except OSError:
            status, answer = 0, None
        if status != 200:
            self.tally.add("worker kill skipped: the stack did not list its workers")
            return
        workers = [w for w in answer["workers"] if w["alive"]]
        busy = [w for w in workers if w["busy"]]
        # Most kills land on a worker mid-invocation when there is one: that is the case that matters.
        candidates = busy if busy and pick < 0.75 else workers
        victim = candidates[int(pick * 1_000_003) % len(candidates)]
        try:
            os.kill(int(victim["pid"]), signal.SIGKILL)
        except ProcessLookupError:
            self.tally.add("worker kill missed: it had just died")
            return
        state = "mid-invocation" if victim["busy"] else "idle"
        self.tally.add(f"worker SIGKILLed {state}: {victim['function']}")

    # --- the clients ------------------------------------------------------------------------------

    def _done(self) -> int:
        with self.done_lock:
            return self.done

    def _client(self, number: int) -> None:
        while True:
            with self._work_lock:
                index = next(self._work, None)
            if index is None:
                return
            try:
                self._drive(self.plans[index])
            except Exception as exc:  # a client thread must not die silently
                from payment_outbox_dev.local.describe import describe

                self.failures.append(f"client {number}, order #{index}: {describe(exc)}")
            with self.done_lock:
                self.done += 1
                done = self.done
            self.progress.done(done)

    def _drive(self, plan: _Plan) -> None:
        order = self._until_answered(
            "create",
            "POST",
            "/orders",
            json.dumps({"userId": plan.user_id, "phone": "+8613812345678", "amount": plan.amount}),
            expect=201,
        )
        self.tally.add("order created")
        body = callback_body(order["orderNo"], order["amount"], order["currency"])
        self._until_answered("callback", "POST", "/payments/notify", body, expect=200, signed=True)
        self.tally.add("callback answered")
        if plan.duplicate:
            self._until_answered(
                "duplicate callback", "POST", "/payments/notify", body, expect=200, signed=True
            )
            self.tally.add("duplicate callback answered 200")
            self.tally.add("callback answered")
        with self.done_lock:
            self.paid.append(PaidOrder(int(order["orderId"]), order["orderNo"], plan.user_id, plan.amount))

    def _until_answered(
        self, what: str, method: str, path: str, body: str, *, expect: int, signed: bool = False
    ) -> Any:
        """Send until the expected answer: no answer, or a 5xx, is retried after a short wait (as a
        provider retries a callback); any other answer is a failure of the run."""
        for attempt in range(200):
            headers = {"Content-Type": "application/json"}
            if signed:
                from payment_outbox.domain.signature import sign

                headers["X-Signature"] = sign(body.encode(), KILL_WEBHOOK_SECRET, int(time.time()))
            try:
                status, answer = self._request(method, path, body, headers)
            except (OSError, ValueError):
                status, answer = 0, None
            if status == expect:
                return answer
            if status and status < 500:
                raise RuntimeError(f"{what} {path} answered {status}: {answer}")
            self.tally.add(f"{what} got no answer ({'HTTP ' + str(status) if status else 'no response'}),"
                           " sent again")  # fmt: skip
            self.stack_up.wait(timeout=START_DEADLINE_SECONDS)
            time.sleep(min(2.0, 0.1 * (attempt + 1)))
        raise RuntimeError(f"{what} {path}: no answer after 200 attempts")

    def _request(
        self, method: str, path: str, body: str | None = None, headers: dict[str, str] | None = None,
        timeout: float = REQUEST_TIMEOUT_SECONDS,
    ) -> tuple[int, Any]:  # fmt: skip
        data = b"" if body is None else body.encode()
        # As an IAM caller: SigV4 by the stack's local credentials (the callback ignores it).
        signed = LocalCredentials.load_or_create(self.scratch / "stack").sign(
            method, self.api + path, data, headers
        )
        request = urllib.request.Request(  # noqa: S310 - the stack's loopback URL
            self.api + path,
            data=None if body is None else data,
            method=method,
            headers=signed,
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310  # nosec B310
                return int(response.status), json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            raw = error.read()
            try:
                return int(error.code), json.loads(raw or b"null")
            except ValueError:
                return int(error.code), raw.decode("utf-8", "replace")

    # --- healing and checking ---------------------------------------------------------------------

    def _heal(self, system: SystemView) -> float:
        """Wait until no outbox row is pending and the consumers' queues are empty (twice in a row,
        a visibility timeout apart), within ``heal_seconds``."""
        started = time.monotonic()
        quiet_since: float | None = None
        settle = 2 * max(1.0, 180 * self.config.time_scale)
        while time.monotonic() - started < self.config.heal_seconds:
            if system.backlog() == 0:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since >= settle:
                    return time.monotonic() - started
            else:
                quiet_since = None
            time.sleep(0.5)
        self.failures.append(f"not healed within {self.config.heal_seconds:.0f} s")
        return time.monotonic() - started

    def _decide_uncertain_sms(self, system: SystemView) -> None:
        """The operator's part of the runbook for SMS parked as uncertain, through the stack's admin API."""
        reason = json.dumps({"reason": "kill run: the provider's log checked"})
        system.decide_uncertain_sms(
            self.report,
            lambda message_id, action: self._request("POST", f"/admin/sms/{message_id}/{action}", reason)[0],
        )

    def _check(self, system: SystemView) -> None:
        self.report.orders = len(self.paid)
        system.check_invariants(self.report, sorted(self.paid, key=lambda o: o.order_id))
        if len(self.paid) != self.config.orders:
            self.report.problems.append(f"{self.config.orders - len(self.paid)} order(s) never paid")

    def _aws(self, service: str) -> Any:
        import boto3

        return boto3.client(
            service,  # type: ignore[call-overload]
            endpoint_url=self.emulator_url,
            region_name="us-east-1",
            aws_access_key_id="local",
            aws_secret_access_key="local",  # noqa: S106  # nosec B106 - emulator credentials
        )
