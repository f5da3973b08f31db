"""Functions that run like Lambda containers: each in worker processes of its own, supervised.

Each function the stack invokes gets a small pool of worker processes. A worker imports its handler
once (the init phase), with the function's own environment, then serves one invocation at a time —
as a Lambda execution environment does. The supervisor (the stack's process) keeps the pools full: a
worker that dies, idle or mid-invocation, is replaced by a fresh one (a cold start). A worker killed
mid-invocation is a container dying mid-invocation: what it had not committed is lost, what it had
committed stays; the caller (API front, queue poller, schedule) sees the invocation fail without an
answer, and SQS, the relay's leases and the payment provider's retries do the rest. The emulator and
the database live outside the workers, so a worker's death loses only what a container's would.

Workers are forked from a ``forkserver`` that preloaded the heavy libraries, so a replacement is up
in a fraction of a second. Every worker talks to the supervisor over one pipe: the handler's output
(its JSON logs, EMF metrics) line by line, then the invocation's outcome. A worker ignores SIGINT (a
Ctrl-C reaches the whole process group; the supervisor stops its workers itself) and exits when
the supervisor goes away (its end of the pipe closes).
"""

from __future__ import annotations

import contextlib
import io
import logging
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from types import ModuleType
from typing import Any

#: Imported once by the forkserver, so each forked worker starts with them loaded.
PRELOAD = ["payment_outbox_dev.local.worker_preload"]
#: How long a worker may take to import its handler before the start counts as failed.
INIT_DEADLINE_SECONDS = 120.0

OnLine = Callable[[str, str], None]
OnEvent = Callable[[str, str], None]


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to become one function's container (picklable)."""

    root: str
    logical_id: str
    #: The function's environment (the template's, resolved) plus the stack's process settings.
    environment: dict[str, str]
    #: The Timeout its Lambda context reports (already time-scaled).
    timeout_seconds: float
    library_log_level: int = logging.WARNING


class WorkerDied(Exception):
    """The worker's process ended before it answered (killed, crashed, out of memory)."""

    def __init__(self, function: str, pid: int, exitcode: int | None) -> None:
        self.function, self.pid, self.exitcode = function, pid, exitcode
        super().__init__(f"{function} worker pid {pid} died mid-invocation ({describe_exit(exitcode)})")


class InvocationFailed(Exception):
    """The handler raised: Lambda reports the error type and message (the worker lives on)."""

    def __init__(self, error_type: str, message: str, trace: str, record_errors: dict[str, str]) -> None:
        self.error_type, self.message, self.trace = error_type, message, trace
        #: SQS message id -> why its record failed (when the handler raised because every one did).
        self.record_errors = record_errors
        super().__init__(f"{error_type}: {message}" if message else error_type)


@dataclass
class Outcome:
    result: Any
    #: SQS message id -> why its record failed (the batch processor's exception), for narration.
    record_errors: dict[str, str] = field(default_factory=dict)
    pid: int = 0
    seconds: float = 0.0


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


class _Worker:
    def __init__(self, process: Any, conn: Connection, function: str) -> None:
        self.process = process
        self.conn = conn
        self.function = function
        self.busy = False
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        return int(self.process.pid or 0)

    def alive(self) -> bool:
        return bool(self.process.is_alive())


