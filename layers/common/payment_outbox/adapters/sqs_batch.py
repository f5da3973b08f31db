"""Which batch semantics an SQS event needs: FIFO queues (ordered delivery) keep each message group
in order, so a group stops at its first failure; standard queues settle each record on its own. And
each record handled inside the trace it carries (``TracedRecords``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from payment_outbox.domain.tracing import TraceContext


def from_fifo_queue(event: Mapping[str, Any]) -> bool:
    """True when the batch comes from a FIFO queue (its ARN ends in ``.fifo``).

    Read from the event rather than configured: one event source mapping delivers from one queue,
    and the queue's own type can never disagree with a setting.
    """
    records = event.get("Records") or []
    return bool(records) and str(records[0].get("eventSourceARN", "")).endswith(".fifo")


class TracedRecords:
    """Each record handled inside the trace it carries: the request's correlation id on every log line
    (Powertools Logger), its ``traceparent`` continued by one span of this consumer, and an X-Ray
    subsegment annotated with the trace and correlation ids.

    The message attributes come from the relay (``traceparent``, ``correlationId``, ``xrayTraceHeader``;
    raw delivery keeps them). A record without them (written before traces were kept) is logged under
    its messageId. Lambda's own segment for an SQS batch cannot take a parent from a record (one
    invocation, many records): X-Ray joins the traces through the queue's ``AWSTraceHeader`` where SNS
    active tracing sets it, and the annotations make each record's subsegment searchable by trace.
    """

    def __init__(
        self, handle: Callable[[SQSRecord], dict[str, Any]], *, logger: Logger, tracer: Tracer, name: str
    ) -> None:
        self._handle = handle
        self._logger = logger
        self._tracer = tracer
        self._name = name

    def __call__(self, record: SQSRecord) -> dict[str, Any]:
        attributes = {name: a.string_value for name, a in record.message_attributes.items() if a.string_value}
        trace = TraceContext.from_attributes(attributes)
        span = trace.child() if trace is not None else None
        message_id = attributes.get("messageId", record.message_id)
        keys: dict[str, Any] = {"message_id": message_id, "topic": attributes.get("topic")}
        if trace is not None and span is not None:
            keys.update(trace_id=span.trace_id, traceparent=span.traceparent, parent_span_id=trace.span_id)
        self._logger.set_correlation_id(
            (span.correlation_id or span.trace_id) if span is not None else message_id
        )
        self._logger.append_keys(**keys)
        try:
            with self._tracer.provider.in_subsegment(f"## {self._name} record") as subsegment:
                subsegment.put_annotation("message_id", message_id)
                if span is not None:
                    subsegment.put_annotation("trace_id", span.trace_id)
                    if span.correlation_id:
                        subsegment.put_annotation("correlation_id", span.correlation_id)
                self._logger.info(f"{self._name}: message received")
                try:
                    result = self._handle(record)
                except Exception as exc:
                    self._logger.warning(f"{self._name}: message failed", extra={"error": type(exc).__name__})
                    raise
                self._logger.info(f"{self._name}: message handled", extra={"result": result})
                return result
        finally:
            self._logger.remove_keys(list(keys))
            self._logger.set_correlation_id(None)
