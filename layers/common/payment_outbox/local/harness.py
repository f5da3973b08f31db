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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3

from payment_outbox.local.template import FunctionSpec, Route, api_routes, functions

REGION = "us-east-1"
ACCOUNT = "123456789012"


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


class LocalFunctions:
    """The template's functions, loaded from their CodeUri and invoked with their own environment."""

    def __init__(
        self, root: Path, template: dict[str, Any], environments: dict[str, dict[str, str]] | None = None
    ) -> None:
        self._root = root
        self._environments = environments or {}
        self._specs = {spec.logical_id: spec for spec in functions(template)}
        self._routes = api_routes(template)
        globals_fn = template.get("Globals", {}).get("Function", {})
        self._timeouts = {
            logical_id: float(resource.get("Properties", {}).get("Timeout", globals_fn.get("Timeout", 3)))
            for logical_id, resource in template.get("Resources", {}).items()
            if resource.get("Type") == "AWS::Serverless::Function"
        }
        self._modules: dict[str, ModuleType] = {}

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
        with self.environment(logical_id):
            return handler(event, self.context(logical_id))

    # --- API Gateway ------------------------------------------------------------------------------

    def match_route(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        for route in self._routes:
            pattern = "^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", route.path) + "$"
            found = re.match(pattern, path)
            if route.method == method.upper() and found:
                return route, found.groupdict()
        return None

    def call_api(
        self, method: str, path: str, body: str | None = None, headers: dict[str, str] | None = None
    ) -> ApiResponse:
        matched = self.match_route(method, path)
        if matched is None:
            return ApiResponse(
                404 if not any(r.path == path for r in self._routes) else 405,
                {"message": "Missing Authentication Token"},
                {},
            )
        route, params = matched
        event = api_gateway_event(method, path, route.path, params, body, headers or {})
        result = self.invoke(route.function, event)
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
    ) -> Delivery:
        """Receive one batch from the queue, invoke the consumer, and settle it as Lambda's SQS poller
        would with ReportBatchItemFailures: delete what succeeded, leave failures for redelivery."""
        sqs = boto3.client("sqs", region_name=REGION)
        received: list[Any] = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=max_messages,
            WaitTimeSeconds=wait_seconds,
            MessageAttributeNames=["All"],
            AttributeNames=["All"],
        ).get("Messages", [])
        if not received:
            return Delivery(0, 0, {"batchItemFailures": []})
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        response = self.invoke(logical_id, sqs_event(received, queue_arn)) or {}
        failed_ids = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
        for message in received:
            if message["MessageId"] in failed_ids:
                if retry_failed_now:
                    sqs.change_message_visibility(
                        QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
                    )
            else:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        return Delivery(len(received), len(failed_ids), response)


def api_gateway_event(
    method: str,
    path: str,
    resource: str,
    path_parameters: dict[str, str],
    body: str | None,
    headers: dict[str, str],
) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method.upper(),
        "headers": {"Content-Type": "application/json", **headers},
        "multiValueHeaders": {k: [v] for k, v in {"Content-Type": "application/json", **headers}.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
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
            "identity": {"sourceIp": "127.0.0.1", "userAgent": "payment-outbox-local"},
        },
        "body": body,
        "isBase64Encoded": False,
    }


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
                "md5OfBody": hashlib.md5(message["Body"].encode()).hexdigest(),  # noqa: S324 - SQS's checksum
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": REGION,
            }
        )
    return {"Records": records}
