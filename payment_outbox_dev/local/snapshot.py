"""Saves the emulator's state to a file when the local stack stops, and loads it when it starts again.

moto keeps everything in memory. What the system has committed on the AWS side must survive a
restart all the same: the DynamoDB tables (points ledger and balances, SMS delivery records,
idempotency records) and the messages still in the queues and dead-letter queues. Only the public
AWS API is used, so this works against any emulator.

What does not survive: SQS message ids and receive counts (a restored message is a new message with
the same body and attributes, as a redrive would make it), and moto's record of SMS it "sent" (the
SmsDeliveries table is the durable record of that).
"""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1


def _encode(value: Any) -> Any:
    """DynamoDB attribute values as JSON: bytes become base64 text."""
    if isinstance(value, bytes | bytearray):
        return {"__b64__": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__b64__"}:
            return base64.b64decode(value["__b64__"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def capture(
    dynamodb: Any, sqs: Any, tables: list[str], queues: dict[str, str], *, in_flight_wait_seconds: float = 0.0
) -> dict[str, Any]:
    """Every item of ``tables`` and every message of ``queues`` (logical id -> URL).

    Messages are taken by receiving them with a long visibility timeout (the emulator is about to
    stop, nothing else reads them). Messages in flight — received by a consumer that failed them —
    are waited for up to ``in_flight_wait_seconds``, the time they take to become visible again.
    """
    state: dict[str, Any] = {"version": FORMAT_VERSION, "dynamodb": {}, "sqs": {}}
    for table in tables:
        items: list[Any] = []
        for page in dynamodb.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
            items.extend(page.get("Items", []))
        state["dynamodb"][table] = _encode(items)
    deadline = time.monotonic() + in_flight_wait_seconds
    for logical_id, url in queues.items():
        messages: list[dict[str, Any]] = []
        while True:
            received = sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=10,
                VisibilityTimeout=43_200,
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            messages.extend(
                {"body": m["Body"], "attributes": m.get("MessageAttributes", {})} for m in received
            )
            if received:
                continue
            attributes = sqs.get_queue_attributes(
                QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
            )["Attributes"]
            hidden_by_others = int(attributes["ApproximateNumberOfMessagesNotVisible"]) - len(messages)
            if hidden_by_others <= 0 or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        state["sqs"][logical_id] = _encode(messages)
    return state


def restore(dynamodb: Any, sqs: Any, state: dict[str, Any], queues: dict[str, str]) -> dict[str, int]:
    """Put the captured items and messages back; returns how many of each were restored."""
    counts = {"items": 0, "messages": 0}
    for table, items in state.get("dynamodb", {}).items():
        decoded = _decode(items)
        for start in range(0, len(decoded), 25):
            chunk = decoded[start : start + 25]
            request: dict[str, Any] = {table: [{"PutRequest": {"Item": item}} for item in chunk]}
            while request:
                request = dynamodb.batch_write_item(RequestItems=request).get("UnprocessedItems") or {}
            counts["items"] += len(chunk)
    for logical_id, messages in state.get("sqs", {}).items():
        url = queues.get(logical_id)
        if url is None:
            continue  # the queue left the template
        for message in _decode(messages):
            request = {"QueueUrl": url, "MessageBody": message["body"]}
            if message["attributes"]:
                request["MessageAttributes"] = {
                    name: {k: v for k, v in value.items() if k in ("DataType", "StringValue", "BinaryValue")}
                    for name, value in message["attributes"].items()
                }
            sqs.send_message(**request)
            counts["messages"] += 1
    return counts


def save(path: Path, state: dict[str, Any]) -> None:
    """Write atomically: a crash mid-write leaves the previous snapshot in place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_suffix(path.suffix + ".tmp")
    scratch.write_text(json.dumps(state, indent=1, sort_keys=True))
    os.replace(scratch, path)


def load(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    state: dict[str, Any] = json.loads(path.read_text())
    if state.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path}: snapshot format {state.get('version')!r}, expected {FORMAT_VERSION}")
    return state
