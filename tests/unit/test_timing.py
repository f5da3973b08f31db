"""The local stack's time keeps the template's orderings: one factor shortens every duration it shortens.

The orderings are derived from template.yaml itself (each SQS event source's queue and function, the
relay's lease and timeout, the handlers' time reserves), checked on the template, then on the timing
the local stack runs with at several scales — the same ``Timing`` object the stack provisions the
emulator's queues with and hands its workers (tests/integration/test_local_stack.py checks a running
stack reports it).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from payment_outbox_dev.checks.template import load_template, schedules, sqs_event_sources
from payment_outbox_dev.local.stack import LocalStack, StackConfig
from payment_outbox_dev.local.timing import (
    DEFAULT_TIME_SCALE,
    VISIBILITY_TO_TIMEOUT,
    scaled_timing,
    schedule_seconds,
    template_timing,
)
from tests.support import ROOT

pytestmark = pytest.mark.unit

TEMPLATE = load_template(ROOT / "template.yaml")


def _template_timeout(function: str) -> float:
    globals_timeout = float(TEMPLATE["Globals"]["Function"].get("Timeout", 3))
    return float(TEMPLATE["Resources"][function]["Properties"].get("Timeout", globals_timeout))


def test_the_template_itself_keeps_every_ordering() -> None:
    # Given the template's own durations, Then no ordering is broken
    timing = template_timing(TEMPLATE)
    assert timing.violations() == []
    # And each polled queue really is at least 6x its consumer's timeout, read straight from the template
    sources = sqs_event_sources(TEMPLATE)
    assert sources
    for source in sources:
        visibility = TEMPLATE["Resources"][source.queue]["Properties"]["VisibilityTimeout"]
        assert visibility >= VISIBILITY_TO_TIMEOUT * _template_timeout(source.function), source


@pytest.mark.parametrize("scale", [1.0, 0.5, 0.2, 0.1, DEFAULT_TIME_SCALE])
def test_every_duration_is_shortened_by_the_one_factor_and_every_ordering_still_holds(scale: float) -> None:
    # Given the local stack's timing at a scale
    timing = scaled_timing(TEMPLATE, scale)

    # Then every ordering of the template holds
    assert timing.violations() == []
    # And every function timeout, schedule and polled queue's visibility is the template's times the factor
    for function, timeout in timing.function_timeouts.items():
        assert timeout == pytest.approx(_template_timeout(function) * scale)
    for schedule in schedules(TEMPLATE):
        period = timing.schedule_periods[(schedule.function, schedule.name)]
        assert period == pytest.approx(schedule_seconds(schedule.expression) * scale)
    for source in sqs_event_sources(TEMPLATE):
        template_visibility = TEMPLATE["Resources"][source.queue]["Properties"]["VisibilityTimeout"]
        # whole seconds, rounded up: only ever longer, so the ordering cannot flip
        assert (
            template_visibility * scale <= timing.visibilities[source.queue] < template_visibility * scale + 1
        )
        # And the in-progress lock of a record whose consumer died ends before the record comes back
        assert timing.in_progress_window(source.function) < timing.visibilities[source.queue]
    # And the relay's lease outlasts any relay run
    assert timing.relay_function is not None
    assert timing.lease_seconds >= timing.function_timeouts[timing.relay_function]


def test_the_defect_of_a_visibility_shortened_alone_is_reported() -> None:
    # Given the old local settings: queues shortened to 2 s, handlers told the template's 30 s
    timing = template_timing(TEMPLATE)
    broken = type(timing)(
        scale=timing.scale,
        function_timeouts=timing.function_timeouts,
        visibilities=dict.fromkeys(timing.visibilities, 2),
        schedule_periods=timing.schedule_periods,
        lease_seconds=timing.lease_seconds,
        relay_function=timing.relay_function,
        consumers=tuple(
            type(c)(c.queue, c.function, 2, c.function_timeout_seconds) for c in timing.consumers
        ),
        margins=timing.margins,
    )

    # Then both orderings that dead-lettered healthy records are named
    problems = " | ".join(broken.violations())
    assert "under 6x" in problems
    assert "outlives the redelivery" in problems


def test_a_scale_that_leaves_the_relay_no_time_is_refused_by_the_stack(tmp_path: Path) -> None:
    # Given a factor under which the relay's timeout is shorter than the time it keeps in reserve
    timing = scaled_timing(TEMPLATE, 1 / 60)
    assert any("leaves no time" in v for v in timing.violations())

    # When a stack is started with it, Then it refuses before starting anything
    stack = LocalStack(StackConfig(ROOT, api_port=0, data_dir=tmp_path, time_scale=1 / 60))
    with pytest.raises(ValueError, match="breaks the template's timing"):
        stack.start()
    stack.stop()
