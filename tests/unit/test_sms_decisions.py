"""An operator's mark-delivered takes only an SMS still parked as uncertain, checked as it is written:
one that another operator's resend took after it was read is refused, unchanged and unaudited."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import boto3
import pytest

from payment_outbox.adapters.sms import DynamoDbSmsDeliveryLog
from payment_outbox.errors import SmsNotUncertain
from payment_outbox.ports import AuditEntry, SmsDelivery, SmsIntent, SmsIntentState
from payment_outbox.services.sms import SmsOperations
from tests.fakes import START, FakeClock, FakeSmsDeliveryLog, FakeSmsSender

pytestmark = pytest.mark.unit

MESSAGE_ID = "m-1"
PARKED = SmsIntent(MESSAGE_ID, SmsIntentState.UNCERTAIN, "+86138****5678", "ORDER_PAY_SUCCESS", START)


class _Audits:
    """The operations unit of work, as far as an SMS decision uses it: the audit trail."""

    def __init__(self) -> None:
        self.entries: list[AuditEntry] = []
        self.operations = self

    def record_audit(self, entry: AuditEntry) -> int:
        self.entries.append(entry)
        return len(self.entries)

    def commit(self) -> None:
        pass

    @contextmanager
    def __call__(self) -> Iterator[_Audits]:
        yield self


class _ResentRightAfterTheRead(FakeSmsDeliveryLog):
    """Another operator's resend takes the parked SMS just after this operator's decision read it."""

    def intent(self, message_id: str) -> SmsIntent | None:
        seen = super().intent(message_id)
        if seen is not None and seen.state is SmsIntentState.UNCERTAIN:
            self.intents[message_id] = replace(seen, state=SmsIntentState.SENDING)  # the other resend
        return seen


def _operations(deliveries: FakeSmsDeliveryLog, audits: _Audits) -> SmsOperations:
    return SmsOperations(audits, FakeSmsSender(), deliveries, FakeClock())  # type: ignore[arg-type]


def test_mark_delivered_records_a_parked_sms_sent_and_audits_it() -> None:
    deliveries, audits = FakeSmsDeliveryLog(), _Audits()
    deliveries.intents[MESSAGE_ID] = PARKED

    decision = _operations(deliveries, audits).mark_delivered(MESSAGE_ID, actor="ops", reason="log checked")

    assert decision.action == "marked-delivered"
    assert deliveries.find(MESSAGE_ID) is not None
    assert [e.action for e in audits.entries] == ["sms-marked-delivered"]


def test_mark_delivered_of_an_sms_a_resend_took_since_it_was_read_is_refused_and_changes_nothing() -> None:
    deliveries, audits = _ResentRightAfterTheRead(), _Audits()
    deliveries.intents[MESSAGE_ID] = PARKED

    with pytest.raises(SmsNotUncertain):
        _operations(deliveries, audits).mark_delivered(MESSAGE_ID, actor="ops", reason="log checked")

    # The resend's SENDING stands (no SENT over it), and no decision was audited
    assert deliveries.find(MESSAGE_ID) is None
    assert deliveries.intents[MESSAGE_ID].state is SmsIntentState.SENDING
    assert audits.entries == []


@pytest.fixture
def table(aws: None) -> Iterator[Any]:
    dynamodb = boto3.client("dynamodb")
    dynamodb.create_table(
        TableName="SmsDeliveries",
        KeySchema=[{"AttributeName": "messageId", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "messageId", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    yield dynamodb


def test_the_tables_conditional_sent_record_is_written_only_from_the_state_named(table: Any) -> None:
    log = DynamoDbSmsDeliveryLog(lambda: table, "SmsDeliveries")
    delivered = SmsDelivery(MESSAGE_ID, PARKED.masked_phone, PARKED.template_id, "marked", START)
    assert log.begin(replace(PARKED, state=SmsIntentState.SENDING))

    # While SENDING, a SENT record that asks for UNCERTAIN is refused and writes nothing
    assert log.record(delivered, only_from=SmsIntentState.UNCERTAIN) is False
    assert log.find(MESSAGE_ID) is None
    assert log.move(MESSAGE_ID, from_state=SmsIntentState.SENDING, to=PARKED)

    # Once parked it is written, and only once
    assert log.record(delivered, only_from=SmsIntentState.UNCERTAIN) is True
    assert log.find(MESSAGE_ID) == delivered
    assert log.record(delivered, only_from=SmsIntentState.UNCERTAIN) is False
