"""SMS delivery: the default sender uses SNS direct-to-phone publish; deliveries are recorded in DynamoDB,
the intent (SENDING) before the provider is asked, the outcome (SENT) after it answers."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
)

from payment_outbox.errors import SmsOutcomeUnknown, SmsSendFailed
from payment_outbox.ports import SmsDelivery, SmsIntent, SmsIntentState


class SnsSmsSender:
    """One attempt per SMS (the client's budget, ``payment_outbox.timeouts.SMS_SEND``): whether the
    provider took it is known only from its answer."""

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
            # The provider answered no. Its message may quote the phone number: keep only the code.
            code = exc.response.get("Error", {}).get("Code", "Unknown")
            raise SmsSendFailed(f"SMS provider refused the message: {code}") from None
        except (ConnectTimeoutError, EndpointConnectionError) as exc:
            # No connection was made: the request never left.
            raise SmsSendFailed(f"SMS provider not reached: {type(exc).__name__}") from None
        except BotoCoreError as exc:
            # The request left and its answer did not come back (read timeout, connection dropped).
            raise SmsOutcomeUnknown(f"SMS provider did not answer: {type(exc).__name__}") from None
        return str(response["MessageId"])


class DynamoDbSmsDeliveryLog:
    """One item per outbox message: ``messageId``, ``state`` (SENDING, UNCERTAIN or SENT; an item
    without one is SENT, as recorded before intents were), masked phone, template, and, once SENT,
    the provider's message id and the time."""

    def __init__(self, client_factory: Callable[[], Any], table_name: str) -> None:
        self._client_factory = client_factory
        self._table = table_name

    def _item(self, message_id: str) -> dict[str, Any] | None:
        item: dict[str, Any] | None = (
            self._client_factory()
            .get_item(TableName=self._table, Key={"messageId": {"S": message_id}}, ConsistentRead=True)
            .get("Item")
        )
        return item

    def find(self, message_id: str) -> SmsDelivery | None:
        item = self._item(message_id)
        if not item or _state(item) is not SmsIntentState.SENT:
            return None
        return SmsDelivery(
            message_id=item["messageId"]["S"],
            masked_phone=item["maskedPhone"]["S"],
            template_id=item["templateId"]["S"],
            provider_message_id=item["providerMessageId"]["S"],
            sent_at=datetime.fromisoformat(item["sentAt"]["S"]),
        )

    def intent(self, message_id: str) -> SmsIntent | None:
        item = self._item(message_id)
        if not item:
            return None
        since = item["since"] if "since" in item else item["sentAt"]
        return SmsIntent(
            message_id=item["messageId"]["S"],
            state=_state(item),
            masked_phone=item["maskedPhone"]["S"],
            template_id=item["templateId"]["S"],
            since=datetime.fromisoformat(since["S"]),
        )

    def begin(self, intent: SmsIntent) -> bool:
        return self._put(_intent_item(intent), "attribute_not_exists(messageId)", {})

    def move(self, message_id: str, *, from_state: SmsIntentState, to: SmsIntent) -> bool:
        return self._put_while(_intent_item(to), from_state)

    def clear(self, message_id: str) -> None:
        client = self._client_factory()
        # Not SENDING any more (or never was): nothing of ours to clear.
        with contextlib.suppress(client.exceptions.ConditionalCheckFailedException):
            client.delete_item(
                TableName=self._table,
                Key={"messageId": {"S": message_id}},
                ConditionExpression="#state = :sending",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={":sending": {"S": SmsIntentState.SENDING.value}},
            )

    def record(self, delivery: SmsDelivery, *, only_from: SmsIntentState | None = None) -> bool:
        item = {
            "messageId": {"S": delivery.message_id},
            "state": {"S": SmsIntentState.SENT.value},
            "maskedPhone": {"S": delivery.masked_phone},
            "templateId": {"S": delivery.template_id},
            "providerMessageId": {"S": delivery.provider_message_id},
            "sentAt": {"S": delivery.sent_at.isoformat()},
        }
        if only_from is not None:
            return self._put_while(item, only_from)
        self._client_factory().put_item(TableName=self._table, Item=item)
        return True

    def _put_while(self, item: dict[str, Any], state: SmsIntentState) -> bool:
        """Replace the message's item only while it is in ``state``."""
        return self._put(item, "#state = :from", {":from": {"S": state.value}})

    def _put(self, item: dict[str, Any], condition: str, values: dict[str, Any]) -> bool:
        client = self._client_factory()
        options: dict[str, Any] = {"ConditionExpression": condition}
        if values:
            options["ExpressionAttributeNames"] = {"#state": "state"}
            options["ExpressionAttributeValues"] = values
        try:
            client.put_item(TableName=self._table, Item=item, **options)
        except client.exceptions.ConditionalCheckFailedException:
            return False
        return True


def _state(item: dict[str, Any]) -> SmsIntentState:
    return SmsIntentState(item.get("state", {}).get("S", SmsIntentState.SENT.value))


def _intent_item(intent: SmsIntent) -> dict[str, Any]:
    return {
        "messageId": {"S": intent.message_id},
        "state": {"S": intent.state.value},
        "maskedPhone": {"S": intent.masked_phone},
        "templateId": {"S": intent.template_id},
        "since": {"S": intent.since.isoformat()},
    }
