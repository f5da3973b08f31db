"""Stuck INPROGRESS idempotency records found through the sparse in-progress index (moto, the table as
the template provisions it), whatever the table's size: more records than the old scan ever read,
more stuck ones than a query page holds."""

from __future__ import annotations

import time
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig

from payment_outbox.adapters.idempotency_records import IN_PROGRESS_INDEX, DynamoDbIdempotencyRecords
from payment_outbox.adapters.idempotent_record_handler import indexed_persistence_layer
from tests.support import LocalSystem

pytestmark = pytest.mark.integration

#: More than the 5,000 items the scan-based detector read at most.
COMPLETED = 5_100


def _layer(system: LocalSystem, function_name: str) -> Any:
    layer = indexed_persistence_layer(system.resources.refs["IdempotencyTable"], boto3.client("dynamodb"))
    layer.configure(IdempotencyConfig(event_key_jmespath="messageId"), function_name=function_name)
    return layer


def _fill_with_completed_records(table: str, count: int) -> None:
    client = boto3.client("dynamodb")
    expires = str(int(time.time()) + 86_400)
    for start in range(0, count, 25):
        client.batch_write_item(
            RequestItems={
                table: [
                    {
                        "PutRequest": {
                            "Item": {
                                "id": {"S": f"points#done-{i}"},
                                "status": {"S": "COMPLETED"},
                                "expiration": {"N": expires},
                                "in_progress_expiration": {"N": "1"},
                                "data": {"S": "{}"},
                            }
                        }
                    }
                    for i in range(start, min(start + 25, count))
                ]
            }
        )


def test_every_stuck_record_is_found_past_the_first_five_thousand_items_and_across_pages(
    system: LocalSystem,
) -> None:
    # Given a table already holding more completed records than the old scan read
    table = system.resources.refs["IdempotencyTable"]
    _fill_with_completed_records(table, COMPLETED)
    # And, written after them by Powertools through the consumers' persistence: 23 records whose
    # invocation died (lock ran out), 5 still within their lock, and 5 that completed
    points = _layer(system, "points")
    stuck = {f"died-{i}" for i in range(23)}
    for message_id in stuck:
        points.save_inprogress({"messageId": message_id}, remaining_time_in_millis=-60_000)
    for i in range(5):
        points.save_inprogress({"messageId": f"running-{i}"}, remaining_time_in_millis=120_000)
        points.save_inprogress({"messageId": f"done-late-{i}"}, remaining_time_in_millis=-60_000)
        points.save_success({"messageId": f"done-late-{i}"}, {"credited": True})

    # When the stuck records are looked for, five items to a query page
    found = DynamoDbIdempotencyRecords(
        lambda: boto3.client("dynamodb"), table, page_size=5
    ).stuck_in_progress(now_epoch_seconds=time.time())

    # Then every stuck record is found, once, and nothing else
    assert len(found) == len(stuck)
    assert {r.key for r in found} == {points._get_hashed_idempotency_key({"messageId": m}) for m in stuck}
    assert {r.status for r in found} == {"INPROGRESS"}
    assert all(
        r.in_progress_expiration is not None and r.in_progress_expiration < time.time() * 1000 for r in found
    )


def test_the_index_holds_only_records_in_flight(system: LocalSystem) -> None:
    # Given records written through the consumers' persistence: one in flight, one completed, one
    # whose handler raised (deleted)
    table = system.resources.refs["IdempotencyTable"]
    sms = _layer(system, "sms")
    sms.save_inprogress({"messageId": "in-flight"}, remaining_time_in_millis=60_000)
    sms.save_inprogress({"messageId": "completed"}, remaining_time_in_millis=60_000)
    sms.save_success({"messageId": "completed"}, {"sent": True})
    sms.save_inprogress({"messageId": "raised"}, remaining_time_in_millis=60_000)
    sms.delete_record({"messageId": "raised"}, RuntimeError("handler failed"))

    # When the index is read whole
    items = boto3.client("dynamodb").scan(TableName=table, IndexName=IN_PROGRESS_INDEX)["Items"]

    # Then it holds the record in flight alone
    assert [i["id"]["S"] for i in items] == [sms._get_hashed_idempotency_key({"messageId": "in-flight"})]
