"""Which batch semantics a consumer applies: decided by the queue the SQS event comes from, and applied
by the consumers' one batch handler (``composition.consumers.SqsConsumer``)."""

from __future__ import annotations

from typing import Any

import pytest
from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from payment_outbox.adapters.sqs_batch import from_fifo_queue
from payment_outbox.composition.consumers import SqsConsumer
from payment_outbox_dev.local.harness import LambdaContext

pytestmark = pytest.mark.unit

FIFO_ARN = "arn:aws:sqs:us-east-1:123456789012:payment-outbox-points.fifo"
STANDARD_ARN = "arn:aws:sqs:us-east-1:123456789012:payment-outbox-PointsQueue-1ABC"


@pytest.mark.parametrize(
    ("records", "fifo"),
    [
        ([{"eventSourceARN": FIFO_ARN}, {"eventSourceARN": FIFO_ARN}], True),
        ([{"eventSourceARN": STANDARD_ARN}], False),
        ([], False),
    ],
    ids=["fifo queue", "standard queue", "no records"],
)
def test_a_batch_gets_fifo_semantics_exactly_when_it_comes_from_a_fifo_queue(
    records: list[dict[str, str]], fifo: bool
) -> None:
    # Given an SQS event of these records / When its source is read / Then FIFO only for a .fifo queue
    assert from_fifo_queue({"Records": records}) is fifo


class _FailingOn:
    """A record handler that fails the records whose body names ``fail`` and counts the others."""

    def __init__(self, fail: str) -> None:
        self.fail = fail
        self.handled: list[str] = []
        self.contexts: list[object] = []

    def register(self, context: object) -> None:
        self.contexts.append(context)

    def __call__(self, record: SQSRecord) -> dict[str, Any]:
        if record.body == self.fail:
            raise RuntimeError("refused")
        self.handled.append(record.body)
        return {}


def _event(arn: str, bodies: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": f"m{index}",
                "receiptHandle": f"r{index}",
                "body": body,
                "attributes": {"MessageGroupId": group, "ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": arn,
                "awsRegion": "us-east-1",
            }
            for index, (group, body) in enumerate(bodies)
        ]
    }


BATCH = [("order-1", "a1"), ("order-1", "a2-fails"), ("order-1", "a3"), ("order-2", "b1")]


@pytest.mark.parametrize(
    ("arn", "failed", "handled"),
    [
        (FIFO_ARN, ["m1", "m2"], ["a1", "b1"]),
        (STANDARD_ARN, ["m1"], ["a1", "a3", "b1"]),
    ],
    ids=["fifo queue: the failed record's group stops", "standard queue: each record on its own"],
)
def test_a_consumer_settles_its_batch_by_the_semantics_of_the_queue_it_comes_from(
    arn: str, failed: list[str], handled: list[str]
) -> None:
    # Given a consumer whose record handler fails the second record of order-1's stream
    handler = _FailingOn("a2-fails")
    builds: list[int] = []

    def build() -> _FailingOn:
        builds.append(1)
        return handler

    consume = SqsConsumer("points", build, logger=Logger(service="test"), tracer=Tracer(disabled=True))
    context = LambdaContext("PointsConsumer")
    # When a batch from this queue arrives, twice (two invocations of one container)
    for _ in range(2):
        response = consume(_event(arn, BATCH), context)  # type: ignore[arg-type]
        # Then exactly these records go back to the queue; on a FIFO queue what follows the failure in
        # its stream goes back unhandled, while the other stream goes on
        assert [item["itemIdentifier"] for item in response["batchItemFailures"]] == failed
    assert handler.handled == handled * 2
    # And the handler was built once, for the container's life, and given each invocation's context
    assert len(builds) == 1
    assert handler.contexts == [context, context]
