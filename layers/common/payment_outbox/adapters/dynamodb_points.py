"""Points ledger on DynamoDB: a ledger entry per message and a balance per user, written atomically.

Layout (one table, ``pk``/``sk``): balance ``USER#<id>`` / ``BALANCE``; ledger ``USER#<id>`` /
``CREDIT#<messageId>``. The ledger entry is conditional on not existing, so a credit applies once
even if the idempotency layer is bypassed or its record has expired.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from payment_outbox.ports import PointsCredit


class DynamoDbPointsLedger:
    def __init__(self, client_factory: Callable[[], Any], table_name: str) -> None:
        self._client_factory = client_factory
        self._table = table_name

    def credit(self, credit: PointsCredit) -> bool:
        user_key = {"S": f"USER#{credit.user_id}"}
        try:
            self._client_factory().transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": {
                                "pk": user_key,
                                "sk": {"S": f"CREDIT#{credit.message_id}"},
                                "messageId": {"S": credit.message_id},
                                "orderId": {"N": str(credit.order_id)},
                                "points": {"N": str(credit.points)},
                                "creditedAt": {"S": credit.credited_at.isoformat()},
                            },
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": {"pk": user_key, "sk": {"S": "BALANCE"}},
                            "UpdateExpression": "ADD balance :points SET updatedAt = :at",
                            "ExpressionAttributeValues": {
                                ":points": {"N": str(credit.points)},
                                ":at": {"S": credit.credited_at.isoformat()},
                            },
                        }
                    },
                ]
            )
        except ClientError as exc:
            if _ledger_entry_exists(exc):
                return False
            raise
        return True

    def balance(self, user_id: int) -> int:
        item = (
            self._client_factory()
            .get_item(
                TableName=self._table,
                Key={"pk": {"S": f"USER#{user_id}"}, "sk": {"S": "BALANCE"}},
                ConsistentRead=True,
            )
            .get("Item")
        )
        return int(item["balance"]["N"]) if item else 0

    def entries_for_order(self, user_id: int, order_id: int) -> list[dict[str, Any]]:
        """Ledger entries of one order (for tracing what a customer received)."""
        response = self._client_factory().query(
            TableName=self._table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :credit)",
            FilterExpression="orderId = :order",
            ExpressionAttributeValues={
                ":pk": {"S": f"USER#{user_id}"},
                ":credit": {"S": "CREDIT#"},
                ":order": {"N": str(order_id)},
            },
            ConsistentRead=True,
        )
        return [
            {
                "messageId": i["messageId"]["S"],
                "points": int(i["points"]["N"]),
                "creditedAt": i["creditedAt"]["S"],
            }
            for i in response.get("Items", [])
        ]


def _ledger_entry_exists(exc: ClientError) -> bool:
    if exc.response.get("Error", {}).get("Code") != "TransactionCanceledException":
        return False
    reasons = exc.response.get("CancellationReasons", [])
    # The Put is the first item: only its failed condition means "already credited".
    return bool(reasons) and reasons[0].get("Code") == "ConditionalCheckFailed"
