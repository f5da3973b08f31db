"""Runs the real Lambda handlers in-process, the way AWS would call them: API Gateway proxy events,
EventBridge scheduled events and SQS batch events built from messages really received from a queue.

The demo, the end-to-end tests and the local stack all drive the system through this one harness.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import re
import sys
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3

from payment_outbox_dev.checks.template import FunctionSpec, Route, api_routes, functions

REGION = "us-east-1"
ACCOUNT = "123456789012"
#: Variables that could point a boto3 client at a real account or another endpoint.
ACCOUNT_VARIABLES = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL")


def emulator_environment(credentials: str) -> dict[str, str]:
    """Dummy credentials, the region and Powertools' offline settings, for handlers on an in-process
    emulator; set them (after dropping ``ACCOUNT_VARIABLES``) before any client exists."""
    return {
        "AWS_ACCESS_KEY_ID": credentials,
        "AWS_SECRET_ACCESS_KEY": credentials,  # emulator credentials  # nosec B105
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_NAMESPACE": "PaymentOutbox",
    }


#: The logical id of the function being invoked, for observers (e.g. recording AWS calls per function).
current_function: ContextVar[str | None] = ContextVar("current_function", default=None)


@dataclass
class LambdaContext:
    """The parts of the Lambda context object that handlers and Powertools read."""

    function_name: str
    timeout_seconds: float = 30.0
    memory_limit_in_mb: int = 256
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    log_group_name: str = ""
    log_stream_name: str = ""
    _started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_seconds - (time.monotonic() - self._started)) * 1000))


@dataclass(frozen=True)
class ApiResponse:
    status: int
    body: Any
    headers: dict[str, str]


@dataclass(frozen=True)
class Delivery:
    received: int
    failed: int
    response: dict[str, Any]
    #: The messages as ReceiveMessage returned them, and the SQS message ids the consumer failed.
    messages: tuple[dict[str, Any], ...] = ()
    failed_ids: frozenset[str] = frozenset()
    #: Set when the handler raised (with ``handler_errors_fail_batch``): every record failed.
    error: BaseException | None = None


#: What API Gateway answers for a path and method no resource of the API has.
MISSING_ROUTE_BODY = {"message": "Missing Authentication Token"}


class LocalFunctions:
    """The template's functions, loaded from their CodeUri and invoked with their own environment."""

    def __init__(
        self,
        root: Path,
        template: dict[str, Any],
        environments: dict[str, dict[str, str]] | None = None,
        *,
        timeouts: dict[str, float] | None = None,
    ) -> None:
        """``timeouts`` replaces the template's Timeout of the functions it names (the local stack's
        time-scaled ones), as the Lambda context reports it to the handler."""
        self._root = root
        self._environments = environments or {}
        self._specs = {spec.logical_id: spec for spec in functions(template)}
        self._routes = api_routes(template)
        globals_fn = template.get("Globals", {}).get("Function", {})
        self._timeouts = {
            logical_id: float(resource.get("Properties", {}).get("Timeout", globals_fn.get("Timeout", 3)))
            for logical_id, resource in template.get("Resources", {}).items()
            if resource.get("Type") == "AWS::Serverless::Function"
        } | (timeouts or {})
        self._modules: dict[str, ModuleType] = {}
        #: Database engines each function's handler created: a container's end disposes them.
        self._engines: dict[str, weakref.WeakSet[Any]] = {}
        self._engine_listener: Callable[[Any], None] | None = None

    @property
    def environments(self) -> dict[str, dict[str, str]]:
        """Each function's own environment, applied on each invocation (a test may change it)."""
        return self._environments

    @property
    def specs(self) -> dict[str, FunctionSpec]:
        return self._specs

    @property
    def routes(self) -> list[Route]:
        return self._routes

    def handler(self, logical_id: str) -> Callable[[dict[str, Any], Any], Any]:
        spec = self._specs[logical_id]
        module_name, _, attribute = spec.handler.rpartition(".")
        if logical_id not in self._modules:
            with self.environment(logical_id):
                self._modules[logical_id] = self._load(logical_id, module_name)
        handler: Callable[[dict[str, Any], Any], Any] = getattr(self._modules[logical_id], attribute)
        return handler

    def cold_start(self, logical_id: str | None = None) -> None:
        """End the container of ``logical_id`` (of every function when None), as Lambda does: its
        database connections close, and its next invocation loads the handler, and so builds its
        composition, anew."""
        for function in [logical_id] if logical_id is not None else list(self._specs):
            self._modules.pop(function, None)
            for engine in list(self._engines.pop(function, ())):
                engine.dispose()

    def close(self) -> None:
        """End every container and stop watching for the engines handlers create."""
        self.cold_start()
        if self._engine_listener is not None:
            from sqlalchemy import event
            from sqlalchemy.engine import Engine

            event.remove(Engine, "engine_connect", self._engine_listener)
            self._engine_listener = None

    def _watch_engines(self) -> None:
        """Note each engine a handler connects with, under the function it runs for."""
        if self._engine_listener is not None:
            return
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        def on_connect(connection: Any) -> None:
            function = current_function.get()
            if function in self._specs:
                self._engines.setdefault(function, weakref.WeakSet()).add(connection.engine)

        self._engine_listener = on_connect
        event.listen(Engine, "engine_connect", on_connect)

    def module(self, logical_id: str) -> ModuleType:
        """The function's handler module, loaded."""
        self.handler(logical_id)
        return self._modules[logical_id]

    def _load(self, logical_id: str, module_name: str) -> ModuleType:
        spec = self._specs[logical_id]
        path = self._root / spec.code_uri / (module_name.replace(".", "/") + ".py")
        unique_name = f"payment_outbox_function_{logical_id}"
        module_spec = importlib.util.spec_from_file_location(unique_name, path)
        if module_spec is None or module_spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[unique_name] = module
        module_spec.loader.exec_module(module)
        return module

    @contextmanager
    def environment(self, logical_id: str) -> Iterator[None]:
        """Apply the function's own environment (as Lambda would) for the duration of the block."""
        variables = self._environments.get(logical_id, {})
        saved = {name: os.environ.get(name) for name in variables}
        os.environ.update(variables)
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    def context(self, logical_id: str) -> LambdaContext:
        return LambdaContext(function_name=logical_id, timeout_seconds=self._timeouts.get(logical_id, 3.0))

    def invoke(self, logical_id: str, event: dict[str, Any]) -> Any:
        handler = self.handler(logical_id)
        self._watch_engines()
        token = current_function.set(logical_id)
        try:
            with self.environment(logical_id):
                return handler(event, self.context(logical_id))
        finally:
            current_function.reset(token)

    # --- API Gateway ------------------------------------------------------------------------------

    def match_route(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        for route in self._routes:
            found = _route_pattern(route.path).match(path)
            if route.method == method.upper() and found:
                return route, found.groupdict()
        return None

    def allowed_methods(self, path: str) -> list[str]:
        """The methods some route of the API serves on ``path`` (empty: no resource has this path)."""
        return sorted({r.method for r in self._routes if _route_pattern(r.path).match(path)})

    def api_result(
        self,
        method: str,
        path: str,
        body: str | None = None,
        headers: dict[str, str] | None = None,
        *,
        query: dict[str, list[str]] | None = None,
        default_content_type: bool = True,
        authorizer: dict[str, Any] | None = None,
        identity: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The proxy result (``statusCode``, ``headers``, ``body``…) API Gateway would turn into the HTTP
        response: from the route's function, or API Gateway's own answer when no route matches
        (404 for an unknown path, 405 for a known path with another method)."""
        matched = self.match_route(method, path)
        if matched is None:
            allowed = self.allowed_methods(path)
            return {
                "statusCode": 405 if allowed else 404,
                "headers": {
                    "Content-Type": "application/json",
                    **({"Allow": ", ".join(allowed)} if allowed else {}),
                },
                "body": json.dumps(MISSING_ROUTE_BODY),
                "isBase64Encoded": False,
            }
        route, params = matched
        event = api_gateway_event(
            method,
            path,
            route.path,
            params,
            body,
            headers or {},
            query=query,
            default_content_type=default_content_type,
            authorizer=authorizer,
            identity=identity,
        )
        result: dict[str, Any] = self.invoke(route.function, event)
        return result

    def call_api(
        self,
        method: str,
        path: str,
        body: str | None = None,
        headers: dict[str, str] | None = None,
        *,
        authorizer: dict[str, Any] | None = None,
        identity: dict[str, Any] | None = None,
    ) -> ApiResponse:
        result = self.api_result(method, path, body, headers, authorizer=authorizer, identity=identity)
        raw = result.get("body") or ""
        if result.get("isBase64Encoded"):
            raw = base64.b64decode(raw).decode()
        try:
            parsed: Any = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw
        return ApiResponse(int(result["statusCode"]), parsed, dict(result.get("headers") or {}))

    # --- schedule and queues ------------------------------------------------------------------------

    def run_scheduled(self, logical_id: str) -> Any:
        return self.invoke(logical_id, scheduled_event())

    def deliver(
        self,
        queue_url: str,
        logical_id: str,
        *,
        max_messages: int = 10,
        wait_seconds: int = 0,
        retry_failed_now: bool = True,
        visibility_timeout: int | None = None,
        sqs_client: Any = None,
        queue_arn: str | None = None,
        reports_item_failures: bool = True,
        handler_errors_fail_batch: bool = False,
    ) -> Delivery:
        """Receive one batch from the queue, invoke the consumer, and settle it as Lambda's SQS poller
        would with ReportBatchItemFailures: delete what succeeded, leave failures for redelivery.

        ``retry_failed_now`` makes failures visible again at once; otherwise they come back when the
        visibility timeout (the queue's, or ``visibility_timeout`` given to the receive) has passed.
        Without ``reports_item_failures`` the response is not read: a returning handler settles the
        whole batch. A handler that raises fails the whole batch: the exception propagates, or with
        ``handler_errors_fail_batch`` is returned in ``Delivery.error``, as Lambda would log it."""
        sqs = sqs_client or boto3.client("sqs", region_name=REGION)
        receive: dict[str, Any] = {
            "QueueUrl": queue_url,
            "MaxNumberOfMessages": max_messages,
            "WaitTimeSeconds": wait_seconds,
            "MessageAttributeNames": ["All"],
            "AttributeNames": ["All"],
        }
        if visibility_timeout is not None:
            receive["VisibilityTimeout"] = visibility_timeout
        received: list[Any] = sqs.receive_message(**receive).get("Messages", [])
        if not received:
            return Delivery(0, 0, {"batchItemFailures": []})
        if queue_arn is None:
            queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
                "Attributes"
            ]["QueueArn"]
        try:
            response = self.invoke(logical_id, sqs_event(received, queue_arn)) or {}
        except Exception as exc:
            if not handler_errors_fail_batch:
                raise
            failed_ids = {m["MessageId"] for m in received}
            self._settle_failures(sqs, queue_url, received, retry_failed_now)
            return Delivery(len(received), len(received), {}, tuple(received), frozenset(failed_ids), exc)
        failures = response.get("batchItemFailures", []) if reports_item_failures else []
        failed_ids = {f["itemIdentifier"] for f in failures}
        for message in received:
            if message["MessageId"] in failed_ids:
                if retry_failed_now:
                    sqs.change_message_visibility(
                        QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
                    )
            else:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        return Delivery(len(received), len(failed_ids), response, tuple(received), frozenset(failed_ids))

    @staticmethod
    def _settle_failures(sqs: Any, queue_url: str, failed: list[Any], retry_now: bool) -> None:
        if retry_now:
            for message in failed:
                sqs.change_message_visibility(
                    QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
                )


def api_gateway_event(
    method: str,
    path: str,
    resource: str,
    path_parameters: dict[str, str],
    body: str | None,
    headers: dict[str, str],
    *,
    query: dict[str, list[str]] | None = None,
    default_content_type: bool = True,
    authorizer: dict[str, Any] | None = None,
    identity: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The REST API (v1) proxy event. ``query`` holds each parameter's values in order; API Gateway
    puts the last one in ``queryStringParameters``. ``default_content_type`` adds a JSON content type
    when ``headers`` has none (the in-process callers' convenience; an HTTP request keeps its own).
    ``authorizer`` is what the route's authorizer puts in ``requestContext.authorizer`` (a Cognito
    user-pool authorizer: ``{"claims": {...}}`` of the caller's token); ``identity`` is added to
    ``requestContext.identity`` (an IAM-authorised caller's ``accessKey``, ``caller``, ``userArn``)."""
    now = datetime.now(UTC)
    if default_content_type and not any(name.lower() == "content-type" for name in headers):
        headers = {"Content-Type": "application/json", **headers}
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method.upper(),
        "headers": dict(headers),
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": {k: v[-1] for k, v in query.items()} if query else None,
        "multiValueQueryStringParameters": dict(query) if query else None,
        "pathParameters": path_parameters or None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": resource,
            "httpMethod": method.upper(),
            "path": f"/local{path}",
            "stage": "local",
            "requestId": str(uuid.uuid4()),
            "requestTimeEpoch": int(now.timestamp() * 1000),
            "accountId": ACCOUNT,
            "apiId": "local",
            "identity": {"sourceIp": "127.0.0.1", "userAgent": "payment-outbox-local", **(identity or {})},
            **({"authorizer": authorizer} if authorizer is not None else {}),
        },
        "body": body,
        "isBase64Encoded": False,
    }


def _route_pattern(template_path: str) -> re.Pattern[str]:
    """``/orders/{orderId}`` as a regular expression with a named group per path parameter."""
    return re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template_path) + "$")


def scheduled_event() -> dict[str, Any]:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION,
        "resources": [f"arn:aws:events:{REGION}:{ACCOUNT}:rule/outbox-relay-schedule"],
        "detail": {},
    }


def sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    records = []
    for message in messages:
        attributes = {
            name: {
                "stringValue": value.get("StringValue"),
                "binaryValue": value.get("BinaryValue"),
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": value["DataType"],
            }
            for name, value in message.get("MessageAttributes", {}).items()
        }
        records.append(
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": message.get("Attributes", {}),
                "messageAttributes": attributes,
                "md5OfBody": hashlib.md5(message["Body"].encode(), usedforsecurity=False).hexdigest(),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": REGION,
            }
        )
    return {"Records": records}
