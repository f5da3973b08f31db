"""The SMS client as built for the consumer, against a real HTTP provider that takes the request and
never answers (or answers after the client stopped waiting): one request, never a second, and the
outcome reported as unknown — never retried by botocore behind the consumer's back."""

from __future__ import annotations

import contextlib
import http.server
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from payment_outbox import timeouts
from payment_outbox.adapters.aws import AwsClients
from payment_outbox.composition.consumers import sms_sender
from payment_outbox.errors import SmsOutcomeUnknown

pytestmark = pytest.mark.unit

PUBLISHED = (
    b'<PublishResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/"><PublishResult>'
    b"<MessageId>provider-1</MessageId></PublishResult><ResponseMetadata><RequestId>r-1</RequestId>"
    b"</ResponseMetadata></PublishResponse>"
)


@contextmanager
def provider(behaviour: str, *, late_by: float = 0.0) -> Iterator[tuple[str, list[float]]]:
    """An SNS endpoint on loopback; yields its URL and the times requests arrived."""
    requests: list[float] = []

    class Provider(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            requests.append(time.monotonic())
            if behaviour == "lose-answer":
                self.close_connection = True  # took the SMS; the answer never leaves
                return
            time.sleep(late_by)
            self.send_response(200)
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(PUBLISHED)))
            self.end_headers()
            with contextlib.suppress(OSError):  # the client may have stopped waiting
                self.wfile.write(PUBLISHED)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Provider)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()


def test_a_provider_that_takes_the_sms_and_loses_the_answer_gets_one_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the consumer's SMS client pointed at a provider that never answers
    with provider("lose-answer") as (url, requests):
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)
        sender = sms_sender(AwsClients())
        # When an SMS is sent / Then the outcome is unknown, and the provider got ONE request
        with pytest.raises(SmsOutcomeUnknown):
            sender.send("+8613812345678", "hello")
        time.sleep(0.2)  # a retry would arrive now
    assert len(requests) == 1


def test_a_provider_answering_after_the_read_timeout_gets_one_request_and_no_wait_beyond_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a provider that answers one second after the client's read timeout
    budget = timeouts.SMS_SEND
    with provider("answer-late", late_by=budget.read_timeout_seconds + 1) as (url, requests):
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)
        sender = sms_sender(AwsClients())
        started = time.monotonic()
        # When an SMS is sent / Then the client gives up at its read timeout, reporting an unknown outcome
        with pytest.raises(SmsOutcomeUnknown):
            sender.send("+8613812345678", "hello")
        waited = time.monotonic() - started
    assert len(requests) == 1
    assert waited < budget.worst_case_seconds()


def test_an_answering_provider_returns_its_message_id(monkeypatch: pytest.MonkeyPatch) -> None:
    with provider("answer") as (url, requests):
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)
        assert sms_sender(AwsClients()).send("+8613812345678", "hello") == "provider-1"
    assert len(requests) == 1
