"""The schema migrator always answers CloudFormation, before its own deadline, whatever happens.

A loopback HTTP server stands in for the pre-signed S3 URL CloudFormation waits on (port 0: free).
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from payment_outbox.adapters import cfn_response

pytestmark = pytest.mark.unit


@dataclass
class ResponseUrl:
    url: str
    answers: list[dict[str, Any]] = field(default_factory=list)
    arrived_at: list[float] = field(default_factory=list)
    puts: int = 0


@contextmanager
def response_url(fail_first: int = 0) -> Iterator[ResponseUrl]:
    """A stand-in for the pre-signed URL; the first ``fail_first`` PUTs get a 500 (S3 hiccup)."""
    state = ResponseUrl("")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            state.puts += 1
            if state.puts <= fail_first:
                self.send_response(500)
                self.end_headers()
                return
            state.answers.append(json.loads(body))
            state.arrived_at.append(time.monotonic())
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/answer"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def _event(url: str, request_type: str = "Create", **more: Any) -> dict[str, Any]:
    return more | {
        "RequestType": request_type,
        "ResponseURL": url,
        "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/payment-outbox/1",
        "RequestId": "request-1",
        "LogicalResourceId": "SchemaMigration",
        "ResourceType": "Custom::SchemaMigration",
        "ResourceProperties": {"SchemaRevision": "0002"},
    }


class Clock:
    """The function's remaining time, as Lambda's context reports it, running in real time."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


def _answer(
    url: ResponseUrl,
    work: Any,
    request_type: str = "Create",
    seconds: float = 30.0,
    reserve: float = cfn_response.ANSWER_RESERVE_SECONDS,
) -> tuple[cfn_response.Outcome, Clock]:
    clock = Clock(seconds)
    outcome = cfn_response.answer(
        _event(url.url, request_type),
        work=work,
        remaining_seconds=clock.remaining,
        physical_resource_id="payment-outbox-schema",
        log_stream_name="2026/11/30/[$LATEST]abc",
        reserve_seconds=reserve,
    )
    return outcome, clock


def _answered_in_time(url: ResponseUrl, clock: Clock) -> dict[str, Any]:
    assert len(url.answers) == 1, url.answers
    assert url.arrived_at[0] < clock.deadline
    return url.answers[0]


def test_a_successful_migration_answers_success_with_its_revision() -> None:
    with response_url() as url:
        # When the migration succeeds
        _, clock = _answer(url, lambda: {"Revision": "0002"})
        # Then CloudFormation hears SUCCESS with the revision, in time
        answer = _answered_in_time(url, clock)
    assert (answer["Status"], answer["Data"]) == ("SUCCESS", {"Revision": "0002"})
    assert answer["PhysicalResourceId"] == "payment-outbox-schema"
    assert answer["LogicalResourceId"] == "SchemaMigration" and answer["RequestId"] == "request-1"


def test_a_failing_migration_answers_failed_naming_the_log_stream() -> None:
    def fail() -> dict[str, str]:
        raise RuntimeError("secret detail that must not leave the log")

    with response_url() as url:
        _, clock = _answer(url, fail)
        answer = _answered_in_time(url, clock)
    assert answer["Status"] == "FAILED"
    assert "RuntimeError" in answer["Reason"] and "[$LATEST]abc" in answer["Reason"]
    assert "secret detail" not in answer["Reason"]


def test_delete_answers_success_without_touching_the_database() -> None:
    touched: list[bool] = []
    with response_url() as url:
        _, clock = _answer(url, lambda: touched.append(True) or {}, request_type="Delete")
        answer = _answered_in_time(url, clock)
    assert answer["Status"] == "SUCCESS"
    assert touched == []


def test_an_unknown_request_type_is_answered_failed_and_nothing_runs() -> None:
    touched: list[bool] = []
    with response_url() as url:
        _, clock = _answer(url, lambda: touched.append(True) or {}, request_type="Rename")
        answer = _answered_in_time(url, clock)
    assert answer["Status"] == "FAILED" and "'Rename'" in answer["Reason"]
    assert touched == []


def test_a_response_put_that_fails_once_is_retried() -> None:
    # Given a response URL whose first PUT fails
    with response_url(fail_first=1) as url:
        # When the migration succeeds
        _, clock = _answer(url, lambda: {"Revision": "0002"})
        # Then the answer still arrives, in time
        answer = _answered_in_time(url, clock)
    assert url.puts == 2
    assert answer["Status"] == "SUCCESS"


def test_a_migration_that_would_outlive_the_function_is_answered_failed_before_the_deadline() -> None:
    # Given a migration stuck (as a DDL waiting on a lock) and a function with 3 s left
    release = threading.Event()
    with response_url() as url:
        try:
            # When the migrator runs, keeping 1 s back to answer
            outcome, clock = _answer(url, lambda: release.wait(60) and {}, seconds=3.0, reserve=1.0)
            # Then CloudFormation hears FAILED before the function's deadline
            answer = _answered_in_time(url, clock)
        finally:
            release.set()
    assert answer["Status"] == "FAILED" and "did not finish" in answer["Reason"]
    assert not outcome.success