class FunctionPool:
    """``size`` workers of one function; ``invoke`` takes an idle one (waiting if all are busy)."""

    def __init__(
        self,
        spec: WorkerSpec,
        size: int,
        context: Any,
        on_line: OnLine,
        on_event: OnEvent,
    ) -> None:
        if size < 1:
            raise ValueError(f"{spec.logical_id}: a pool needs at least one worker")
        self.spec = spec
        self.size = size
        self._context = context
        self._on_line = on_line
        self._on_event = on_event
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._closed = False
        #: Replacements being started, counted so a top-up does not start them twice.
        self._starting = 0
        self.restarts = 0
        self.deaths = 0

    @property
    def function(self) -> str:
        return self.spec.logical_id

    def start(self) -> None:
        for _ in range(self.size):
            self._idle.put(self._spawn())

    def workers(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {"function": self.function, "pid": w.pid, "busy": w.busy, "alive": w.alive()}
                for w in self._workers
            ]

    def invoke(self, event: dict[str, Any]) -> Outcome:
        """Run one invocation in an idle worker. Raises ``InvocationFailed`` when the handler raised,
        ``WorkerDied`` when the worker's process ended before answering (it is replaced)."""
        worker = self._take()
        started = time.monotonic()
        died = False
        try:
            worker.conn.send(("invoke", event))
            while True:
                message = worker.conn.recv()
                kind = message[0]
                if kind == "out":
                    self._on_line(self.function, message[1])
                elif kind == "log":
                    self._on_event("log", message[1])
                elif kind == "ok":
                    return Outcome(message[1], message[2], worker.pid, time.monotonic() - started)
                elif kind == "error":
                    _, error_type, text, trace, errors = message
                    raise InvocationFailed(error_type, text, trace, errors)
        except (EOFError, OSError):
            died = True
        finally:
            if not died:
                worker.busy = False
                self._idle.put(worker)
        worker.process.join(timeout=5)
        exitcode = worker.process.exitcode
        self._replace_in_background(worker)
        raise WorkerDied(self.function, worker.pid, exitcode)

    def check(self) -> None:
        """Replace idle workers whose process has ended (killed while waiting for work), and top the
        pool up if a replacement could not be started before."""
        waiting: list[_Worker] = []
        while True:
            try:
                waiting.append(self._idle.get_nowait())
            except queue.Empty:
                break
        dead = [w for w in waiting if not w.alive()]
        for worker in waiting:
            if worker.alive():
                self._idle.put(worker)
        for worker in dead:
            self._put_replacement(worker)
        with self._lock:
            missing = self.size - len(self._workers) - self._starting
        for _ in range(missing):
            self._put_replacement(None)

    def close(self) -> None:
        """No more replacements: the stack is stopping."""
        self._closed = True

    def stop(self) -> None:
        self._closed = True
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            if worker.alive() and not worker.busy:
                with contextlib.suppress(OSError):
                    worker.conn.send(("stop",))
        deadline = time.monotonic() + 5
        for worker in workers:
            worker.process.join(timeout=max(0.1, deadline - time.monotonic()))
            if worker.alive():
                worker.process.kill()
                worker.process.join(timeout=5)
            worker.conn.close()

    # --- internals ------------------------------------------------------------------------------

    def _take(self) -> _Worker:
        while True:
            try:
                worker = self._idle.get(timeout=1.0)
            except queue.Empty:
                if self._closed:
                    raise RuntimeError(f"{self.function}: the stack is stopping") from None
                continue
            if worker.alive():
                worker.busy = True
                return worker
            self._replace_in_background(worker)

    def _replace_in_background(self, dead: _Worker) -> None:
        """The caller learns of the death at once; the cold start of the replacement runs apart."""
        threading.Thread(
            target=self._put_replacement, args=(dead,), name=f"{self.function}-restart", daemon=True
        ).start()

    def _put_replacement(self, dead: _Worker | None) -> None:
        """Forget ``dead`` (None: a missing worker) and put a fresh worker in the idle queue."""
        with self._lock:
            if dead is not None:
                if dead not in self._workers:
                    return
                self._workers.remove(dead)
                self.deaths += 1
            if self._closed:
                return
            self._starting += 1
        try:
            if dead is not None:
                dead.conn.close()
                self._on_event(
                    "worker",
                    f"{self.function} worker pid {dead.pid} {describe_exit(dead.process.exitcode)};"
                    " starting a new one (cold start)",
                )
            replacement = self._spawn()
        except Exception as exc:
            from payment_outbox_dev.local.describe import describe

            self._on_event("error", f"{self.function}: no new worker ({describe(exc)}); trying again")
            return
        finally:
            with self._lock:
                self._starting -= 1
        self.restarts += 1
        self._idle.put(replacement)

    def _spawn(self) -> _Worker:
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=worker_main, args=(child, self.spec), name=f"{self.function}-worker", daemon=True
        )
        process.start()
        child.close()
        worker = _Worker(process, parent, self.function)
        if not parent.poll(INIT_DEADLINE_SECONDS):
            process.kill()
            raise RuntimeError(
                f"{self.function}: a worker did not finish its init in {INIT_DEADLINE_SECONDS} s"
            )
        while True:
            try:
                message = parent.recv()
            except EOFError:
                process.join(timeout=5)
                raise RuntimeError(
                    f"{self.function}: a worker died during its init ({describe_exit(process.exitcode)})"
                ) from None
            if message[0] == "out":
                self._on_line(self.function, message[1])
            elif message[0] == "log":
                self._on_event("log", message[1])
            elif message[0] == "init-error":
                process.join(timeout=5)
                raise RuntimeError(f"{self.function}: the handler failed its init: {message[1]}")
            elif message[0] == "ready":
                break
        with self._lock:
            self._workers.append(worker)
        return worker


