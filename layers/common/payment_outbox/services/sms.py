"""``send_sms``: send the payment SMS for a message and record the delivery (masked phone only)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from payment_outbox.domain.envelope import TOPIC_SMS, Envelope, SmsPayload, parse_payload
from payment_outbox.domain.sms import mask_phone, render
from payment_outbox.errors import InvalidEnvelope
from payment_outbox.ports import Clock, SmsDelivery, SmsDeliveryLog, SmsSender

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SmsResult:
    message_id: str
    masked_phone: str
    provider_message_id: str
    #: False when a delivery for this message was already recorded (a duplicate delivery).
    sent: bool

    def to_dict(self) -> dict[str, object]:
        return {
            "messageId": self.message_id,
            "maskedPhone": self.masked_phone,
            "providerMessageId": self.provider_message_id,
            "sent": self.sent,
        }


def send_sms(envelope: Envelope, sender: SmsSender, deliveries: SmsDeliveryLog, clock: Clock) -> SmsResult:
    if envelope.topic != TOPIC_SMS:
        raise InvalidEnvelope(f"message {envelope.message_id} has topic {envelope.topic!r}, not {TOPIC_SMS}")
    payload = parse_payload(envelope, SmsPayload)
    masked = mask_phone(payload.phone)
    # The delivery record guards against a second SMS even after the idempotency record has expired.
    existing = deliveries.find(envelope.message_id)
    if existing is not None:
        logger.info("SMS already sent for messageId=%s to %s", envelope.message_id, masked)
        return SmsResult(envelope.message_id, existing.masked_phone, existing.provider_message_id, sent=False)
    text = render(payload.template_id, payload.params)
    provider_message_id = sender.send(payload.phone, text)
    deliveries.record(
        SmsDelivery(
            message_id=envelope.message_id,
            masked_phone=masked,
            template_id=payload.template_id,
            provider_message_id=provider_message_id,
            sent_at=clock.now(),
        )
    )
    logger.info("SMS sent for messageId=%s to %s", envelope.message_id, masked)
    return SmsResult(envelope.message_id, masked, provider_message_id, sent=True)
