"""Finds Powertools idempotency records left INPROGRESS after their lock (or the record) expired.

Such a record means a consumer invocation died mid-way (timeout, crash) and the message has not
been processed again since: if its SQS message went to the DLQ meanwhile, the effect never happened.
The scan is bounded: it stops after reading ``max_items`` items, whatever it found.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from payment_outbox.ports import StuckIdempotencyRecord

#: Attribute names of Powertools' DynamoDBPersistenceLayer (its defaults, which the consumers use).
KEY, STATUS, EXPIRATION, IN_PROGRESS_EXPIRATION = "id", "status", "expiration", "in_progress_expiration"
INPROGRESS = "INPROGRESS"

_PAGE = 500


class DynamoDbIdempotencyRecords:
    def __init__(self, client_factory: Callable[[], Any], table_name: str) -> None:
        self._client_factory = client_factory
        self._table = table_name

    def stuck_in_progress(self, *, now_epoch_seconds: float, max_items: int) -> list[StuckIdempotencyRecord]:
        client = self._client_factory()
        request: dict[str, Any] = {
            "TableName": self._table,
            "FilterExpression": (
                "#status = :inprogress AND "
                "((attribute_exists(#lock) AND #lock < :now_ms) OR #expiration < :now_s)"
            ),
            "ExpressionAttributeNames": {
                "#status": STATUS,
                "#lock": IN_PROGRESS_EXPIRATION,
                "#expiration": EXPIRATION,
            },
            "ExpressionAttributeValues": {
                ":inprogress": {"S": INPROGRESS},
                ":now_ms": {"N": str(int(now_epoch_seconds * 1000))},
                ":now_s": {"N": str(int(now_epoch_seconds))},
            },
            "ProjectionExpression": "#id, #status, #lock, #expiration",
        }
        request["ExpressionAttributeNames"]["#id"] = KEY
        found: list[StuckIdempotencyRecord] = []
        read = 0
        while read < max_items:
            # Limit bounds the items read (before the filter), so the scan's cost is bounded too.
            response = client.scan(**request, Limit=min(_PAGE, max_items - read))
            read += max(1, int(response.get("ScannedCount", 0)))
            found.extend(_record(item) for item in response.get("Items", []))
            last_key = response.get("LastEvaluatedKey")
            if not last_key:
                break
            request["ExclusiveStartKey"] = last_key
        return found


def _record(item: dict[str, Any]) -> StuckIdempotencyRecord:
    return StuckIdempotencyRecord(
        key=item[KEY]["S"],
        status=item[STATUS]["S"],
        expiration=_number(item.get(EXPIRATION)),
        in_progress_expiration=_number(item.get(IN_PROGRESS_EXPIRATION)),
    )


def _number(value: dict[str, str] | None) -> int | None:
    return int(value["N"]) if value and "N" in value else None
