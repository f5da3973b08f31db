"""What the local stack tells its operator: one narrated line per thing that happens, the metrics the
handlers emit (EMF) totalled, and the template's single-metric alarms evaluated on them.

Nothing here runs anything: the stack, its pollers and its HTTP front report to an ``Observer``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from datetime import datetime
from typing import Any, TextIO

from payment_outbox_dev.checks.template import AlarmSpec
from payment_outbox_dev.local.describe import describe, mask_phones
from payment_outbox_dev.local.emulator import SnsCall
from payment_outbox_dev.local.workers import InvocationFailed, WorkerDied

#: The structured-log fields a narrated handler log line keeps.
NARRATED_LOG_FIELDS = ("messageId", "status", "code", "claimed", "published", "retried", "failed")


class Narrator:
    """One readable line per thing that happens, from any thread."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def say(self, kind: str, text: str) -> None:
        stamp = datetime.now().strftime("%H:%M:%S")
        self.raw(f"{stamp} {kind:<6} {text}")

    def raw(self, line: str) -> None:
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()


class MetricsBoard:
    """Totals of the metrics handlers emit, and the template's alarms evaluated on them."""

    def __init__(self, specs: list[AlarmSpec]) -> None:
        self._specs = specs
        self._lock = threading.Lock()
        self.totals: dict[str, float] = {}
        self._samples: dict[str, deque[tuple[float, float]]] = {s.logical_id: deque() for s in specs}
        self.states: dict[str, str] = {s.logical_id: "OK" for s in specs}

    def record(self, document: dict[str, Any], now: float | None = None) -> list[tuple[AlarmSpec, float]]:
        """Add one EMF document; returns the watched metrics it carried, with their values."""
        now = time.monotonic() if now is None else now
        watched = []
        with self._lock:
            for directive in document.get("_aws", {}).get("CloudWatchMetrics", []):
                for metric in directive.get("Metrics", []):
                    name = metric.get("Name")
                    raw = document.get(name, 0)
                    value = float(sum(raw) if isinstance(raw, list) else raw)
                    self.totals[name] = self.totals.get(name, 0.0) + value
                    for spec in self._specs:
                        if (
                            spec.metric == name
                            and spec.namespace == directive.get("Namespace")
                            and all(document.get(k) == v for k, v in spec.dimensions.items())
                        ):
                            self._samples[spec.logical_id].append((now, value))
                            watched.append((spec, value))
        return watched

    def evaluate(self, now: float | None = None) -> list[tuple[AlarmSpec, str, float]]:
        """Alarms whose state changed: (alarm, new state, the statistic over its period)."""
        now = time.monotonic() if now is None else now
        changed = []
        with self._lock:
            for spec in self._specs:
                samples = self._samples[spec.logical_id]
                while samples and samples[0][0] < now - spec.period_seconds:
                    samples.popleft()
                values = [v for _, v in samples]
                statistic = _statistic(spec.statistic, values)
                state = "ALARM" if values and spec.breached(statistic) else "OK"
                if state != self.states[spec.logical_id]:
                    self.states[spec.logical_id] = state
                    changed.append((spec, state, statistic))
        return changed

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"metrics": dict(self.totals), "alarms": dict(self.states)}


def _statistic(name: str, values: list[float]) -> float:
    if not values:
        return 0.0
    if name == "Maximum":
        return max(values)
    if name == "Minimum":
        return min(values)
    if name == "Average":
        return sum(values) / len(values)
    if name == "SampleCount":
        return float(len(values))
    return sum(values)


class NarratingLogHandler(logging.Handler):
    """The library's own log records (``payment_outbox.*``), as narration lines."""

    def __init__(self, narrator: Narrator) -> None:
        super().__init__()
        self._narrator = narrator

    def emit(self, record: logging.LogRecord) -> None:
        self._narrator.say(
            "log", f"{record.levelname.lower()} {record.name.rsplit('.', 1)[-1]}: {record.getMessage()}"
        )


