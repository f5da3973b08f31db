"""The processes the kill run and the load run start and stop: a MySQL/MariaDB database of the run's own,
the AWS emulator as a process of its own, and ``payment-outbox local`` in a session of its own (so one
``killpg`` takes the supervisor and all its workers, as a host dying would).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess  # nosec B404 - starts this project's own processes
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

#: The MySQL/MariaDB server the runs make their databases on, unless told otherwise.
DEFAULT_SERVER_URL = "mysql+pymysql://root@127.0.0.1:3306/"
#: How long a stack may take to answer after it is started (workers import the handlers).
START_DEADLINE_SECONDS = 180.0


@contextlib.contextmanager
def run_database(server_url: str) -> Iterator[str]:
    """A database unique to the run on the server, dropped at the end whatever happens."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    server = make_url(server_url)
    if server.get_backend_name() != "mysql":
        raise SystemExit(f"the kill chaos run needs MySQL/MariaDB, got {server.get_backend_name()}")
    name = f"payment_outbox_kill_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server.set(database=""))
    with admin.begin() as conn:
        conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()


@contextlib.contextmanager
def emulator_process(scratch: Path) -> Iterator[str]:
    """The emulator in a process of its own: killing the stack never touches SQS or DynamoDB state."""
    log = (scratch / "emulator.log").open("wb")
    process = subprocess.Popen(  # nosec B603 - fixed argv, no shell
        [sys.executable, "-m", "payment_outbox_dev.local.emulator", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=log,
        start_new_session=True,
    )
    try:
        line = process.stdout.readline().decode().strip() if process.stdout else ""
        if not line.startswith("emulator "):
            raise RuntimeError(f"the emulator did not start: {line!r}")
        yield line.split(" ", 1)[1]
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def start_stack(
    root: Path,
    *,
    api_port: int,
    emulator_url: str,
    database_url: str,
    data_dir: Path,
    workers: int,
    time_scale: float,
    webhook_secret: str,
    log: Path,
) -> subprocess.Popen[bytes]:
    """``payment-outbox local`` on an emulator of its own, in a session of its own: one ``killpg``
    takes the supervisor and all its workers, as a host dying would."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "WEBHOOK_SECRET", "AWS_ENDPOINT_URL", "AWS_PROFILE")
    }
    command = [
        sys.executable, "-m", "payment_outbox_dev.cli", "--root", str(root), "local",
        "--api-port", str(api_port), "--emulator-url", emulator_url,
        "--database-url", database_url, "--data-dir", str(data_dir),
        "--workers", str(workers), "--time-scale", repr(time_scale),
        "--webhook-secret", webhook_secret, "--poll-interval", "0.2",
    ]  # fmt: skip
    with log.open("ab") as sink:
        return subprocess.Popen(  # noqa: S603  # nosec B603 - fixed argv, no shell
            command, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True
        )


def wait_until_serving(api: str, process: subprocess.Popen[bytes], log: Path) -> None:
    ends = time.monotonic() + START_DEADLINE_SECONDS
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the stack exited with {process.returncode}: see {log}")
        with (
            contextlib.suppress(OSError, ValueError),
            urllib.request.urlopen(f"{api}/_local/routes", timeout=5) as response,  # noqa: S310  # nosec B310
        ):
            if response.status == 200:
                return
        if time.monotonic() > ends:
            raise RuntimeError(f"the stack did not answer within {START_DEADLINE_SECONDS:.0f} s")
        time.sleep(0.3)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
