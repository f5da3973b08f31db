"""Order rules: the payment decision and the messages a paid order produces (points: test_money)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from decimal import Decimal

import pytest

from payment_outbox.domain.envelope import BUSINESS_TYPE_ORDER_PAID, TOPIC_POINTS, TOPIC_SMS, Envelope
from payment_outbox.domain.orders import (
    Order,
    OrderStatus,
    PaymentDecision,
    PaymentNotice,
    decide_payment,
    mark_paid,
    new_order,
)
from payment_outbox.domain.outbox import (
    LAST_ERROR_MAX,
    OutboxStatus,
    order_paid_envelopes,
    pending_message,
    truncate_error,
)
from payment_outbox.errors import AlreadyPaid, AmountMismatch, PaymentConflict
from payment_outbox.services.payments import new_message_id

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 27, 10, 0, 0)
PAID_AT = datetime(2026, 11, 27, 10, 15, 0)


def _order(amount: str = "128.99") -> Order:
    order = new_order(
        order_no="PO20261127100000000001",
        user_id=42,
        phone="+8613812345678",
        amount=Decimal(amount),
        currency="CNY",
        now=NOW,
    )
    return replace(order, id=9001)


def _notice(amount: str = "128.99", txn: str = "txn-1") -> PaymentNotice:
    return PaymentNotice("PO20261127100000000001", txn, Decimal(amount), PAID_AT, "CNY")


def _ids() -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"msg-{next(counter)}"


# --- decide_payment -----------------------------------------------------------------------------


def test_a_created_order_with_the_right_amount_is_paid() -> None:
    # Given a new order / When the provider reports the exact amount / Then it is to be paid
    assert decide_payment(_order(), _notice()) is PaymentDecision.PAY


def test_equal_amounts_in_different_notation_still_match() -> None:
    # Given an order of 128.90 / When the notice says 128.9 / Then the amounts are equal
    assert decide_payment(_order("128.90"), _notice("128.9")) is PaymentDecision.PAY


def test_the_same_transaction_reported_again_is_already_applied() -> None:
    # Given an order paid by txn-1
    paid = mark_paid(_order(), _notice(), NOW)
    # When txn-1 is reported again / Then nothing more is to be done
    assert decide_payment(paid, _notice()) is PaymentDecision.ALREADY_APPLIED


def test_a_replay_of_the_same_transaction_is_not_checked_against_the_amount() -> None:
    # Given an order paid by txn-1 / When txn-1 is replayed with any amount
    paid = mark_paid(_order(), _notice(), NOW)
    # Then it is still an idempotent replay (the first callback was already checked)
    assert decide_payment(paid, _notice("1.00")) is PaymentDecision.ALREADY_APPLIED


def test_a_paid_order_refuses_another_transaction() -> None:
    # Given an order paid by txn-1
    paid = mark_paid(_order(), _notice(), NOW)
    # When txn-2 claims to have paid it / Then it is a conflict
    with pytest.raises(AlreadyPaid) as raised:
        decide_payment(paid, _notice(txn="txn-2"))
    assert isinstance(raised.value, PaymentConflict)


@pytest.mark.parametrize("paid_amount", ["128.98", "129.00", "0.01", "1289.90"])
def test_a_different_amount_is_refused(paid_amount: str) -> None:
    # Given an order of 128.99 / When the notice reports another amount / Then it is refused
    with pytest.raises(AmountMismatch) as raised:
        decide_payment(_order(), _notice(paid_amount))
    assert isinstance(raised.value, PaymentConflict)


def test_mark_paid_records_the_transaction_and_times() -> None:
    # Given a created order / When it is marked paid
    paid = mark_paid(_order(), _notice(), NOW)
    # Then its status, transaction and times change and nothing else does
    assert paid.status is OrderStatus.PAID
    assert paid.payment_txn_id == "txn-1"
    assert paid.pay_time == PAID_AT
    assert paid.updated_at == NOW
    assert (paid.id, paid.amount, paid.user_id) == (9001, Decimal("128.99"), 42)


# --- order_paid_envelopes -----------------------------------------------------------------------


def test_a_paid_order_produces_one_points_and_one_sms_envelope() -> None:
    # Given a paid order of 128.99
    paid = mark_paid(_order(), _notice(), NOW)
    # When its messages are built
    points, sms = order_paid_envelopes(paid, now=NOW, new_id=_ids())
    # Then the payloads have exactly the documented shapes
    assert points.topic == TOPIC_POINTS == "topic.points"
    assert points.payload == {"userId": 42, "orderId": 9001, "points": 128}
    assert sms.topic == TOPIC_SMS == "topic.sms"
    assert sms.payload == {
        "phone": "+8613812345678",
        "templateId": "ORDER_PAY_SUCCESS",
        "params": ["PO20261127100000000001", "128.99"],
    }


@pytest.mark.parametrize(("amount", "shown"), [("100", "100.00"), ("0.5", "0.50"), ("7.10", "7.10")])
def test_the_sms_amount_always_has_two_decimals(amount: str, shown: str) -> None:
    # Given a paid order whose amount has fewer decimals
    paid = mark_paid(_order(amount), _notice(amount), NOW)
    # When the SMS envelope is built / Then the amount parameter is written with 2 decimals
    _, sms = order_paid_envelopes(paid, now=NOW, new_id=_ids())
    assert sms.payload["params"][1] == shown


def test_each_envelope_carries_its_identity_and_origin_in_the_body() -> None:
    # Given a paid order
    paid = mark_paid(_order(), _notice(), NOW)
    # When its messages are built and serialised as they will be published
    envelopes = order_paid_envelopes(paid, now=NOW, new_id=_ids())
    bodies = [json.loads(e.to_json()) for e in envelopes]
    # Then every body holds messageId, topic, businessKey (the order number), businessType, occurredAt
    for body, topic, message_id in zip(bodies, [TOPIC_POINTS, TOPIC_SMS], ["msg-1", "msg-2"], strict=True):
        assert set(body) == {"messageId", "topic", "businessKey", "businessType", "occurredAt", "payload"}
        assert body["messageId"] == message_id
        assert body["topic"] == topic
        assert body["businessKey"] == "PO20261127100000000001"
        assert body["businessType"] == BUSINESS_TYPE_ORDER_PAID
        assert datetime.fromisoformat(body["occurredAt"]) == NOW


def test_message_ids_are_distinct() -> None:
    # Given a paid order and the production id source / When its messages are built
    paid = mark_paid(_order(), _notice(), NOW)
    envelopes = order_paid_envelopes(paid, now=NOW, new_id=new_message_id)
    # Then each message has its own non-empty id
    ids = [e.message_id for e in envelopes]
    assert all(ids) and len(set(ids)) == len(ids)


def test_an_unsaved_order_cannot_produce_messages() -> None:
    # Given an order without a database id / When messages are built / Then it is refused
    with pytest.raises(ValueError, match="stored"):
        order_paid_envelopes(replace(_order(), id=None), now=NOW, new_id=_ids())


def test_the_envelope_survives_a_round_trip_through_its_json() -> None:
    # Given an envelope as stored in the outbox
    paid = mark_paid(_order(), _notice(), NOW)
    points, _ = order_paid_envelopes(paid, now=NOW, new_id=_ids())
    # When a consumer parses the published body / Then it reads the same envelope
    assert Envelope.parse(points.to_json()) == points


def test_a_pending_row_stores_the_envelope_exactly_as_published() -> None:
    # Given an envelope / When it becomes an outbox row
    paid = mark_paid(_order(), _notice(), NOW)
    points, _ = order_paid_envelopes(paid, now=NOW, new_id=_ids())
    row = pending_message(points, now=NOW, due_at=PAID_AT)
    # Then the row is pending, untried, due when asked, and holds the envelope JSON with its keys
    assert row.status is OutboxStatus.PENDING
    assert row.attempts == 0
    assert row.due_at == PAID_AT
    assert (row.message_id, row.topic, row.business_key, row.business_type) == (
        "msg-1",
        TOPIC_POINTS,
        "PO20261127100000000001",
        BUSINESS_TYPE_ORDER_PAID,
    )
    assert json.loads(row.content) == json.loads(points.to_json())


def test_long_errors_are_truncated_to_the_column_size() -> None:
    # Given an error longer than last_error can hold / When truncated / Then it fits, marked as cut
    cut = truncate_error("e" * 5000)
    assert len(cut) == LAST_ERROR_MAX
    assert cut.endswith("…")
    # And a short error is kept as it is
    assert truncate_error("boom") == "boom"
