"""Which batch semantics an SQS event needs: FIFO queues (ordered delivery) keep each message group
in order, so a group stops at its first failure; standard queues settle each record on its own."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def from_fifo_queue(event: Mapping[str, Any]) -> bool:
    """True when the batch comes from a FIFO queue (its ARN ends in ``.fifo``).

    Read from the event rather than configured: one event source mapping delivers from one queue,
    and the queue's own type can never disagree with a setting.
    """
    records = event.get("Records") or []
    return bool(records) and str(records[0].get("eventSourceARN", "")).endswith(".fifo")