class LogJournal:
    """The handlers' structured log lines (phone numbers masked), newest last, the last ``size`` of
    them: what ``GET /_local/trace`` searches for one order's journey across functions."""

    def __init__(self, size: int = 20_000) -> None:
        self._lines: deque[dict[str, Any]] = deque(maxlen=size)
        self._lock = threading.Lock()

    def record(self, function: str, document: dict[str, Any]) -> None:
        masked = json.loads(mask_phones(json.dumps(document, default=str)))
        with self._lock:
            self._lines.append({"function": function, **masked})

    def lines(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._lines)


class Observer:
    """Turns what the handlers print and what the emulator sees into narration and metrics."""

    def __init__(
        self,
        narrator: Narrator,
        metrics: MetricsBoard,
        *,
        verbose: bool = False,
        journal: LogJournal | None = None,
    ) -> None:
        self.narrator = narrator
        self.metrics = metrics
        self.verbose = verbose
        self.journal = journal or LogJournal()

    def handler_line(self, function: str, line: str) -> None:
        """One line a handler wrote: an EMF document (metrics, alarms), a JSON log line, or plain text."""
        try:
            document = json.loads(line)
        except ValueError:
            document = None
        if isinstance(document, dict) and "level" in document and "message" in document:
            self.journal.record(function, document)
        if isinstance(document, dict) and "_aws" in document:
            watched = self.metrics.record(document)
            if self.verbose:
                self.narrator.raw(line)
            for spec, value in watched:
                if value:
                    self.narrator.say(
                        "metric", f"{function}: {spec.metric} = {value:g} (watched by {spec.logical_id})"
                    )
            self.alarms()
        elif self.verbose:
            self.narrator.raw(line)
        elif isinstance(document, dict) and "level" in document:
            if str(document["level"]).upper() in ("DEBUG", "INFO"):
                return  # kept in the journal; narrated only with --verbose
            detail = " ".join(f"{k}={v}" for k, v in document.items() if k in NARRATED_LOG_FIELDS)
            self.narrator.say(
                "log",
                mask_phones(
                    f"{function} {str(document['level']).lower()}: {document.get('message')} {detail}"
                ),
            )
        else:
            self.narrator.say("out", mask_phones(f"{function}: {line}"))

    def sns_call(self, call: SnsCall) -> None:
        if call.phone:
            from payment_outbox.domain.sms import mask_phone

            self.narrator.say("sms", f"SNS SMS to {mask_phone(call.phone)} (HTTP {call.status})")
            return
        topics = ", ".join(call.topics) or "-"
        if call.fault:
            self.narrator.say(
                "sns",
                f"{call.action} to {call.topic_name} [{topics}] REFUSED by local fault '{call.fault}'",
            )
        else:
            self.narrator.say(
                "sns", f"{call.action} to {call.topic_name}: {len(call.topics)} message(s) [{topics}]"
            )

    def alarms(self) -> None:
        """Alarms that changed state since the last look, one line each."""
        for spec, state, statistic in self.metrics.evaluate():
            if state == "ALARM":
                self.narrator.say(
                    "ALARM",
                    f"{spec.logical_id}: {spec.metric} {spec.statistic} = {statistic:g}"
                    f" over {spec.period_seconds} s"
                    f" ({spec.comparison} {spec.threshold:g}) → its AlarmActions would be notified",
                )
            else:
                self.narrator.say("alarm", f"{spec.logical_id} back to OK")


def why(error: BaseException) -> str:
    """A worker's death or a handler's exception as they describe themselves; others by class."""
    return str(error) if isinstance(error, WorkerDied | InvocationFailed) else describe(error)


def describe_message(message: dict[str, Any]) -> str:
    """The envelope's topic and messageId when the body is one, else the SQS message id."""
    try:
        body = json.loads(message.get("Body", ""))
    except ValueError:
        body = None
    if isinstance(body, dict) and "messageId" in body:
        return f"{body.get('topic')} {body.get('businessKey')} {body['messageId']}"
    return f"sqs:{message['MessageId']} (not an envelope)"
