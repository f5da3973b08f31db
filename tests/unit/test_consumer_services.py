"""credit_points and send_sms with in-memory ports: topic and payload checks, duplicates, masking."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest

from payment_outbox.domain.envelope import BUSINESS_TYPE_ORDER_PAID, TOPIC_POINTS, TOPIC_SMS, Envelope
from payment_outbox.domain.sms import TEMPLATE_ORDER_PAY_SUCCESS
from payment_outbox.errors import InvalidEnvelope, SmsOutcomeUnknown, SmsSendFailed
from payment_outbox.ports import SmsDelivery, SmsIntent, SmsIntentState
from payment_outbox.services.points import credit_points
from payment_outbox.services.sms import SmsOutcome, UncertainSms, send_sms
from tests.fakes import START, FakeClock, FakePointsLedger, FakeSmsDeliveryLog, FakeSmsSender

pytestmark = pytest.mark.unit

PHONE = "+8613812345678"
MASKED = "+86*******5678"


def _envelope(message_id: str, topic: str, payload: dict[str, Any]) -> Envelope:
    """An envelope as a consumer receives it: parsed from the published JSON body."""
    body = {
        "messageId": message_id,
        "topic": topic,
        "businessKey": "PO20261127100000000001",
        "businessType": BUSINESS_TYPE_ORDER_PAID,
        "occurredAt": "2026-11-27T10:15:00",
        "payload": payload,
    }
    return Envelope.parse(json.dumps(body))


def _points(message_id: str = "pts-1", **payload: Any) -> Envelope:
    return _envelope(message_id, TOPIC_POINTS, {"userId": 42, "orderId": 9001, "points": 128, **payload})


def _sms(message_id: str = "sms-1", **payload: Any) -> Envelope:
    body = {"phone": PHONE, "templateId": TEMPLATE_ORDER_PAY_SUCCESS, "params": ["PO1", "128.99"], **payload}
    return _envelope(message_id, TOPIC_SMS, body)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ledger() -> FakePointsLedger:
    return FakePointsLedger()


@pytest.fixture
def sender() -> FakeSmsSender:
    return FakeSmsSender()


@pytest.fixture
def deliveries() -> FakeSmsDeliveryLog:
    return FakeSmsDeliveryLog()


# --- credit_points ------------------------------------------------------------------------------


def test_a_points_message_credits_the_user(ledger: FakePointsLedger, clock: FakeClock) -> None:
    # Given a points message for user 42 / When it is consumed
    result = credit_points(_points(), ledger, clock)
    # Then the user's balance grows by its points and the ledger entry names the message and order
    assert ledger.balance(42) == 128
    entry = ledger.entries["pts-1"]
    assert (entry.user_id, entry.order_id, entry.points, entry.credited_at) == (42, 9001, 128, START)
    assert result.credited is True
    assert result.to_dict() == {"messageId": "pts-1", "userId": 42, "points": 128, "credited": True}


def test_a_duplicate_points_message_is_not_credited_twice(ledger: FakePointsLedger, clock: FakeClock) -> None:
    # Given a message already credited
    credit_points(_points(), ledger, clock)
    # When the same message is delivered again (even re-published under a new SQS id)
    result = credit_points(_points(), ledger, clock)
    # Then it reports credited=False and the balance is unchanged
    assert result.credited is False
    assert ledger.balance(42) == 128


def test_two_messages_for_the_same_user_both_count(ledger: FakePointsLedger, clock: FakeClock) -> None:
    credit_points(_points("pts-1"), ledger, clock)
    credit_points(_points("pts-2", orderId=9002, points=10), ledger, clock)
    assert ledger.balance(42) == 138


@pytest.mark.parametrize("topic", [TOPIC_SMS, "topic.unknown", "TOPIC.POINTS"])
def test_a_message_of_another_topic_is_refused_by_the_points_consumer(
    topic: str, ledger: FakePointsLedger, clock: FakeClock
) -> None:
    # Given a message with a points-shaped payload but another topic
    envelope = _envelope("x-1", topic, {"userId": 42, "orderId": 9001, "points": 128})
    # When consumed / Then it is an invalid envelope and nothing is credited
    with pytest.raises(InvalidEnvelope, match="topic"):
        credit_points(envelope, ledger, clock)
    assert ledger.entries == {}


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"userId": 42, "orderId": 9001},
        {"userId": "abc", "orderId": 9001, "points": 1},
        {"userId": 0, "orderId": 9001, "points": 1},
        {"userId": 42, "orderId": -1, "points": 1},
        {"userId": 42, "orderId": 9001, "points": -5},
        {"userId": 42, "orderId": 9001, "points": "lots"},
    ],
)
def test_a_bad_points_payload_is_refused(
    payload: dict[str, Any], ledger: FakePointsLedger, clock: FakeClock
) -> None:
    # Given a points message whose payload breaks the points shape
    envelope = _envelope("pts-bad", TOPIC_POINTS, payload)
    # When consumed / Then it is an invalid envelope naming the message, and nothing is credited
    with pytest.raises(InvalidEnvelope, match="pts-bad"):
        credit_points(envelope, ledger, clock)
    assert ledger.entries == {}


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "[]",
        json.dumps({"topic": TOPIC_POINTS, "payload": {}}),  # no messageId: the seed's bug
        json.dumps(
            {
                "messageId": "",
                "topic": TOPIC_POINTS,
                "businessKey": "k",
                "businessType": "t",
                "occurredAt": "2026-11-27T10:15:00",
                "payload": {},
            }
        ),
    ],
)
def test_a_body_that_is_not_an_envelope_is_refused(body: str) -> None:
    with pytest.raises(InvalidEnvelope):
        Envelope.parse(body)


# --- send_sms -----------------------------------------------------------------------------------


def test_an_sms_message_is_sent_and_recorded_with_a_masked_phone(
    sender: FakeSmsSender, deliveries: FakeSmsDeliveryLog, clock: FakeClock
) -> None:
    # Given an SMS message / When consumed
    result = send_sms(_sms(), sender, deliveries, clock)
    # Then the provider got the full number and the rendered text
    assert len(sender.sent) == 1
    phone, text = sender.sent[0]
    assert phone == PHONE
    assert "PO1" in text and "128.99" in text
    # And the delivery record holds only the masked number
    record = deliveries.records["sms-1"]
    assert record == SmsDelivery(
        message_id="sms-1",
        masked_phone=MASKED,
        template_id=TEMPLATE_ORDER_PAY_SUCCESS,
        provider_message_id="sms-1",
        sent_at=START,
    )
    assert PHONE not in repr(record)
    # And the result carries nothing more than the masked number either
    assert result.sent is True
    assert result.masked_phone == MASKED
    assert PHONE not in json.dumps(result.to_dict())


def test_an_sms_already_delivered_is_not_sent_again(
    sender: FakeSmsSender, deliveries: FakeSmsDeliveryLog, clock: FakeClock
) -> None:
    # Given a delivery already recorded for this message
    earlier = SmsDelivery("sms-1", MASKED, TEMPLATE_ORDER_PAY_SUCCESS, "provider-77", datetime(2026, 1, 1))
    deliveries.record(earlier)
    # When the message is delivered again
    result = send_sms(_sms(), sender, deliveries, clock)
    # Then no SMS is sent, the record is unchanged, and the earlier provider id is reported
    assert sender.sent == []
    assert deliveries.records["sms-1"] == earlier
    assert result.sent is False
    assert result.provider_message_id == "provider-77"


def test_a_second_delivery_of_a_sent_sms_sends_nothing(
    sender: FakeSmsSender, deliveries: FakeSmsDeliveryLog, clock: FakeClock
) -> None:
    send_sms(_sms(), sender, deliveries, clock)
    send_sms(_sms(), sender, deliveries, clock)
    assert len(sender.sent) == 1


@pytest.mark.parametrize("topic", [TOPIC_POINTS, "topic.other"])
def test_a_message_of_another_topic_is_refused_by_the_sms_consumer(
    topic: str, sender: FakeSmsSender, deliveries: FakeSmsDeliveryLog, clock: FakeClock
) -> None:
    envelope = _envelope(
        "x-1", topic, {"phone": PHONE, "templateId": TEMPLATE_ORDER_PAY_SUCCESS, "params": ["PO1", "1.00"]}
    )
    with pytest.raises(InvalidEnvelope, match="topic"):
        send_sms(envelope, sender, deliveries, clock)
    assert sender.sent == [] and deliveries.records == {}


@pytest.mark.parametrize(
    "payload",
    [
        {"phone": None},
        {"phone": "12"},
        {"phone": "+86138123456789012"},
        {"templateId": ""},
        {"params": "PO1,128.99"},
        {"templateId": "NO_SUCH_TEMPLATE"},
        {"params": ["PO1"]},
    ],
)
def test_a_bad_sms_payload_is_refused_and_nothing_is_sent(
    payload: dict[str, Any], sender: FakeSmsSender, deliveries: FakeSmsDeliveryLog, clock: FakeClock
) -> None:
    # Given an SMS message whose payload is wrong or names an unknown template
    # When consumed / Then it is an invalid envelope and no SMS goes out
    with pytest.raises(InvalidEnvelope):
        send_sms(_sms("sms-bad", **payload), sender, deliveries, clock)
    assert sender.sent == [] and deliveries.records == {}


class RefusingSender:
    """A provider that answers no: nothing is sent."""

    def __init__(self) -> None:
        self.asked = 0

    def send(self, phone: str, text: str) -> str:
        self.asked += 1
        raise SmsSendFailed("SMS provider refused the message: Throttling")


class SilentSender:
    """A provider that takes the SMS (it goes out) and whose answer never comes back."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, phone: str, text: str) -> str:
        self.sent.append(phone)
        raise SmsOutcomeUnknown("SMS provider did not answer: ReadTimeoutError")


