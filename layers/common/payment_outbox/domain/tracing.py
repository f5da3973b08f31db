"""The trace context an order's journey carries: from the request that wrote its outbox rows, through
the relay, to every consumer effect.

Three parts, each optional but the first:

- ``traceparent``: the W3C Trace Context header (``00-<trace id>-<parent span id>-<flags>``). A
  request that carries one is continued; otherwise a new trace starts, on the X-Ray trace's own id
  when the request has one (X-Ray ids are W3C ids with a dash), so both name the same trace;
- ``correlation_id``: the request's correlation id (API Gateway's request id), which every log line
  of the journey repeats;
- ``xray_trace_header``: the X-Ray header of the request (``Root=1-…;Parent=…;Sampled=…``) where
  X-Ray tracing is active.

The outbox row keeps it (column ``trace_context``), the relay sends it as message attributes, and the
consumers continue it. Pure: no I/O; random span ids come from the caller or ``secrets``.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass

#: ``version-traceid-parentid-flags``; version ``ff`` is invalid, all-zero ids are invalid.
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_XRAY_ROOT = re.compile(r"(?:^|;)\s*Root=1-([0-9a-f]{8})-([0-9a-f]{24})(?:;|$)")
#: Correlation ids are echoed into every log line: plain tokens only, bounded.
_CORRELATION_ID = re.compile(r"^[A-Za-z0-9._:/=+-]{1,128}$")
_XRAY_HEADER = re.compile(r"^[A-Za-z0-9=;:._-]{1,256}$")

#: Message attribute names (SNS and, with raw delivery, SQS).
ATTRIBUTE_TRACEPARENT = "traceparent"
ATTRIBUTE_CORRELATION_ID = "correlationId"
ATTRIBUTE_XRAY = "xrayTraceHeader"
#: The stored form is at most this long (the column is VARCHAR(512)).
COLUMN_MAX = 512


def new_span_id() -> str:
    return _non_zero(lambda: secrets.token_hex(8))


def new_trace_id() -> str:
    return _non_zero(lambda: secrets.token_hex(16))


def _non_zero(draw: Callable[[], str]) -> str:
    while True:
        value = draw()
        if value.strip("0"):
            return value


def parse_traceparent(value: str | None) -> tuple[str, str, str] | None:
    """``(trace id, parent id, flags)`` of a valid version-00-compatible header, else None."""
    if not value:
        return None
    match = _TRACEPARENT.match(value.strip().lower())
    if match is None:
        return None
    version, trace_id, parent_id, flags = match.groups()
    if version == "ff" or not trace_id.strip("0") or not parent_id.strip("0"):
        return None
    return trace_id, parent_id, flags


def xray_trace_id(header: str | None) -> str | None:
    """The W3C form (32 hex digits) of the X-Ray header's root trace id, if it has one."""
    if not header:
        return None
    match = _XRAY_ROOT.search(header)
    return match.group(1) + match.group(2) if match else None


@dataclass(frozen=True)
class TraceContext:
    traceparent: str
    correlation_id: str | None = None
    xray_trace_header: str | None = None

    @property
    def trace_id(self) -> str:
        parsed = parse_traceparent(self.traceparent)
        return parsed[0] if parsed else ""

    @property
    def span_id(self) -> str:
        parsed = parse_traceparent(self.traceparent)
        return parsed[1] if parsed else ""

    def child(self, span_id: str | None = None) -> TraceContext:
        """The same trace, one span further: the span of whoever continues it."""
        parsed = parse_traceparent(self.traceparent)
        if parsed is None:
            return self
        trace_id, _, flags = parsed
        return TraceContext(
            f"00-{trace_id}-{span_id or new_span_id()}-{flags}", self.correlation_id, self.xray_trace_header
        )

    def attributes(self) -> dict[str, str]:
        """As message attributes: only the parts that are present."""
        attributes = {ATTRIBUTE_TRACEPARENT: self.traceparent}
        if self.correlation_id:
            attributes[ATTRIBUTE_CORRELATION_ID] = self.correlation_id
        if self.xray_trace_header:
            attributes[ATTRIBUTE_XRAY] = self.xray_trace_header
        return attributes

    def to_column(self) -> str:
        return json.dumps(self.attributes(), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_column(cls, text: str | None) -> TraceContext | None:
        """The stored form read back; None for a row written before traces were kept (or unreadable)."""
        if not text:
            return None
        try:
            data = json.loads(text)
        except ValueError:
            return None
        return cls.from_attributes(data) if isinstance(data, dict) else None

    @classmethod
    def from_attributes(cls, attributes: Mapping[str, object]) -> TraceContext | None:
        """From message attributes (plain strings); None without a valid traceparent."""
        traceparent = attributes.get(ATTRIBUTE_TRACEPARENT)
        if not isinstance(traceparent, str) or parse_traceparent(traceparent) is None:
            return None
        correlation = attributes.get(ATTRIBUTE_CORRELATION_ID)
        xray = attributes.get(ATTRIBUTE_XRAY)
        return cls(
            traceparent.strip().lower(),
            correlation if isinstance(correlation, str) and _valid_correlation(correlation) else None,
            xray if isinstance(xray, str) and _XRAY_HEADER.match(xray) else None,
        )


def _valid_correlation(value: str) -> bool:
    return bool(_CORRELATION_ID.match(value))


def request_trace(
    *,
    traceparent: str | None,
    correlation_id: str | None,
    xray_trace_header: str | None,
    span_id: str | None = None,
) -> TraceContext:
    """The trace context of a request: its own ``traceparent`` continued (a span of ours under it), or
    a new trace — on the X-Ray trace id when the request has an X-Ray header. Invalid parts are
    dropped, never refused: tracing must not fail a payment."""
    xray = xray_trace_header.strip() if xray_trace_header else None
    if xray and not _XRAY_HEADER.match(xray):
        xray = None
    correlation = correlation_id if correlation_id and _valid_correlation(correlation_id) else None
    span = span_id or new_span_id()
    parsed = parse_traceparent(traceparent)
    if parsed is not None:
        trace_id, _, flags = parsed
        return TraceContext(f"00-{trace_id}-{span}-{flags}", correlation, xray)
    trace_id = xray_trace_id(xray) or new_trace_id()
    sampled = "00" if xray and "Sampled=0" in xray else "01"
    return TraceContext(f"00-{trace_id}-{span}-{sampled}", correlation, xray)
