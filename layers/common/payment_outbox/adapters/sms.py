"""SMS delivery: the default sender uses SNS direct-to-phone publish; deliveries are recorded in DynamoDB."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from payment_outbox.errors import SmsSendFailed
from payment_outbox.ports import SmsDelivery


class SnsSmsSender:
    def __init__(self, client_factory: Callable[[], Any]) -> None:
        self._client_factory = client_factory

    def send(self, phone: str, text: str) -> str:
        try:
            response = self._client_factory().publish(
                PhoneNumber=phone,
                Message=text,
                MessageAttributes={
                    "AWS.SNS.SMS.SMSType": {"DataType": "String", "StringValue": "Transactional"},
                },
            )
        except ClientError as exc:
            # The provider's message may quote the phone number: keep only the error code.
            code = exc.response.get("Error", {}).get("Code", "Unknown")
            raise SmsSendFailed(f"SMS provider refused the message: {code}") from None
        return str(response["MessageId"])


class DynamoDbSmsDeliveryLog:
    """One item per outbox message: ``messageId``, masked phone, template, provider message id."""

    def __init__(self, client_factory: Callable[[], Any], table_name: str) -> None:
        self._client_factory = client_factory
        self._table = table_name

    def find(self, message_id: str) -> SmsDelivery | None:
        item = (
            self._client_factory()
            .get_item(TableName=self._table, Key={"messageId": {"S": message_id}}, ConsistentRead=True)
            .get("Item")
        )
        if not item:
            return None
        return SmsDelivery(
            message_id=item["messageId"]["S"],
            masked_phone=item["maskedPhone"]["S"],
            template_id=item["templateId"]["S"],
            provider_message_id=item["providerMessageId"]["S"],
            sent_at=datetime.fromisoformat(item["sentAt"]["S"]),
        )

    def record(self, delivery: SmsDelivery) -> None:
        self._client_factory().put_item(
            TableName=self._table,
            Item={
                "messageId": {"S": delivery.message_id},
                "maskedPhone": {"S": delivery.masked_phone},
                "templateId": {"S": delivery.template_id},
                "providerMessageId": {"S": delivery.provider_message_id},
                "sentAt": {"S": delivery.sent_at.isoformat()},
            },
        )
