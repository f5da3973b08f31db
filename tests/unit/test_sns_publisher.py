"""SnsPublisher against a stand-in SNS client: batching, per-entry failures, FIFO fields, attributes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from payment_outbox.adapters.sns_publisher import MAX_BATCH_BYTES, SnsPublisher, message_group_id
from payment_outbox.domain.envelope import TOPIC_POINTS, TOPIC_SMS
from payment_outbox.domain.outbox import OutboxMessage
from tests.fakes import outbox_message

pytestmark = pytest.mark.unit

TOPIC_ARN = "arn:aws:sns:us-east-1:123456789012:order-events"
FIFO_ARN = "arn:aws:sns:us-east-1:123456789012:order-events.fifo"


class FakeSnsClient:
    """Answers PublishBatch like SNS: Successful/Failed per entry; can be told to fail or raise."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.entry_failures: dict[str, tuple[str, bool]] = {}
        self.unanswered: set[str] = set()
        self.raise_on_call: dict[int, Exception] = {}

    def publish_batch(self, **request: Any) -> dict[str, Any]:
        assert set(request) == {"TopicArn", "PublishBatchRequestEntries"}
        entries = request["PublishBatchRequestEntries"]
        self.requests.append({"TopicArn": request["TopicArn"], "Entries": entries})
        error = self.raise_on_call.get(len(self.requests))
        if error is not None:
            raise error
        assert len(entries) <= 10, "SNS rejects more than 10 entries"
        response: dict[str, Any] = {"Successful": [], "Failed": []}
        for entry in entries:
            message_id = entry["MessageAttributes"]["messageId"]["StringValue"]
            if message_id in self.unanswered:
                continue
            if message_id in self.entry_failures:
                code, sender_fault = self.entry_failures[message_id]
                response["Failed"].append(
                    {"Id": entry["Id"], "Code": code, "Message": "it failed", "SenderFault": sender_fault}
                )
            else:
                response["Successful"].append({"Id": entry["Id"], "MessageId": f"sns-{message_id}"})
        return response

    @property
    def entries(self) -> list[dict[str, Any]]:
        return [e for r in self.requests for e in r["Entries"]]


def _client_error(code: str = "Throttling") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "Rate exceeded"}}, "PublishBatch")


def _messages(count: int, **kwargs: Any) -> list[OutboxMessage]:
    return [outbox_message(f"m{i:02d}", **kwargs) for i in range(count)]


def _request_bytes(entries: list[dict[str, Any]]) -> int:
    """What SNS counts against the 256 KiB batch limit: bodies plus attribute names, types and values."""
    total = 0
    for entry in entries:
        total += len(entry["Message"].encode())
        for name, attribute in entry["MessageAttributes"].items():
            total += len(name.encode()) + len(attribute["DataType"]) + len(attribute["StringValue"].encode())
    return total


@pytest.fixture
def client() -> FakeSnsClient:
    return FakeSnsClient()


def test_all_messages_are_published_and_reported(client: FakeSnsClient) -> None:
    # Given three messages / When published
    messages = _messages(3)
    outcome = SnsPublisher(lambda: client, TOPIC_ARN).publish(messages)
    # Then one request carried them to the topic, each body exactly as stored
    assert [r["TopicArn"] for r in client.requests] == [TOPIC_ARN]
    assert [e["Message"] for e in client.entries] == [m.content for m in messages]
    assert outcome.published == ["m00", "m01", "m02"]
    assert outcome.failed == {}


def test_no_messages_means_no_call(client: FakeSnsClient) -> None:
    outcome = SnsPublisher(lambda: client, TOPIC_ARN).publish([])
    assert client.requests == []
    assert outcome.published == [] and outcome.failed == {}


def test_batches_hold_at_most_ten_entries(client: FakeSnsClient) -> None:
    # Given 23 small messages / When published
    outcome = SnsPublisher(lambda: client, TOPIC_ARN).publish(_messages(23))
    # Then they went out as 10 + 10 + 3, in order, with entry ids unique within each request
    assert [len(r["Entries"]) for r in client.requests] == [10, 10, 3]
    assert [e["MessageAttributes"]["messageId"]["StringValue"] for e in client.entries] == [
        f"m{i:02d}" for i in range(23)
    ]
    for request in client.requests:
        ids = [e["Id"] for e in request["Entries"]]
        assert len(set(ids)) == len(ids)
    assert len(outcome.published) == 23


