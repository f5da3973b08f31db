"""The in-progress index attribute the consumers keep on their idempotency records (a sparse GSI)."""

from __future__ import annotations

from typing import Any

import pytest

from payment_outbox.adapters.idempotency_records import (
    IN_PROGRESS_SHARD,
    IN_PROGRESS_SHARDS,
    InProgressIndexingClient,
    in_progress_shard,
)

pytestmark = pytest.mark.unit


class RecordingClient:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def put_item(self, **request: Any) -> dict[str, Any]:
        self.calls.append(("put_item", request))
        return {}

    def update_item(self, **request: Any) -> dict[str, Any]:
        self.calls.append(("update_item", request))
        return {}

    def get_item(self, **request: Any) -> dict[str, Any]:
        self.calls.append(("get_item", request))
        return {"Item": {"id": {"S": "x"}}}


def _item(status: str, *, lock: bool = True) -> dict[str, Any]:
    item: dict[str, Any] = {"id": {"S": "points#abc"}, "status": {"S": status}, "expiration": {"N": "100"}}
    if lock:
        item["in_progress_expiration"] = {"N": "100000"}
    return item


def test_a_record_written_in_progress_enters_the_index_with_its_shard() -> None:
    # Given the client Powertools writes through / When it puts an INPROGRESS record with a lock
    inner = RecordingClient()
    InProgressIndexingClient(inner).put_item(TableName="t", Item=_item("INPROGRESS"), ConditionExpression="c")
    # Then the record carries its shard, the rest of the request unchanged
    [(_, request)] = inner.calls
    assert request["Item"][IN_PROGRESS_SHARD] == {"S": in_progress_shard("points#abc")}
    assert request["ConditionExpression"] == "c"
    assert {k: v for k, v in request["Item"].items() if k != IN_PROGRESS_SHARD} == _item("INPROGRESS")


@pytest.mark.parametrize(
    "item", [_item("COMPLETED"), _item("INPROGRESS", lock=False)], ids=["completed", "no-lock"]
)
def test_a_record_not_in_progress_with_a_lock_stays_out_of_the_index(item: dict[str, Any]) -> None:
    inner = RecordingClient()
    InProgressIndexingClient(inner).put_item(TableName="t", Item=item)
    assert inner.calls == [("put_item", {"TableName": "t", "Item": item})]


def test_completing_a_record_takes_it_out_of_the_index_in_the_same_write() -> None:
    # Given Powertools' update that completes a record
    inner = RecordingClient()
    InProgressIndexingClient(inner).update_item(
        TableName="t",
        Key={"id": {"S": "points#abc"}},
        UpdateExpression="SET #status = :status",
        ExpressionAttributeNames={"#status": "status"},
        ExpressionAttributeValues={":status": {"S": "COMPLETED"}},
    )
    # Then the same update removes the shard attribute
    [(_, request)] = inner.calls
    assert request["UpdateExpression"] == "SET #status = :status REMOVE #in_progress_shard"
    assert request["ExpressionAttributeNames"] == {
        "#status": "status",
        "#in_progress_shard": IN_PROGRESS_SHARD,
    }


def test_other_calls_go_to_the_client_unchanged() -> None:
    inner = RecordingClient()
    assert InProgressIndexingClient(inner).get_item(TableName="t", Key={}) == {"Item": {"id": {"S": "x"}}}


def test_shards_are_stable_and_spread_over_every_value() -> None:
    keys = [f"points#{i}" for i in range(2000)]
    assert [in_progress_shard(k) for k in keys] == [in_progress_shard(k) for k in keys]
    assert {in_progress_shard(k) for k in keys} == {str(s) for s in range(IN_PROGRESS_SHARDS)}