def test_a_provider_refusal_clears_the_intent_and_the_retry_sends_once(
    sender: FakeSmsSender, deliveries: FakeSmsDeliveryLog, clock: FakeClock
) -> None:
    # Given an SMS provider that answers no
    # When the message is consumed / Then the refusal surfaces (so SQS redelivers) and nothing is recorded
    with pytest.raises(SmsSendFailed):
        send_sms(_sms(), RefusingSender(), deliveries, clock)
    assert deliveries.records == {} and deliveries.intents == {}
    # When it is delivered again to a provider that accepts / Then it is sent, once
    result = send_sms(_sms(), sender, deliveries, clock)
    assert result.outcome is SmsOutcome.SENT and len(sender.sent) == 1


def test_a_lost_answer_parks_the_sms_as_uncertain_and_no_later_delivery_sends_it(
    sender: FakeSmsSender, deliveries: FakeSmsDeliveryLog, clock: FakeClock
) -> None:
    # Given a provider that sends the SMS and loses its answer
    silent, parked = SilentSender(), []
    # When the message is consumed
    result = send_sms(_sms(), silent, deliveries, clock, on_uncertain=parked.append)
    # Then the SMS is parked as uncertain (reported once), not failed for a blind retry
    assert result.outcome is SmsOutcome.UNCERTAIN and parked == ["sms-1"]
    assert deliveries.intents["sms-1"].state is SmsIntentState.UNCERTAIN
    assert deliveries.intents["sms-1"].masked_phone == MASKED
    # When it is delivered again, to a provider that would answer
    again = send_sms(_sms(), sender, deliveries, clock, on_uncertain=parked.append)
    # Then nothing more is sent: one SMS in all
    assert again.outcome is SmsOutcome.UNCERTAIN and sender.sent == [] and len(silent.sent) == 1
    assert parked == ["sms-1"]


