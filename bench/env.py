"""The benchmark's world: its own MariaDB database, moto on a loopback port, the template provisioned
in it, and every Lambda function loadable in-process with its own environment."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SERVER_URL = "mysql+pymysql://root@127.0.0.1:3306/?charset=utf8mb4"
#: Unique to this run: the database server is shared, and so may be a benchmark running next to us.
DATABASE_NAME = f"payment_outbox_bench_{os.getpid()}_{secrets.token_hex(3)}"
WEBHOOK_SECRET = "bench-webhook-secret-signs-its-own-callbacks"  # noqa: S105 - signs the benchmark's own callbacks
QUEUES = ("PointsQueue", "SmsQueue")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def aws_environment(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_NAMESPACE": "PaymentOutbox",
        # The relay and the handlers log at INFO per message batch; keep the terminal readable.
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        "POWERTOOLS_METRICS_DISABLED": "true",
    }


@contextmanager
def moto_server() -> Iterator[str]:
    """moto in a child process on a free loopback port; yields its endpoint URL."""
    port = free_port()
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "bench.moto_server", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        # Real SQS allows one purge a minute; the benchmark empties its queues between rounds.
        env={**os.environ, "MOTO_SQS_ENFORCE_STRICT_QUEUE_PURGE_BEHAVIOUR": "false"},
    )
    try:
        assert process.stdout is not None
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError("moto server did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@dataclass
class BenchWorld:
    endpoint: str
    database_url: str
    environments: dict[str, dict[str, str]]
    refs: dict[str, str]
    functions: Any  # payment_outbox_dev.local.harness.LocalFunctions

    @property
    def topic_arn(self) -> str:
        return self.refs["OrderEventsTopic"]

    def queue_url(self, logical_id: str) -> str:
        return self.refs[logical_id]

    def drain_queues(self) -> None:
        """moto's SQS slows as a queue grows: empty both queues between rounds."""
        import boto3

        sqs: Any = boto3.client("sqs")
        for queue in QUEUES:
            sqs.purge_queue(QueueUrl=self.queue_url(queue))

    def queue_depth(self, logical_id: str) -> int:
        import boto3

        sqs: Any = boto3.client("sqs")
        attributes = sqs.get_queue_attributes(
            QueueUrl=self.queue_url(logical_id),
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(
            attributes["ApproximateNumberOfMessagesNotVisible"]
        )


@contextmanager
def database(server_url: str) -> Iterator[str]:
    """Create this run's database (migrated to head), yield its URL, drop it afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from payment_outbox.adapters.db.migration import upgrade

    server = make_url(server_url)
    url = server.set(database=DATABASE_NAME).render_as_string(hide_password=False)
    admin = create_engine(server.set(database=""))
    with admin.begin() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS `{DATABASE_NAME}`"))
        conn.execute(text(f"CREATE DATABASE `{DATABASE_NAME}` CHARACTER SET utf8mb4"))
    engine = create_engine(url)
    upgrade(engine)
    engine.dispose()
    try:
        yield url
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{DATABASE_NAME}`"))
        admin.dispose()


@contextmanager
def world(server_url: str) -> Iterator[BenchWorld]:
    with moto_server() as endpoint, database(server_url) as url:
        os.environ.update(aws_environment(endpoint))
        from payment_outbox_dev.checks.template import load_template
        from payment_outbox_dev.local.harness import LocalFunctions
        from payment_outbox_dev.local.provision import provision

        template = load_template(ROOT / "template.yaml")
        resources = provision(template)
        overrides = {"DATABASE_URL": url, "WEBHOOK_SECRET": WEBHOOK_SECRET}
        environments = resources.environments(template, overrides)
        # The benchmark also builds use cases directly: give this process every function's settings.
        for environment in environments.values():
            os.environ.update(environment)
        functions = LocalFunctions(ROOT, template, environments)
        try:
            yield BenchWorld(endpoint, url, environments, dict(resources.refs), functions)
        finally:
            functions.close()


@contextmanager
def on_new_clients(watched: str, hook: Callable[[Any], None]) -> Iterator[list[Any]]:
    """Apply ``hook`` to each ``watched`` service's client the application creates inside the block, and list
    them. Clients belong to a function's container: cold-start the function first so its own are
    created here."""
    from payment_outbox.adapters import aws
    from payment_outbox.timeouts import CallBudget

    original = aws.new_client
    created: list[Any] = []

    def creating(service: str, *, budget: CallBudget, max_pool_connections: int | None = None) -> Any:
        client = original(service, budget=budget, max_pool_connections=max_pool_connections)
        if service == watched:
            hook(client)
            created.append(client)
        return client

    aws.new_client = creating
    try:
        yield created
    finally:
        aws.new_client = original


def wait_until(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False
