"""Publishes outbox messages to SNS with PublishBatch, reporting the outcome of every message."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from payment_outbox.domain.outbox import OutboxMessage
from payment_outbox.ports import PublishFailure, PublishOutcome

MAX_BATCH_ENTRIES = 10
#: SNS counts the whole request: every message body plus its attribute names, types and values.
MAX_BATCH_BYTES = 256 * 1024
#: A FIFO group id: at most 128 characters, letters, digits and ASCII punctuation.
_MAX_GROUP_ID = 128
_GROUP_ID_CHARACTERS = re.compile(r"[A-Za-z0-9!-/:-@\[-`{-~]+")


class SnsPublisher:
    def __init__(self, client_factory: Callable[[], Any], topic_arn: str) -> None:
        self._client_factory = client_factory
        self._topic_arn = topic_arn
        self._fifo = topic_arn.endswith(".fifo")

    def publish(self, messages: Sequence[OutboxMessage]) -> PublishOutcome:
        outcome = PublishOutcome()
        publishable: list[tuple[OutboxMessage, int]] = []
        for message in messages:
            size = entry_size(message)
            if size > MAX_BATCH_BYTES:
                outcome.failed[message.message_id] = PublishFailure(
                    f"message is {size} bytes; SNS accepts at most {MAX_BATCH_BYTES}", permanent=True
                )
            else:
                publishable.append((message, size))
        for batch in batches(publishable):
            self._publish_batch(batch, outcome)
        return outcome

    def _publish_batch(self, batch: list[OutboxMessage], outcome: PublishOutcome) -> None:
        by_entry_id = {str(i): m for i, m in enumerate(batch)}
        try:
            response = self._client_factory().publish_batch(
                TopicArn=self._topic_arn,
                PublishBatchRequestEntries=[self._entry(i, m) for i, m in by_entry_id.items()],
            )
        except (ClientError, BotoCoreError) as exc:
            failure = PublishFailure(_describe(exc), outage=is_outage(exc))
            for message in batch:
                outcome.failed[message.message_id] = failure
            return
        answered = set()
        for ok in response.get("Successful", []):
            answered.add(ok["Id"])
            outcome.published.append(by_entry_id[ok["Id"]].message_id)
        # PublishBatch answers HTTP 200 even when some entries failed: each failure is listed here.
        for failed in response.get("Failed", []):
            answered.add(failed["Id"])
            outcome.failed[by_entry_id[failed["Id"]].message_id] = PublishFailure(
                f"{failed.get('Code', 'Unknown')}: {failed.get('Message', '')}".strip(),
                permanent=bool(failed.get("SenderFault")) and failed.get("Code") in _PERMANENT_CODES,
            )
        for entry_id, message in by_entry_id.items():
            if entry_id not in answered:
                outcome.failed[message.message_id] = PublishFailure("no result for this entry")

    def _entry(self, entry_id: str, message: OutboxMessage) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "Id": entry_id,
            "Message": message.content,
            "MessageAttributes": message_attributes(message),
        }
        if self._fifo:
            entry["MessageGroupId"] = message_group_id(message)
            # The outbox row's id (plus its requeue generation): SNS drops a row published twice within
            # its 5-minute window, but passes an operator's requeue on.
            entry["MessageDeduplicationId"] = message.deduplication_id
        return entry


_PERMANENT_CODES = frozenset({"InvalidParameter", "InvalidParameterValue", "ValidationError"})
#: Error codes with which SNS (or the KMS key behind its topic) says "too many requests right now".
_THROTTLING_CODES = frozenset(
    {
        "Throttled",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "KMSThrottling",
        "KMSThrottlingException",
    }
)


def is_outage(exc: ClientError | BotoCoreError) -> bool:
    """Whether a whole request failed for the service's own reasons: throttled, a server error
    (HTTP 5xx), or no answer at all (no connection, connection dropped, timed out). Any other refusal
    of the request (access denied, topic not found, a request it calls invalid) is not an outage."""
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return code in _THROTTLING_CODES or status >= 500
    return isinstance(exc, BotoConnectionError | HTTPClientError)


def message_group_id(message: OutboxMessage) -> str:
    """The FIFO message group: the message's stream, its business key x topic.

    Not the business key alone: an order's points and SMS messages need no order between them, and one
    group would make a subscriber of both topics stop the SMS behind a failing points message. A
    message without a business key is a group of its own (no order asked for, no one held up).
    """
    if not message.business_key:
        return message.message_id
    group = f"{message.business_key}|{message.topic}"
    if len(group) <= _MAX_GROUP_ID and _GROUP_ID_CHARACTERS.fullmatch(group):
        return group
    # Too long, or characters SNS refuses in a group id: a digest is just as stable and distinct.
    return hashlib.sha256(group.encode()).hexdigest()


def message_attributes(message: OutboxMessage) -> dict[str, dict[str, str]]:
    """``topic`` (the subscriptions filter on it), ``messageId``, and the trace context of the request
    that wrote the row (``traceparent``, ``correlationId``, ``xrayTraceHeader``), which the consumers
    continue. Raw delivery hands them to SQS as they are."""
    attributes = {
        "topic": {"DataType": "String", "StringValue": message.topic},
        "messageId": {"DataType": "String", "StringValue": message.message_id},
    }
    if message.trace is not None:
        for name, value in message.trace.attributes().items():
            attributes[name] = {"DataType": "String", "StringValue": value}
    return attributes


def entry_size(message: OutboxMessage) -> int:
    size = len(message.content.encode())
    for name, attribute in message_attributes(message).items():
        size += len(name.encode()) + len(attribute["DataType"]) + len(attribute["StringValue"].encode())
    return size


def batches(sized: Sequence[tuple[OutboxMessage, int]]) -> Iterator[list[OutboxMessage]]:
    """Split messages (each with its ``entry_size``) into PublishBatch requests of at most 10 entries
    and 256 KiB, keeping message order."""
    batch: list[OutboxMessage] = []
    size = 0
    for message, message_size in sized:
        if batch and (len(batch) == MAX_BATCH_ENTRIES or size + message_size > MAX_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(message)
        size += message_size
    if batch:
        yield batch


def _describe(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'ClientError')}: {error.get('Message', '')}".strip()
    return f"{type(exc).__name__}: {exc}"