def test_batches_stay_within_256_kib(client: FakeSnsClient) -> None:
    # Given five messages of about 100 KiB each
    messages = _messages(5, padding=100 * 1024)
    # When published
    outcome = SnsPublisher(lambda: client, TOPIC_ARN).publish(messages)
    # Then no request exceeded 256 KiB, so they went out two at a time
    assert all(_request_bytes(r["Entries"]) <= MAX_BATCH_BYTES for r in client.requests)
    assert [len(r["Entries"]) for r in client.requests] == [2, 2, 1]
    assert sorted(outcome.published) == [m.message_id for m in messages]


@pytest.mark.parametrize(("extra", "requests"), [(0, [2]), (1, [1, 1])])
def test_a_batch_is_filled_up_to_the_limit_and_not_one_byte_more(
    client: FakeSnsClient, extra: int, requests: list[int]
) -> None:
    # Given two messages that together take exactly 256 KiB (or one byte more)
    first = outbox_message("m00", padding=1000)
    base = _request_bytes([_entry_of(first)])
    second = outbox_message("m01", padding=1000 + MAX_BATCH_BYTES - 2 * base + extra)
    assert _request_bytes([_entry_of(first), _entry_of(second)]) == MAX_BATCH_BYTES + extra
    # When published / Then they share one request at the limit, and are split beyond it
    outcome = SnsPublisher(lambda: client, TOPIC_ARN).publish([first, second])
    assert [len(r["Entries"]) for r in client.requests] == requests
    assert outcome.published == ["m00", "m01"]


def _entry_of(message: OutboxMessage) -> dict[str, Any]:
    client = FakeSnsClient()
    SnsPublisher(lambda: client, TOPIC_ARN).publish([message])
    return client.entries[0]


def test_per_entry_failures_are_reported_even_when_the_call_succeeds(client: FakeSnsClient) -> None:
    # Given SNS accepting the request but failing two of its entries
    client.entry_failures = {"m01": ("InternalError", False), "m03": ("Throttled", False)}
    # When published
    outcome = SnsPublisher(lambda: client, TOPIC_ARN).publish(_messages(4))
    # Then exactly those two are failures (retryable), with SNS's reason, and the others published
    assert outcome.published == ["m00", "m02"]
    assert set(outcome.failed) == {"m01", "m03"}
    assert "InternalError" in outcome.failed["m01"].error
    assert not outcome.failed["m01"].permanent and not outcome.failed["m03"].permanent


def test_an_entry_sns_rejects_as_invalid_is_a_permanent_failure(client: FakeSnsClient) -> None:
    # Given SNS rejecting one entry's parameters as the sender's fault
    client.entry_failures = {"m00": ("InvalidParameter", True)}
    # When published / Then retrying cannot help: it is permanent
    outcome = SnsPublisher(lambda: client, TOPIC_ARN).publish(_messages(2))
    assert outcome.failed["m00"].permanent
    assert outcome.published == ["m01"]


def test_an_entry_missing_from_the_answer_is_a_failure(client: FakeSnsClient) -> None:
    # Given an answer that lists neither success nor failure for one entry
    client.unanswered = {"m01"}
    # When published / Then that message is not taken as published
    outcome = SnsPublisher(lambda: client, TOPIC_ARN).publish(_messages(3))
    assert outcome.published == ["m00", "m02"]
    assert set(outcome.failed) == {"m01"}
    assert not outcome.failed["m01"].permanent


def test_a_client_error_fails_that_batch_only_and_does_not_raise(client: FakeSnsClient) -> None:
    # Given 12 messages (two requests) and SNS throttling the first request
    client.raise_on_call = {1: _client_error("Throttling")}
    # When published
    outcome = SnsPublisher(lambda: client, TOPIC_ARN).publish(_messages(12))
    # Then the first ten are failed with the error code, retryable, and the last two still published
    assert len(client.requests) == 2
    assert sorted(outcome.failed) == [f"m{i:02d}" for i in range(10)]
    assert all("Throttling" in f.error and not f.permanent for f in outcome.failed.values())
    assert outcome.published == ["m10", "m11"]