def worker_context() -> Any:
    """Workers forked from a server that preloaded the libraries (fast restarts, no fork of a threaded
    process); spawn where fork is not available."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
        return context
    return multiprocessing.get_context("spawn")


# --- the worker process ---------------------------------------------------------------------------


class _PipeOutput(io.TextIOBase):
    """The worker's stdout: each complete line goes to the supervisor as it is written."""

    def __init__(self, send: Callable[[tuple[Any, ...]], None]) -> None:
        super().__init__()
        self._send = send
        self._partial = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            if line.strip():
                self._send(("out", line))
        return len(text)


class _PipeLogHandler(logging.Handler):
    """The library's own log records (``payment_outbox.*``), to the supervisor's narration."""

    def __init__(self, send: Callable[[tuple[Any, ...]], None]) -> None:
        super().__init__()
        self._send = send

    def emit(self, record: logging.LogRecord) -> None:
        from payment_outbox_dev.local.describe import mask_phones

        text = f"{record.levelname.lower()} {record.name.rsplit('.', 1)[-1]}: {record.getMessage()}"
        self._send(("log", mask_phones(text)))


def worker_main(conn: Connection, spec: WorkerSpec) -> None:
    """One container: init (import the handler), then invocations until told to stop or orphaned."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    lock = threading.Lock()  # handlers may log from threads of their own

    def send(message: tuple[Any, ...]) -> None:
        with lock:
            conn.send(message)

    os.environ.update(spec.environment)
    # Before the handler module is imported: Powertools' loggers bind sys.stdout when created.
    sys.stdout = _PipeOutput(send)
    library = logging.getLogger("payment_outbox")
    library.handlers[:] = [_PipeLogHandler(send)]
    library.setLevel(spec.library_log_level)
    library.propagate = False
    import warnings

    warnings.filterwarnings("ignore", message="No application metrics to publish")

    from payment_outbox_dev.checks.template import load_template
    from payment_outbox_dev.local.describe import describe, mask_phones
    from payment_outbox_dev.local.harness import LocalFunctions

    root = Path(spec.root)
    template = load_template(root / "template.yaml")
    functions = LocalFunctions(
        root, template, {spec.logical_id: spec.environment}, timeouts={spec.logical_id: spec.timeout_seconds}
    )
    try:
        functions.handler(spec.logical_id)
    except Exception as exc:
        send(("init-error", describe(exc)))
        return
    send(("ready", os.getpid()))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the supervisor is gone: so is the container
        if message[0] != "invoke":
            return
        try:
            result = functions.invoke(spec.logical_id, message[1])
        except Exception as exc:
            trace = mask_phones(traceback.format_exc())
            errors = _record_errors(functions, spec.logical_id)
            send(("error", type(exc).__name__, mask_phones(_message_of(exc)), trace, errors))
            continue
        sys.stdout.flush()
        send(("ok", result, _record_errors(functions, spec.logical_id)))


def _message_of(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""


def _record_errors(functions: Any, logical_id: str) -> dict[str, str]:
    """Why each failed record of the last batch failed, by SQS message id: each batch processor the
    handler module holds keeps its failed records and their exceptions, pairwise, until the next batch."""
    from payment_outbox_dev.local.describe import describe

    errors: dict[str, str] = {}
    for processor in _batch_processors(functions.module(logical_id)):
        for record, info in zip(processor.fail_messages, processor.exceptions, strict=False):
            raw = getattr(record, "raw_event", record)
            message_id = raw.get("messageId") if isinstance(raw, dict) else None
            if message_id and info and info[1] is not None:
                errors[str(message_id)] = describe(info[1])
    return errors


def _batch_processors(module: Any) -> list[Any]:
    """The batch processors a handler module holds: at its top level, or one level down in an object
    it holds (a consumer's ``SqsConsumer`` keeps its processors as attributes of its own)."""
    from aws_lambda_powertools.utilities.batch.base import BasePartialProcessor

    found: list[Any] = []
    for value in vars(module).values():
        if isinstance(value, BasePartialProcessor):
            found.append(value)
        elif not isinstance(value, type | ModuleType) and hasattr(value, "__dict__"):
            found.extend(v for v in vars(value).values() if isinstance(v, BasePartialProcessor))
    return found
