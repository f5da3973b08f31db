"""The trace context: continued from the request, kept by the row, carried as message attributes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from payment_outbox.adapters.sns_publisher import SnsPublisher, message_attributes
from payment_outbox.api.payments import trace_of
from payment_outbox.domain.outbox import OutboxMessage, OutboxStatus
from payment_outbox.domain.tracing import TraceContext, parse_traceparent, request_trace

pytestmark = pytest.mark.unit

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
INCOMING = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC).replace(tzinfo=None)


def _message(trace: TraceContext | None = None, requeue_count: int = 0) -> OutboxMessage:
    return OutboxMessage(
        message_id="m-1",
        topic="topic.points",
        content="{}",
        business_key="PO1",
        business_type="ORDER_PAID",
        status=OutboxStatus.PENDING,
        attempts=0,
        due_at=NOW,
        create_time=NOW,
        update_time=NOW,
        trace=trace,
        requeue_count=requeue_count,
    )


def test_a_request_traceparent_is_continued_with_a_span_of_our_own() -> None:
    # When a request arrives with a W3C traceparent
    trace = request_trace(
        traceparent=INCOMING, correlation_id="req-1", xray_trace_header=None, span_id="1" * 16
    )
    # Then the same trace goes on under our span, with the request's correlation id
    assert trace.traceparent == f"00-{TRACE_ID}-{'1' * 16}-01"
    assert (trace.trace_id, trace.correlation_id) == (TRACE_ID, "req-1")


def test_without_traceparent_the_xray_trace_id_becomes_the_w3c_trace_id() -> None:
    # Given API Gateway's X-Ray header (tracing active) and no traceparent
    header = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    trace = trace_of({"X-Amzn-Trace-Id": header}, "req-2")
    # Then the W3C trace is the X-Ray trace (the same 32 hex digits), and the header is kept
    assert trace.trace_id == "5759e988bd862e3fe1be46a994272793"
    assert trace.xray_trace_header == header
    assert trace.traceparent.endswith("-01")


@pytest.mark.parametrize(
    "bad",
    [
        "garbage",
        f"ff-{TRACE_ID}-00f067aa0ba902b7-01",  # version ff is invalid
        f"00-{'0' * 32}-00f067aa0ba902b7-01",  # all-zero trace id
        f"00-{TRACE_ID}-{'0' * 16}-01",  # all-zero parent id
        f"00-{TRACE_ID}-00f067aa0ba902b7",  # no flags
    ],
)
def test_a_malformed_traceparent_starts_a_new_trace_instead_of_failing(bad: str) -> None:
    trace = trace_of({"traceparent": bad}, None)
    assert parse_traceparent(bad) is None
    assert parse_traceparent(trace.traceparent) is not None
    assert trace.trace_id != TRACE_ID


def test_correlation_ids_that_are_not_plain_tokens_are_dropped() -> None:
    trace = request_trace(traceparent=None, correlation_id="a b\n{json}", xray_trace_header="x\ny")
    assert (trace.correlation_id, trace.xray_trace_header) == (None, None)


def test_the_stored_form_reads_back_and_fits_the_column() -> None:
    trace = request_trace(
        traceparent=INCOMING, correlation_id="c" * 128, xray_trace_header="Root=1-5759e988-" + "a" * 24
    )
    stored = trace.to_column()
    assert len(stored) <= 512
    assert TraceContext.from_column(stored) == trace
    assert TraceContext.from_column(None) is None
    assert TraceContext.from_column("not json") is None


def test_the_relay_sends_the_rows_trace_as_message_attributes() -> None:
    # Given a row written under a traced request
    trace = TraceContext(INCOMING, "req-1", "Root=1-5759e988-bd862e3fe1be46a994272793")
    # Then its message attributes carry the trace next to topic and messageId
    attributes = {k: v["StringValue"] for k, v in message_attributes(_message(trace)).items()}
    assert attributes == {
        "topic": "topic.points",
        "messageId": "m-1",
        "traceparent": INCOMING,
        "correlationId": "req-1",
        "xrayTraceHeader": "Root=1-5759e988-bd862e3fe1be46a994272793",
    }
    # And a row without a trace (written before traces were kept) carries none
    assert set(message_attributes(_message())) == {"topic", "messageId"}
    # And read back from the attributes, it is the same context
    assert TraceContext.from_attributes(attributes) == trace


def test_a_consumer_continues_the_trace_one_span_further() -> None:
    child = TraceContext(INCOMING, "req-1").child("2" * 16)
    assert child.traceparent == f"00-{TRACE_ID}-{'2' * 16}-01"
    assert child.correlation_id == "req-1"


class _RecordingSns:
    def __init__(self) -> None:
        self.entries: list[dict[str, object]] = []

    def publish_batch(
        self, TopicArn: str, PublishBatchRequestEntries: list[dict[str, object]]
    ) -> dict[str, object]:
        self.entries.extend(PublishBatchRequestEntries)
        return {"Successful": [{"Id": e["Id"]} for e in PublishBatchRequestEntries], "Failed": []}


def test_fifo_deduplication_id_changes_with_each_requeue_only() -> None:
    # Given a FIFO topic
    sns = _RecordingSns()
    publisher = SnsPublisher(lambda: sns, "arn:aws:sns:eu-west-1:123456789012:events.fifo")
    # When a row goes out, goes out again (a lease outlived: same generation), then after two requeues
    publisher.publish([_message(), _message(), _message(requeue_count=2)])
    # Then the copy keeps its deduplication id (SNS drops it) and the requeue has a new one (SNS passes it)
    assert [e["MessageDeduplicationId"] for e in sns.entries] == ["m-1", "m-1", "m-1.r2"]