def test_a_connection_error_is_reported_not_raised(client: FakeSnsClient) -> None:
    # Given an unreachable endpoint / When published / Then every message is a retryable failure
    client.raise_on_call = {1: EndpointConnectionError(endpoint_url="https://sns.us-east-1.amazonaws.com")}
    outcome = SnsPublisher(lambda: client, TOPIC_ARN).publish(_messages(3))
    assert outcome.published == []
    assert set(outcome.failed) == {"m00", "m01", "m02"}
    assert not any(f.permanent for f in outcome.failed.values())


def test_an_oversized_message_fails_permanently_and_the_rest_still_publish(client: FakeSnsClient) -> None:
    # Given one message larger than SNS accepts among normal ones
    huge = outbox_message("huge", padding=MAX_BATCH_BYTES)
    messages = [outbox_message("m00"), huge, outbox_message("m01")]
    # When published
    outcome = SnsPublisher(lambda: client, TOPIC_ARN).publish(messages)
    # Then the huge one is never sent and fails permanently; the others are published
    assert "huge" not in [e["MessageAttributes"]["messageId"]["StringValue"] for e in client.entries]
    assert outcome.failed["huge"].permanent
    assert str(MAX_BATCH_BYTES) in outcome.failed["huge"].error
    assert outcome.published == ["m00", "m01"]


def test_every_entry_carries_the_topic_and_message_id_attributes(client: FakeSnsClient) -> None:
    # Given messages of both topics / When published
    messages = [outbox_message("p1", topic=TOPIC_POINTS), outbox_message("s1", topic=TOPIC_SMS)]
    SnsPublisher(lambda: client, TOPIC_ARN).publish(messages)
    # Then each entry has the string attributes the subscriptions filter and consumers read
    for entry, message in zip(client.entries, messages, strict=True):
        assert entry["MessageAttributes"] == {
            "topic": {"DataType": "String", "StringValue": message.topic},
            "messageId": {"DataType": "String", "StringValue": message.message_id},
        }
        # And the body itself carries the same messageId (consumers key idempotency on it)
        assert json.loads(entry["Message"])["messageId"] == message.message_id


def test_a_standard_topic_gets_no_fifo_fields(client: FakeSnsClient) -> None:
    SnsPublisher(lambda: client, TOPIC_ARN).publish(_messages(2))
    assert all("MessageGroupId" not in e and "MessageDeduplicationId" not in e for e in client.entries)


def test_a_fifo_topic_groups_by_stream_and_deduplicates_by_message_id(client: FakeSnsClient) -> None:
    # Given points messages of two orders and the SMS message of one of them
    messages = [
        outbox_message("a1", business_key="PO-A"),
        outbox_message("b1", business_key="PO-B"),
        outbox_message("a2", business_key="PO-A"),
        outbox_message("a-sms", business_key="PO-A", topic=TOPIC_SMS),
    ]
    # When published to a FIFO topic
    SnsPublisher(lambda: client, FIFO_ARN).publish(messages)
    # Then each stream (business key x topic) is one group, so the SMS is not queued behind the points,
    # and every message deduplicates on its own id
    assert [(e["MessageGroupId"], e["MessageDeduplicationId"]) for e in client.entries] == [
        (f"PO-A|{TOPIC_POINTS}", "a1"),
        (f"PO-B|{TOPIC_POINTS}", "b1"),
        (f"PO-A|{TOPIC_POINTS}", "a2"),
        (f"PO-A|{TOPIC_SMS}", "a-sms"),
    ]
    assert client.requests[0]["TopicArn"] == FIFO_ARN


