"""Local time: everything the local stack shortens, shortened by one factor, so the template's orderings hold.

In AWS the consumers' queues keep a record invisible for 180 s while their function may run 30 s: a
record whose container died is received again only after Powertools' in-progress lock on it (which
lasts the invocation's remaining time) has expired. Shortening the visibility timeout alone (say to
2 s) while the handler is still told it has 30 s inverts that order: the lock outlives several
receives, and the record is dead-lettered although nothing is wrong with it. So the local stack
multiplies *every* duration it shortens by the same ``scale``:

- each queue's ``VisibilityTimeout`` (rounded up to whole seconds, as SQS takes them),
- each ``Schedule`` event's rate,
- each function's ``Timeout``, as the Lambda context handed to the handler reports it (and so the
  idempotency in-progress window, which Powertools takes from the context's remaining time),
- the relay's claim lease (``OUTBOX_LEASE_SECONDS``; the settings' floor of 5 s may lengthen it,
  which only makes it safer).

What is *not* shortened: retention periods (a dead letter is kept 14 days locally too), TTLs, alarm
periods, the webhook signature tolerance — none of them takes part in an ordering the stack relies on.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from payment_outbox_dev.checks.template import functions, resources_of_type, schedules, sqs_event_sources

#: The relay's claim lease when the template's environment does not set one (settings.OutboxSettings).
DEFAULT_LEASE_SECONDS = 60
#: The settings refuse a shorter lease.
MIN_LEASE_SECONDS = 5
#: SQS takes a visibility timeout of at least 1 s ... and whole seconds only.
MIN_VISIBILITY_SECONDS = 1
#: Lambda's rule for SQS event sources: visibility at least 6x the function timeout (template comment).
VISIBILITY_TO_TIMEOUT = 6
#: The default factor: 180 s of visibility become 12 s, a 30 s timeout 2 s, the relay's 60 s 4 s,
#: rate(1 minute) 4 s. Much shorter and the relay's timeout falls under its own safety margin.
DEFAULT_TIME_SCALE = 1 / 15
#: A handler that works "while time is left" stops this long before its timeout (the services'
#: SAFETY_MARGIN_MS), and needs about a second more to do one batch: its timeout must exceed both.
WORK_SECONDS = 1.0
_RATE = re.compile(r"^rate\((\d+)\s+(minute|minutes|hour|hours|day|days)\)$")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


@dataclass(frozen=True)
class QueueTiming:
    queue: str
    function: str
    visibility_seconds: int
    function_timeout_seconds: float


@dataclass(frozen=True)
class Timing:
    """The durations the local stack runs with (``scale`` 1: the template's own)."""

    scale: float
    #: logical id -> Timeout (s) the handler's Lambda context reports.
    function_timeouts: dict[str, float] = field(default_factory=dict)
    #: queue logical id -> VisibilityTimeout (s) set on the emulator's queue.
    visibilities: dict[str, int] = field(default_factory=dict)
    #: (function, event name) -> seconds between two runs of the schedule.
    schedule_periods: dict[tuple[str, str], float] = field(default_factory=dict)
    #: The relay's claim lease (s), handed to it as OUTBOX_LEASE_SECONDS.
    lease_seconds: int = DEFAULT_LEASE_SECONDS
    relay_function: str | None = None
    #: function -> the safety margin (s) its handler keeps before its timeout.
    margins: dict[str, float] = field(default_factory=dict)
    consumers: tuple[QueueTiming, ...] = ()

    def in_progress_window(self, function: str) -> float:
        """How long Powertools' in-progress lock of a record outlives a consumer that died holding it:
        the remaining time of the invocation, at most the function's timeout."""
        return self.function_timeouts[function]

    def violations(self) -> list[str]:
        """Every ordering of the template that these durations break (empty: all hold)."""
        broken = []
        for consumer in self.consumers:
            if consumer.visibility_seconds < VISIBILITY_TO_TIMEOUT * consumer.function_timeout_seconds:
                broken.append(
                    f"{consumer.queue}: visibility {consumer.visibility_seconds} s is under"
                    f" {VISIBILITY_TO_TIMEOUT}x the {consumer.function} timeout"
                    f" ({consumer.function_timeout_seconds:g} s)"
                )
            if self.in_progress_window(consumer.function) >= consumer.visibility_seconds:
                broken.append(
                    f"{consumer.queue}: the in-progress lock ({consumer.function_timeout_seconds:g} s)"
                    f" outlives the redelivery ({consumer.visibility_seconds} s)"
                )
        for function, margin in self.margins.items():
            if self.function_timeouts[function] < margin + WORK_SECONDS:
                broken.append(
                    f"{function}: its timeout ({self.function_timeouts[function]:g} s) leaves no time"
                    f" after the {margin:g} s it keeps in reserve: it would never do a batch"
                )
        if self.relay_function is not None:
            relay_timeout = self.function_timeouts[self.relay_function]
            if self.lease_seconds < relay_timeout:
                broken.append(
                    f"the relay's claim lease ({self.lease_seconds} s) ends before its run may"
                    f" ({relay_timeout:g} s): another run would publish the same rows"
                )
        return broken

    def describe(self) -> dict[str, Any]:
        return {
            "scale": self.scale,
            "functionTimeouts": dict(self.function_timeouts),
            "visibilityTimeouts": dict(self.visibilities),
            "schedules": {f"{f}.{e}": p for (f, e), p in self.schedule_periods.items()},
            "leaseSeconds": self.lease_seconds,
        }


def schedule_seconds(expression: str) -> float:
    """``rate(N unit)`` in seconds; a ``cron(...)`` expression counts as hourly (the stack has no clock
    of its own for cron fields)."""
    found = _RATE.match(expression.strip())
    if found is None:
        return 3600.0
    return int(found.group(1)) * _UNIT_SECONDS[found.group(2).rstrip("s")]


def template_timing(template: dict[str, Any], parameters: dict[str, str] | None = None) -> Timing:
    """The template's own durations (what AWS runs with)."""
    return scaled_timing(template, 1.0, parameters)


def scaled_timing(template: dict[str, Any], scale: float, parameters: dict[str, str] | None = None) -> Timing:
    """The template's durations times ``scale``: visibility rounded up to whole seconds, the lease
    rounded up and kept at the settings' floor — both only ever longer, so no ordering can flip."""
    if not scale > 0:
        raise ValueError(f"the time scale must be positive, got {scale}")
    global_timeout = float(template.get("Globals", {}).get("Function", {}).get("Timeout", 3))
    resources = template.get("Resources", {})
    timeouts = {
        spec.logical_id: float(
            resources[spec.logical_id].get("Properties", {}).get("Timeout", global_timeout)
        )
        * scale
        for spec in functions(template)
    }
    queues = resources_of_type(template, "AWS::SQS::Queue")
    polled = {source.queue for source in sqs_event_sources(template)}
    # The queues a function polls, and any queue whose visibility the template sets (SQS's default
    # of 30 s for the others, e.g. dead-letter queues nobody polls, is left as it is).
    visibilities = {
        name: max(
            MIN_VISIBILITY_SECONDS,
            math.ceil(_round(float(queue.get("Properties", {}).get("VisibilityTimeout", 30)) * scale)),
        )
        for name, queue in queues.items()
        if name in polled or "VisibilityTimeout" in queue.get("Properties", {})
    }
    consumers = tuple(
        QueueTiming(source.queue, source.function, visibilities[source.queue], timeouts[source.function])
        for source in sqs_event_sources(template)
    )
    periods = {
        (s.function, s.name): schedule_seconds(s.expression) * scale for s in schedules(template) if s.enabled
    }
    relay = _relay_function(template)
    lease = DEFAULT_LEASE_SECONDS
    if relay is not None:
        variables = resources[relay].get("Properties", {}).get("Environment", {}).get("Variables", {})
        lease = int(_parameter_value(template, variables.get("OUTBOX_LEASE_SECONDS", lease), parameters))
    scaled_lease = max(MIN_LEASE_SECONDS, math.ceil(_round(lease * scale))) if scale != 1.0 else lease
    return Timing(
        margins=_margins(template, relay),
        scale=scale,
        function_timeouts=timeouts,
        visibilities=visibilities,
        schedule_periods=periods,
        lease_seconds=scaled_lease,
        relay_function=relay,
        consumers=consumers,
    )


def _margins(template: dict[str, Any], relay: str | None) -> dict[str, float]:
    """The functions whose handlers budget by the context's remaining time, with their margins."""
    from payment_outbox.services import janitor
    from payment_outbox.services import relay as relay_service

    margins = {relay: relay_service.SAFETY_MARGIN_MS / 1000} if relay else {}
    for spec in functions(template):
        scheduled = any(e.get("Type") in ("Schedule", "ScheduleV2") for e in spec.events.values())
        if scheduled and "OUTBOX_RETENTION_DAYS" in spec.environment:
            margins[spec.logical_id] = janitor.SAFETY_MARGIN_MS / 1000
    return margins


def _round(value: float) -> float:
    """Cut float noise (180 * (1/30) is 6.000000000000001) before rounding up."""
    return round(value, 6)


def _relay_function(template: dict[str, Any]) -> str | None:
    """The function that claims outbox rows: the one whose environment names the outbox's batch knobs,
    or failing that the scheduled function publishing to the order events topic."""
    for spec in functions(template):
        if "OUTBOX_MAX_ATTEMPTS" in spec.environment and any(
            e.get("Type") in ("Schedule", "ScheduleV2") for e in spec.events.values()
        ):
            return spec.logical_id
    return None


def _parameter_value(template: dict[str, Any], value: Any, parameters: dict[str, str] | None) -> Any:
    if isinstance(value, dict) and "Ref" in value:
        name = value["Ref"]
        if parameters and name in parameters:
            return parameters[name]
        return template.get("Parameters", {}).get(name, {}).get("Default", DEFAULT_LEASE_SECONDS)
    return value
