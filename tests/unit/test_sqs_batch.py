"""Which batch semantics a consumer applies: decided by the queue the SQS event comes from."""

from __future__ import annotations

import pytest

from payment_outbox.adapters.sqs_batch import from_fifo_queue

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