def test_a_sending_intent_without_its_answer_is_parked_not_sent(
    sender: FakeSmsSender, deliveries: FakeSmsDeliveryLog, clock: FakeClock
) -> None:
    # Given an earlier delivery that recorded its intent and died mid-send (no answer recorded)
    deliveries.begin(SmsIntent("sms-1", SmsIntentState.SENDING, MASKED, TEMPLATE_ORDER_PAY_SUCCESS, START))
    parked: list[str] = []
    # When the message is delivered again
    result = send_sms(_sms(), sender, deliveries, clock, on_uncertain=parked.append)
    # Then it is parked, and no SMS is sent
    assert result.outcome is SmsOutcome.UNCERTAIN and parked == ["sms-1"] and sender.sent == []


def test_the_resend_policy_sends_again_after_an_unanswered_send(
    sender: FakeSmsSender, deliveries: FakeSmsDeliveryLog, clock: FakeClock
) -> None:
    # Given the resend policy and a send whose answer was lost
    silent = SilentSender()
    # When consumed / Then the outcome surfaces for a retry and the intent is cleared
    with pytest.raises(SmsOutcomeUnknown):
        send_sms(_sms(), silent, deliveries, clock, uncertain=UncertainSms.RESEND)
    assert deliveries.intents == {}
    # When redelivered / Then it is sent again (a possible duplicate, by choice) and recorded SENT
    result = send_sms(_sms(), sender, deliveries, clock, uncertain=UncertainSms.RESEND)
    assert result.outcome is SmsOutcome.SENT and deliveries.records["sms-1"].provider_message_id == "sms-1"


def test_the_resend_policy_takes_over_an_intent_left_by_a_dead_delivery(
    sender: FakeSmsSender, deliveries: FakeSmsDeliveryLog, clock: FakeClock
) -> None:
    deliveries.begin(SmsIntent("sms-1", SmsIntentState.SENDING, MASKED, TEMPLATE_ORDER_PAY_SUCCESS, START))
    result = send_sms(_sms(), sender, deliveries, clock, uncertain=UncertainSms.RESEND)
    assert result.outcome is SmsOutcome.SENT and len(sender.sent) == 1


def test_an_unexpected_sender_error_leaves_the_intent_so_the_next_delivery_parks_it(
    sender: FakeSmsSender, deliveries: FakeSmsDeliveryLog, clock: FakeClock
) -> None:
    # Given a sender failing in a way that says nothing about the SMS
    class BrokenSender:
        def send(self, phone: str, text: str) -> str:
            raise RuntimeError("bug")

    # When consumed / Then the error surfaces, and the intent stays: it may have gone out
    with pytest.raises(RuntimeError):
        send_sms(_sms(), BrokenSender(), deliveries, clock)
    assert deliveries.intents["sms-1"].state is SmsIntentState.SENDING
    # And the redelivery parks it rather than sending
    assert send_sms(_sms(), sender, deliveries, clock).outcome is SmsOutcome.UNCERTAIN
    assert sender.sent == []
