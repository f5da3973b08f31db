"""The SNS client the relay publishes with: its form body is url-encoded once, and the bytes it signs
are the bytes it sends, the same bytes a stock botocore client sends."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.auth
import botocore.awsrequest
import botocore.validate
import pytest

from payment_outbox import timeouts
from payment_outbox.adapters.aws import new_client

pytestmark = pytest.mark.unit

ENTRIES = [
    {
        "Id": str(i),
        "Message": '{"orderNo": "ORD-1", "note": "a&b=c d+é"}',
        "MessageAttributes": {
            "topic": {"DataType": "String", "StringValue": "order.paid.points"},
            "messageId": {"DataType": "String", "StringValue": f"m-{i}"},
        },
    }
    for i in range(10)
]


@pytest.fixture
def topic_arn(aws: None) -> Iterator[str]:
    yield boto3.client("sns").create_topic(Name="order-events")["TopicArn"]


class Wire:
    """What one PublishBatch call signed and sent, and how often botocore url-encoded a form for it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sent: list[bytes] = []
        self.signed_hashes: list[str] = []
        self.encodings = 0
        encode, payload = botocore.awsrequest.urlencode, botocore.auth.SigV4Auth.payload

        def counting_encode(*args: Any, **kwargs: Any) -> str:
            self.encodings += 1
            return encode(*args, **kwargs)

        def recording_payload(signer: Any, request: Any) -> str:
            digest: str = payload(signer, request)
            self.signed_hashes.append(digest)
            return digest

        monkeypatch.setattr(botocore.awsrequest, "urlencode", counting_encode)
        monkeypatch.setattr(botocore.auth.SigV4Auth, "payload", recording_payload)

    def publish(self, client: Any, topic_arn: str) -> dict[str, Any]:
        self.sent.clear()
        self.signed_hashes.clear()
        self.encodings = 0
        client.meta.events.register_first("before-send.sns", self._record)
        try:
            answer: dict[str, Any] = client.publish_batch(
                TopicArn=topic_arn, PublishBatchRequestEntries=ENTRIES
            )
        finally:
            client.meta.events.unregister("before-send.sns", self._record)
        return answer

    def _record(self, request: Any, **_: Any) -> None:
        body = request.body
        self.sent.append(body.encode() if isinstance(body, str) else body)


def test_the_relays_sns_client_encodes_the_form_once_and_signs_what_it_sends(
    topic_arn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    wire = Wire(monkeypatch)

    answer = wire.publish(new_client("sns", budget=timeouts.SNS_RELAY, max_pool_connections=10), topic_arn)

    assert len(answer["Successful"]) == len(ENTRIES)  # the service parsed the form
    assert wire.encodings == 1
    assert wire.signed_hashes == [hashlib.sha256(wire.sent[0]).hexdigest()]


def test_the_relays_sns_client_sends_the_bytes_a_stock_client_sends(
    topic_arn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    wire = Wire(monkeypatch)

    stock = wire.publish(boto3.client("sns"), topic_arn)
    stock_body, stock_encodings = wire.sent[0], wire.encodings
    ours = wire.publish(new_client("sns", budget=timeouts.SNS_RELAY), topic_arn)

    assert wire.sent[0] == stock_body
    assert len(ours["Successful"]) == len(stock["Successful"])
    # botocore on its own encodes the form twice (to sign it, to send it): what the client saves.
    assert (stock_encodings, wire.encodings) == (2, 1)


def test_sns_leaves_checking_parameters_to_the_service_other_clients_keep_botocores_check(
    topic_arn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[str] = []
    check = botocore.validate.ParamValidator.validate

    def counting_check(validator: Any, params: Any, shape: Any) -> Any:
        checked.append(shape.name)
        return check(validator, params, shape)

    monkeypatch.setattr(botocore.validate.ParamValidator, "validate", counting_check)

    new_client("sns", budget=timeouts.SNS_RELAY).publish_batch(
        TopicArn=topic_arn, PublishBatchRequestEntries=ENTRIES
    )
    assert checked == []
    new_client("dynamodb", budget=timeouts.DYNAMODB).list_tables()
    assert checked == ["ListTablesInput"]
