"""``send_sms``: send the payment SMS for a message at most once, and record the delivery (masked phone
only); ``SmsOperations``: the operator's answer to an SMS parked as uncertain.

Whether an SMS went out is known only from the provider's answer. So the intent is recorded first
(SENDING, conditionally: one per message), the provider is asked once, and its answer is recorded
(SENT). A delivery that finds SENDING without SENT — the answer was lost, or the container died
mid-send — cannot know: by default it parks the message as UNCERTAIN (a metric, an alarm, a runbook
entry) rather than risk a second SMS; ``UncertainSms.RESEND`` prefers a duplicate to a missing SMS.
A provider that answered no sent nothing: the intent is cleared and the message retried as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from payment_outbox.domain.envelope import TOPIC_SMS, Envelope, SmsPayload, parse_payload
from payment_outbox.domain.sms import mask_phone, render
from payment_outbox.errors import (
    InvalidEnvelope,
    MessageNotFound,
    SmsDeliveryBusy,
    SmsNotUncertain,
    SmsOutcomeUnknown,
    SmsSendFailed,
)
from payment_outbox.ports import (
    AuditEntry,
    Clock,
    OperationsUnitOfWorkFactory,
    SmsDelivery,
    SmsDeliveryLog,
    SmsIntent,
    SmsIntentState,
    SmsSender,
)

logger = logging.getLogger(__name__)


class UncertainSms(StrEnum):
    """What a delivery does with an SMS whose earlier send may or may not have gone out."""

    #: Park it (UNCERTAIN) for an operator: never two SMS, possibly none until someone looks.
    PARK = "park"
    #: Send it again: never none, possibly two.
    RESEND = "resend"


class SmsOutcome(StrEnum):
    SENT = "sent"
    #: Already SENT by an earlier delivery: nothing sent now.
    DUPLICATE = "duplicate"
    #: Parked as UNCERTAIN: nothing sent now; an operator resends it or marks it delivered.
    UNCERTAIN = "uncertain"


@dataclass(frozen=True)
class SmsResult:
    message_id: str
    masked_phone: str
    provider_message_id: str
    outcome: SmsOutcome

    @property
    def sent(self) -> bool:
        """True when this delivery sent the SMS."""
        return self.outcome is SmsOutcome.SENT

    def to_dict(self) -> dict[str, object]:
        return {
            "messageId": self.message_id,
            "maskedPhone": self.masked_phone,
            "providerMessageId": self.provider_message_id,
            "sent": self.sent,
            "outcome": self.outcome.value,
        }


def send_sms(
    envelope: Envelope,
    sender: SmsSender,
    deliveries: SmsDeliveryLog,
    clock: Clock,
    *,
    uncertain: UncertainSms = UncertainSms.PARK,
    on_uncertain: Callable[[str], None] = lambda _message_id: None,
) -> SmsResult:
    """Send the message's SMS unless it was sent (or may have been); ``on_uncertain`` is told each
    message parked as UNCERTAIN."""
    if envelope.topic != TOPIC_SMS:
        raise InvalidEnvelope(f"message {envelope.message_id} has topic {envelope.topic!r}, not {TOPIC_SMS}")
    payload = parse_payload(envelope, SmsPayload)
    message_id, masked = envelope.message_id, mask_phone(payload.phone)
    text = render(payload.template_id, payload.params)
    sending = SmsIntent(message_id, SmsIntentState.SENDING, masked, payload.template_id, clock.now())

    def park() -> SmsResult:
        parked = SmsIntent(message_id, SmsIntentState.UNCERTAIN, masked, payload.template_id, clock.now())
        if deliveries.move(message_id, from_state=SmsIntentState.SENDING, to=parked):
            on_uncertain(message_id)
            logger.error(
                "SMS delivery uncertain for messageId=%s to %s: parked, not sent again (runbook: "
                "uncertain SMS)",
                message_id,
                masked,
            )
        return SmsResult(message_id, masked, "", SmsOutcome.UNCERTAIN)

    if not deliveries.begin(sending):
        # Something is recorded already: the SMS was sent, is parked, or may have been sent.
        existing = deliveries.intent(message_id)
        if existing is None:
            raise SmsDeliveryBusy(f"the SMS intent of message {message_id} changed under this delivery")
        if existing.state is SmsIntentState.SENT:
            sent = deliveries.find(message_id)
            logger.info("SMS already sent for messageId=%s to %s", message_id, masked)
            return SmsResult(
                message_id, masked, sent.provider_message_id if sent else "", SmsOutcome.DUPLICATE
            )
        if existing.state is SmsIntentState.UNCERTAIN:
            logger.info("SMS for messageId=%s is parked as uncertain; not sent", message_id)
            return SmsResult(message_id, masked, "", SmsOutcome.UNCERTAIN)
        # SENDING with no answer recorded: an earlier send may have reached the provider.
        if uncertain is UncertainSms.PARK:
            return park()
        if not deliveries.move(message_id, from_state=SmsIntentState.SENDING, to=sending):
            raise SmsDeliveryBusy(f"the SMS intent of message {message_id} changed under this delivery")
        logger.warning(
            "SMS for messageId=%s may have been sent before; sending again (resend policy)", message_id
        )
    try:
        provider_message_id = sender.send(payload.phone, text)
    except SmsSendFailed:
        deliveries.clear(message_id)  # the provider answered no: nothing went out, retry as before
        raise
    except SmsOutcomeUnknown:
        if uncertain is UncertainSms.PARK:
            return park()
        deliveries.clear(message_id)
        raise
    deliveries.record(SmsDelivery(message_id, masked, payload.template_id, provider_message_id, clock.now()))
    logger.info("SMS sent for messageId=%s to %s", message_id, masked)
    return SmsResult(message_id, masked, provider_message_id, SmsOutcome.SENT)


@dataclass(frozen=True)
class SmsDecision:
    message_id: str
    #: "resent" or "marked-delivered".
    action: str
    provider_message_id: str
    audit_id: int


class SmsOperations:
    """An operator's answer to an SMS parked as UNCERTAIN, audited: send it again, or record that it
    was delivered (the provider's own delivery logs say so)."""

    def __init__(
        self,
        uow: OperationsUnitOfWorkFactory,
        sender: SmsSender,
        deliveries: SmsDeliveryLog,
        clock: Clock,
    ) -> None:
        self._uow = uow
        self._sender = sender
        self._deliveries = deliveries
        self._clock = clock

    def resend(self, message_id: str, *, actor: str, reason: str) -> SmsDecision:
        parked = self._parked(message_id)
        with self._uow() as tx:
            message = tx.outbox.get(message_id)
        if message is None or message.topic != TOPIC_SMS:
            raise MessageNotFound(f"no SMS message {message_id}")
        envelope = Envelope.parse(message.content)
        payload = parse_payload(envelope, SmsPayload)
        sending = SmsIntent(
            message_id, SmsIntentState.SENDING, parked.masked_phone, parked.template_id, self._clock.now()
        )
        if not self._deliveries.move(message_id, from_state=SmsIntentState.UNCERTAIN, to=sending):
            raise SmsNotUncertain(f"the SMS of message {message_id} is no longer parked as uncertain")
        try:
            provider_message_id = self._sender.send(
                payload.phone, render(payload.template_id, payload.params)
            )
        except SmsSendFailed:
            self._deliveries.move(message_id, from_state=SmsIntentState.SENDING, to=parked)
            raise
        except SmsOutcomeUnknown:
            # Still unknown: parked again, for the operator to look at once more.
            self._deliveries.move(message_id, from_state=SmsIntentState.SENDING, to=parked)
            raise
        self._deliveries.record(
            SmsDelivery(
                message_id, parked.masked_phone, parked.template_id, provider_message_id, self._clock.now()
            )
        )
        return self._audited(message_id, "resent", provider_message_id, actor=actor, reason=reason)

    def mark_delivered(self, message_id: str, *, actor: str, reason: str) -> SmsDecision:
        parked = self._parked(message_id)
        marker = "marked-delivered-by-operator"
        # Only while still parked: another operator's resend may have taken it since it was read.
        if not self._deliveries.record(
            SmsDelivery(message_id, parked.masked_phone, parked.template_id, marker, self._clock.now()),
            only_from=SmsIntentState.UNCERTAIN,
        ):
            raise SmsNotUncertain(f"the SMS of message {message_id} is no longer parked as uncertain")
        return self._audited(message_id, "marked-delivered", marker, actor=actor, reason=reason)

    def _parked(self, message_id: str) -> SmsIntent:
        intent = self._deliveries.intent(message_id)
        if intent is None:
            raise MessageNotFound(f"no SMS delivery recorded for message {message_id}")
        if intent.state is not SmsIntentState.UNCERTAIN:
            raise SmsNotUncertain(f"the SMS of message {message_id} is {intent.state.value}, not UNCERTAIN")
        return intent

    def _audited(
        self, message_id: str, action: str, provider_message_id: str, *, actor: str, reason: str
    ) -> SmsDecision:
        with self._uow() as tx:
            audit_id = tx.operations.record_audit(
                AuditEntry(
                    actor=actor,
                    action=f"sms-{action}",
                    filters={"messageId": message_id},
                    affected_count=1,
                    reason=reason,
                    created_at=self._clock.now(),
                )
            )
            tx.commit()
        logger.info("uncertain SMS of messageId=%s %s by %s", message_id, action, actor)
        return SmsDecision(message_id, action, provider_message_id, audit_id)
