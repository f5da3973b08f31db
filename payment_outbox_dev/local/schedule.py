"""The template's event sources, run: every ``Schedule`` fired at its time-scaled rate, every ``SQS``
event source polled (as many pollers as the function has workers) with partial batch failures
honoured, and a watch on the dead-letter queues and the alarms.

Each is a loop that ends when the stack's stop event is set; ``EventSources.loops()`` names them and the
stack runs each in a thread of its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3

from payment_outbox_dev.checks.template import (
    ScheduleSource,
    SqsEventSource,
    resources_of_type,
    schedules,
    sqs_event_sources,
)
from payment_outbox_dev.local.describe import describe
from payment_outbox_dev.local.harness import REGION, Delivery
from payment_outbox_dev.local.observe import Observer, describe_message, why
from payment_outbox_dev.local.pooled import PooledFunctions
from payment_outbox_dev.local.provision import Provisioned
from payment_outbox_dev.local.timing import Timing
from payment_outbox_dev.local.workers import InvocationFailed, WorkerDied

#: The shortest pause between two looks at the dead-letter queues, seconds.
WATCH_MIN_INTERVAL = 0.5


@dataclass
class EventSources:
    template: dict[str, Any]
    functions: PooledFunctions
    resources: Provisioned
    timing: Timing
    observer: Observer
    stop: threading.Event
    poll_interval: float

    def loops(self) -> Iterator[tuple[str, Callable[[], None]]]:
        """Every loop the template's events call for, each with a thread name."""
        for schedule in schedules(self.template):
            if schedule.enabled:
                yield f"schedule-{schedule.function}", _bind(self.schedule_loop, schedule)
        for source in sqs_event_sources(self.template):
            # Lambda polls with as many concurrent batches as the function may run.
            for number in range(self.functions.pools[source.function].size):
                yield f"poll-{source.queue}-{number}", _bind(self.poll_loop, source)
        yield "watch", self.watch_loop

    @property
    def _say(self) -> Callable[[str, str], None]:
        return self.observer.narrator.say

    def schedule_loop(self, schedule: ScheduleSource) -> None:
        period = self.timing.schedule_periods[(schedule.function, schedule.name)]
        while not self.stop.wait(period):
            try:
                result = self.functions.run_scheduled(schedule.function)
            except Exception as exc:
                if self.stop.is_set():
                    return
                self._say("error", f"{schedule.function} ({schedule.expression}) raised {describe(exc)}")
                continue
            if isinstance(result, dict) and result.get("claimed"):
                failed = result.get("failed") or []
                self._say(
                    "relay",
                    f"{schedule.function}: claimed {result['claimed']}"
                    f" · published {result.get('published', 0)}"
                    f" · retry later {result.get('retried', 0)} · FAILED {len(failed)}"
                    + (f" {', '.join(failed)}" if failed else ""),
                )

    def poll_loop(self, source: SqsEventSource) -> None:
        sqs = boto3.client("sqs", region_name=REGION)
        url = self.resources.queue_url(source.queue)
        arn = self.resources.attributes[(source.queue, "Arn")]
        max_receives = self.max_receive_count(source.queue)
        while not self.stop.is_set():
            try:
                delivery = self.functions.deliver(
                    url,
                    source.function,
                    max_messages=source.batch_size,
                    retry_failed_now=False,
                    sqs_client=sqs,
                    queue_arn=arn,
                    reports_item_failures=source.reports_item_failures,
                    handler_errors_fail_batch=True,
                )
            except Exception as exc:
                if self.stop.is_set():
                    return
                self._say("error", f"{source.queue} → {source.function}: {describe(exc)}; polling again")
                self.stop.wait(self.poll_interval)
                continue
            if delivery.received == 0:
                self.stop.wait(self.poll_interval)
                continue
            if self.stop.is_set() and isinstance(delivery.error, (WorkerDied, RuntimeError)):
                return  # stopping: the batch goes back to the queue untouched
            outcome = self.functions.last_outcome() if delivery.error is None else None
            errors = outcome.record_errors if outcome else {}
            if isinstance(delivery.error, InvocationFailed):
                errors = delivery.error.record_errors
            self._narrate_delivery(source, delivery, max_receives, errors)

    def _narrate_delivery(
        self,
        source: SqsEventSource,
        delivery: Delivery,
        max_receives: int | None,
        record_errors: dict[str, str],
    ) -> None:
        route = f"{source.queue} → {source.function}"
        if isinstance(delivery.error, WorkerDied):
            self._say("error", f"{route}: {delivery.error}; its batch settles nothing")
        elif delivery.error is not None:
            self._say("error", f"{route} raised {why(delivery.error)} (the whole batch failed)")
        ok = [m for m in delivery.messages if m["MessageId"] not in delivery.failed_ids]
        if ok:
            keys = ", ".join(describe_message(m) for m in ok)
            self._say("sqs", f"{route}: {len(ok)} record(s) done [{keys}]")
        for message in delivery.messages:
            if message["MessageId"] not in delivery.failed_ids:
                continue
            receives = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
            limit = f"{receives}/{max_receives}" if max_receives else str(receives)
            last = bool(max_receives and receives >= max_receives)
            then = (
                "next receive moves it to the dead-letter queue"
                if last
                else f"back in {self.timing.visibilities.get(source.queue)} s"
            )
            reason = record_errors.get(message["MessageId"])
            if reason is None and delivery.error is not None:
                reason = why(delivery.error)
            self._say(
                "dlq" if last else "retry",
                f"{route}: record [{describe_message(message)}] failed"
                f" (receive {limit}): {reason or 'reported failed by the function'}; {then}",
            )

    def max_receive_count(self, queue: str) -> int | None:
        redrive = (
            resources_of_type(self.template, "AWS::SQS::Queue")[queue]
            .get("Properties", {})
            .get("RedrivePolicy")
        )
        return int(redrive["maxReceiveCount"]) if redrive else None

    def watch_loop(self) -> None:
        """Dead-letter queues filling up, and alarms changing state."""
        sqs = boto3.client("sqs", region_name=REGION)
        queues = resources_of_type(self.template, "AWS::SQS::Queue")
        dlqs = {}
        for props in (q.get("Properties", {}) for q in queues.values()):
            target = props.get("RedrivePolicy", {}).get("deadLetterTargetArn")
            if isinstance(target, dict) and "Fn::GetAtt" in target:
                name = target["Fn::GetAtt"][0]
                dlqs[name] = self.resources.queue_url(name)
        depths = {name: _depth(sqs, url) for name, url in dlqs.items()}
        while not self.stop.wait(max(self.poll_interval, WATCH_MIN_INTERVAL)):
            for name, url in dlqs.items():
                depth = _depth(sqs, url)
                if depth > depths[name]:
                    self._say(
                        "dlq",
                        f"{name} now holds {depth} message(s) (+{depth - depths[name]}):"
                        " the retry lines above say why; inspect, fix, redrive",
                    )
                depths[name] = depth
            self.observer.alarms()


def _bind(loop: Callable[[Any], None], argument: Any) -> Callable[[], None]:
    return lambda: loop(argument)


def _depth(sqs: Any, url: str) -> int:
    try:
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
    except Exception:
        return 0
    return int(attributes["Attributes"]["ApproximateNumberOfMessages"])
