"""Idempotency records left INPROGRESS after their lock expired, found through a sparse index.

Such a record means a consumer invocation died mid-way (timeout, crash) and the message has not
been processed again since: if its SQS message went to the DLQ meanwhile, the effect never happened.

The idempotency table holds a record per message for a day (about 170 million at 1,000 orders/s), so
the records are not looked for by a scan. The consumers write through ``InProgressIndexingClient``,
which keeps one more attribute on a record while, and only while, it is INPROGRESS: its shard of the
index (``in_progress_shard``). The table's sparse global secondary index ``InProgressByLockExpiry``
is keyed on that shard and the record's lock expiry, so it holds the records in flight right now and
nothing else, and ``stuck_in_progress`` finds every record whose lock has run out with one range
query per shard, whatever the table's size. The shards spread the index's writes (a record enters and
leaves it once) over ``IN_PROGRESS_SHARDS`` partition key values.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

from payment_outbox.ports import StuckIdempotencyRecord

#: Attribute names of Powertools' DynamoDBPersistenceLayer (its defaults, which the consumers use).
KEY, STATUS, EXPIRATION, IN_PROGRESS_EXPIRATION = "id", "status", "expiration", "in_progress_expiration"
INPROGRESS = "INPROGRESS"
#: The sparse index (template.yaml, IdempotencyTable) and its partition key, present only while INPROGRESS.
IN_PROGRESS_INDEX = "InProgressByLockExpiry"
IN_PROGRESS_SHARD = "in_progress_shard"
#: Partition key values of the index. At 1,000 orders/s (2,000 records/s, each written into and out
#: of the index once) a shard takes about 250 index writes/s, well under a partition's 1,000.
IN_PROGRESS_SHARDS = 16


def in_progress_shard(key: str) -> str:
    """The index shard of a record: a stable hash of its key (the same record, the same shard)."""
    return str(zlib.crc32(key.encode()) % IN_PROGRESS_SHARDS)


class InProgressIndexingClient:
    """The DynamoDB client Powertools' persistence layer writes through, keeping the index attribute.

    A record written INPROGRESS with a lock expiry gets its shard; the update that completes it
    removes the shard in the same write; a record deleted (its handler raised) leaves the index with
    it. Every other call goes to the client unchanged.
    """

    def __init__(self, client: Any) -> None:
        self._client = client

    def put_item(self, **request: Any) -> Any:
        item = request.get("Item", {})
        if item.get(STATUS) == {"S": INPROGRESS} and IN_PROGRESS_EXPIRATION in item:
            request = {
                **request,
                "Item": {**item, IN_PROGRESS_SHARD: {"S": in_progress_shard(item[KEY]["S"])}},
            }
        return self._client.put_item(**request)

    def update_item(self, **request: Any) -> Any:
        # Powertools updates a record only to complete it (COMPLETED, with its response).
        names = {**request.get("ExpressionAttributeNames", {}), "#in_progress_shard": IN_PROGRESS_SHARD}
        request = {
            **request,
            "UpdateExpression": f"{request['UpdateExpression']} REMOVE #in_progress_shard",
            "ExpressionAttributeNames": names,
        }
        return self._client.update_item(**request)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class DynamoDbIdempotencyRecords:
    def __init__(
        self, client_factory: Callable[[], Any], table_name: str, *, page_size: int | None = None
    ) -> None:
        """``page_size``: items per query page (None: DynamoDB's 1 MB pages)."""
        self._client_factory = client_factory
        self._table = table_name
        self._page_size = page_size

    def stuck_in_progress(self, *, now_epoch_seconds: float) -> list[StuckIdempotencyRecord]:
        """Every INPROGRESS record whose lock expired before now: each shard's index range, read to
        its end (the index holds only the records in flight, so its size is theirs, not the table's)."""
        client = self._client_factory()
        found: list[StuckIdempotencyRecord] = []
        for shard in range(IN_PROGRESS_SHARDS):
            request: dict[str, Any] = {
                "TableName": self._table,
                "IndexName": IN_PROGRESS_INDEX,
                "KeyConditionExpression": "#shard = :shard AND #lock < :now_ms",
                # The index is eventually consistent: a record completed a moment ago may still be
                # listed; the status check drops any that the index already shows completed.
                "FilterExpression": "#status = :inprogress",
                "ExpressionAttributeNames": {
                    "#shard": IN_PROGRESS_SHARD,
                    "#lock": IN_PROGRESS_EXPIRATION,
                    "#status": STATUS,
                },
                "ExpressionAttributeValues": {
                    ":shard": {"S": str(shard)},
                    ":now_ms": {"N": str(int(now_epoch_seconds * 1000))},
                    ":inprogress": {"S": INPROGRESS},
                },
            }
            if self._page_size is not None:
                request["Limit"] = self._page_size
            while True:
                response = client.query(**request)
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