def test_a_group_id_sns_would_refuse_becomes_a_stable_digest() -> None:
    # Given a business key with a space (SNS refuses it in a group id) and one making the id too long
    spaced = outbox_message("m1", business_key="PO 1")
    long_key = outbox_message("m2", business_key="K" * 64, topic="t" * 100)
    # When their group ids are made / Then each is a 64-character digest, the same every time
    for message in (spaced, long_key):
        group = message_group_id(message)
        assert len(group) == 64 and group == message_group_id(message)
        assert set(group) <= set("0123456789abcdef")
    assert message_group_id(spaced) != message_group_id(long_key)


def test_a_message_without_business_key_is_a_group_of_its_own() -> None:
    assert message_group_id(outbox_message("lonely", business_key="")) == "lonely"


def test_the_client_is_only_created_when_publishing() -> None:
    # Given a publisher whose client factory is counted
    made: list[FakeSnsClient] = []

    def factory() -> FakeSnsClient:
        made.append(FakeSnsClient())
        return made[-1]

    publisher = SnsPublisher(factory, TOPIC_ARN)
    # When nothing has been published / Then no client exists yet (so tests can start moto first)
    assert made == []
    publisher.publish(_messages(1))
    assert len(made) >= 1


@pytest.mark.parametrize(
    "error",
    [
        _client_error("Throttling"),
        _client_error("KMSThrottling"),
        ClientError(
            {"Error": {"Code": "InternalError", "Message": "x"}, "ResponseMetadata": {"HTTPStatusCode": 500}},
            "PublishBatch",
        ),
        ClientError(
            {
                "Error": {"Code": "ServiceUnavailable", "Message": "x"},
                "ResponseMetadata": {"HTTPStatusCode": 503},
            },
            "PublishBatch",
        ),
        EndpointConnectionError(endpoint_url="https://sns.us-east-1.amazonaws.com"),
        ConnectTimeoutError(endpoint_url="https://sns.us-east-1.amazonaws.com"),
        ReadTimeoutError(endpoint_url="https://sns.us-east-1.amazonaws.com"),
        ConnectionClosedError(endpoint_url="https://sns.us-east-1.amazonaws.com"),
    ],
    ids=[
        "throttling",
        "kms-throttling",
        "500",
        "503",
        "no-connection",
        "connect-timeout",
        "read-timeout",
        "closed",
    ],
)
def test_a_whole_request_refused_by_an_outage_is_reported_as_an_outage(
    client: FakeSnsClient, error: Exception
) -> None:
    # Given SNS refusing or not answering the whole request for reasons of its own
    client.raise_on_call = {1: error}
    # When published
    outcome = SnsPublisher(lambda: client, TOPIC_ARN).publish(_messages(3))
    # Then every message of the request is an outage failure: retryable, charged no attempt by the relay
    assert set(outcome.failed) == {"m00", "m01", "m02"}
    assert all(f.outage and not f.permanent for f in outcome.failed.values())


@pytest.mark.parametrize("code", ["AuthorizationError", "NotFound", "InvalidParameter", "KMSDisabled"])
def test_a_whole_request_refused_for_another_reason_is_not_an_outage(
    client: FakeSnsClient, code: str
) -> None:
    # Given SNS answering the request with a refusal that is not throttling nor a server error
    client.raise_on_call = {
        1: ClientError(
            {"Error": {"Code": code, "Message": "no"}, "ResponseMetadata": {"HTTPStatusCode": 400}},
            "PublishBatch",
        )
    }
    # When published / Then the messages failed, and the failure counts as an attempt
    outcome = SnsPublisher(lambda: client, TOPIC_ARN).publish(_messages(2))
    assert set(outcome.failed) == {"m00", "m01"}
    assert not any(f.outage for f in outcome.failed.values())


def test_an_entry_sns_names_as_failed_is_the_messages_own_refusal_not_an_outage(
    client: FakeSnsClient,
) -> None:
    # Given SNS answering the request and naming one entry as failed with a server-side code
    client.entry_failures = {"m01": ("InternalError", False)}
    # When published / Then that entry's failure is its own refusal: it counts as an attempt
    outcome = SnsPublisher(lambda: client, TOPIC_ARN).publish(_messages(3))
    assert set(outcome.failed) == {"m01"}
    assert not outcome.failed["m01"].outage
