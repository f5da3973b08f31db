"""The SNS SMS sender never lets the provider's error text (which may quote the phone) escape."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from payment_outbox.adapters.sms import SnsSmsSender
from payment_outbox.errors import SmsSendFailed

pytestmark = pytest.mark.unit

PHONE = "+8613812345678"


class _RefusingSns:
    def publish(self, **_: Any) -> dict[str, Any]:
        raise ClientError(
            {"Error": {"Code": "InvalidParameter", "Message": f"Invalid parameter: PhoneNumber {PHONE}"}},
            "Publish",
        )


class _AcceptingSns:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def publish(self, **kwargs: Any) -> dict[str, Any]:
        self.sent.append(kwargs)
        return {"MessageId": "provider-1"}


def test_a_refused_sms_raises_without_the_phone_number() -> None:
    # Given a provider whose error message quotes the phone number
    sender = SnsSmsSender(lambda: _RefusingSns())

    # When sending fails
    with pytest.raises(SmsSendFailed) as raised:
        sender.send(PHONE, "hello")

    # Then the error names the provider's code, not the number, and chains nothing that could
    error = raised.value
    assert "InvalidParameter" in str(error)
    assert PHONE not in str(error)
    assert error.__cause__ is None
    assert error.__suppress_context__


def test_a_sent_sms_is_transactional_and_returns_the_provider_id() -> None:
    client = _AcceptingSns()
    assert SnsSmsSender(lambda: client).send(PHONE, "hello") == "provider-1"
    assert client.sent[0]["PhoneNumber"] == PHONE
    assert client.sent[0]["MessageAttributes"]["AWS.SNS.SMS.SMSType"]["StringValue"] == "Transactional"
