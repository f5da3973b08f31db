"""The message envelope: what the outbox stores, SNS carries and consumers read.

Consumers key idempotency on ``messageId`` from the body — the producer always puts it there, and it
survives a row being published twice (the SQS message id does not).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from payment_outbox.errors import InvalidEnvelope

TOPIC_POINTS = "topic.points"
TOPIC_SMS = "topic.sms"
BUSINESS_TYPE_ORDER_PAID = "ORDER_PAID"


class Envelope(BaseModel):
    model_config = ConfigDict(populate_by_name=True, frozen=True, extra="ignore")

    message_id: str = Field(alias="messageId", min_length=1, max_length=64)
    topic: str = Field(min_length=1, max_length=100)
    business_key: str = Field(alias="businessKey", max_length=64)
    business_type: str = Field(alias="businessType", max_length=32)
    occurred_at: datetime = Field(alias="occurredAt")
    payload: dict[str, Any]

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    @classmethod
    def parse(cls, body: str | bytes) -> Envelope:
        try:
            return cls.model_validate_json(body)
        except ValidationError as exc:
            # "from None": pydantic's own message quotes the input, which may hold a phone number.
            raise InvalidEnvelope(f"not a valid envelope: {_problems(exc)}") from None


class PointsPayload(BaseModel):
    model_config = ConfigDict(populate_by_name=True, frozen=True)

    user_id: int = Field(alias="userId", gt=0)
    order_id: int = Field(alias="orderId", gt=0)
    points: int = Field(ge=0)


class SmsPayload(BaseModel):
    model_config = ConfigDict(populate_by_name=True, frozen=True)

    phone: str = Field(min_length=3, max_length=16)
    template_id: str = Field(alias="templateId", min_length=1)
    params: list[str]


P = TypeVar("P", bound=BaseModel)


def parse_payload(envelope: Envelope, model: type[P]) -> P:
    try:
        return model.model_validate(envelope.payload)
    except ValidationError as exc:
        raise InvalidEnvelope(
            f"message {envelope.message_id}: payload is not a valid {model.__name__}: {_problems(exc)}"
        ) from None


def _problems(exc: ValidationError) -> str:
    """Where and why validation failed, never the offending values (they may be personal data)."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
        for error in exc.errors(include_url=False, include_input=False, include_context=False)
    )