@dataclass
class _Context:
    """The parts of Lambda's context the migrator and Powertools read."""

    timeout_seconds: float
    function_name: str = "SchemaMigratorFunction"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:SchemaMigratorFunction"
    aws_request_id: str = "invocation-1"
    log_stream_name: str = "2026/11/30/[$LATEST]abc"
    started: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_seconds - (time.monotonic() - self.started)) * 1000))


def test_the_deployed_migrator_answers_before_its_deadline_when_a_ddl_is_blocked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util
    from pathlib import Path

    # Given the schema migrator's handler, whose migration blocks (a DDL waiting on a lock)
    path = Path(__file__).resolve().parents[2] / "functions" / "schema_migrator" / "app.py"
    spec = importlib.util.spec_from_file_location("schema_migrator_app_under_test", path)
    assert spec is not None and spec.loader is not None
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    release = threading.Event()
    lock_waits: list[int | None] = []

    def blocked(lock_wait_seconds: int | None) -> str:
        lock_waits.append(lock_wait_seconds)
        release.wait(60)
        return "0002"

    # The deployed composition, with the database's migration blocked and 1 s kept back to answer
    from payment_outbox.composition.migration import SchemaMigrator

    migrator = SchemaMigrator(migrate=blocked)
    monkeypatch.setattr(app, "schema_migrator", lambda: migrator)
    monkeypatch.setattr(app, "ANSWER_RESERVE_SECONDS", 1.0)
    context = _Context(timeout_seconds=3.0)
    with response_url() as url:
        try:
            # When CloudFormation creates the migration resource with 3 s of function time left
            app.lambda_handler(_event(url.url), context)
            deadline = context.started + context.timeout_seconds
        finally:
            release.set()
    # Then it answered FAILED before the function's deadline, and the DDL's lock wait was bounded
    assert len(url.answers) == 1 and url.arrived_at[0] < deadline
    assert url.answers[0]["Status"] == "FAILED"
    assert lock_waits and lock_waits[0] is not None and lock_waits[0] <= 3


def _deployed_migrator() -> Any:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "functions" / "schema_migrator" / "app.py"
    spec = importlib.util.spec_from_file_location("schema_migrator_app_answers", path)
    assert spec is not None and spec.loader is not None
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    return app


def test_a_migrator_that_cannot_be_built_is_answered_failed_with_its_reason_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the deployed handler, whose migrator cannot be built (its secret cannot be read)
    app = _deployed_migrator()

    def unreadable_secret() -> Any:
        raise PermissionError("AccessDeniedException reading the application user's secret")

    monkeypatch.setattr(app, "schema_migrator", unreadable_secret)
    context = _Context(timeout_seconds=300.0)
    with response_url() as url:
        # When CloudFormation creates the migration resource
        started = time.monotonic()
        app.lambda_handler(_event(url.url), context)
        # Then it hears FAILED at once, with the error's kind and where to read more
        answered_after = url.arrived_at[0] - started
    assert len(url.answers) == 1 and url.answers[0]["Status"] == "FAILED"
    assert "PermissionError" in url.answers[0]["Reason"] and "[$LATEST]abc" in url.answers[0]["Reason"]
    assert answered_after < 5


def test_a_rollback_to_an_older_schema_revision_answers_success_and_touches_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the deployed handler, whose database must not be touched
    app = _deployed_migrator()
    built: list[bool] = []
    monkeypatch.setattr(app, "schema_migrator", lambda: built.append(True))
    # When a stack rolling back asks this (older) code for revision 0002 in place of a newer 0003
    event = _event(
        "",
        "Update",
        OldResourceProperties={"SchemaRevision": "0003"},
        PhysicalResourceId="payment-outbox-schema",
    )
    with response_url() as url:
        event["ResponseURL"] = url.url
        result = app.lambda_handler(event, _Context(timeout_seconds=300.0))
    # Then CloudFormation hears SUCCESS with a reason, the migrator was never built, the schema stays 0003
    answer = url.answers[0]
    assert answer["Status"] == "SUCCESS" and "rollback" in answer["Reason"]
    assert built == [] and result == {"revision": "0003"}


def test_an_update_to_a_newer_revision_migrates_and_says_where_the_schema_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from payment_outbox.composition.migration import SchemaMigrator

    app = _deployed_migrator()
    monkeypatch.setattr(app, "schema_migrator", lambda: SchemaMigrator(migrate=lambda _wait: "0002"))
    event = _event("", "Update", OldResourceProperties={"SchemaRevision": "0001"})
    with response_url() as url:
        event["ResponseURL"] = url.url
        app.lambda_handler(event, _Context(timeout_seconds=300.0))
    assert url.answers[0]["Status"] == "SUCCESS"
    assert url.answers[0]["Reason"].startswith("schema at revision 0002")
