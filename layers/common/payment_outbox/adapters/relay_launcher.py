"""Starts more relay runs (fan-out under a backlog) as asynchronous invocations of the relay function."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

logger = logging.getLogger(__name__)

#: The event a fanned-out run receives; the handler tells it from the schedule's event by this key.
FAN_OUT_EVENT_KEY = "relayFanOut"


def fan_out_event(seconds_left: float, *, now: float | None = None) -> dict[str, Any]:
    """A fanned-out run stops by the moment its starter must stop, so the relays at once never
    exceed the bound: the starter plus those it started, all ending together."""
    stop_by = (time.time() if now is None else now) + seconds_left
    return {FAN_OUT_EVENT_KEY: {"stopByEpochMs": int(stop_by * 1000)}}


class LambdaRelayLauncher:
    def __init__(self, client_factory: Callable[[], Any], function_name: str) -> None:
        self._client_factory = client_factory
        self._function_name = function_name

    def launch(self, count: int, *, seconds_left: float) -> int:
        payload = json.dumps(fan_out_event(seconds_left)).encode()
        started = 0
        for _ in range(count):
            try:
                # "Event": queued by Lambda and run at once; this run does not wait for it.
                self._client_factory().invoke(
                    FunctionName=self._function_name, InvocationType="Event", Payload=payload
                )
            except (ClientError, BotoCoreError) as exc:
                # Throttled or not allowed: the backlog waits for the next scheduled run.
                logger.warning("could not start another relay: %s", exc)
                break
            started += 1
        return started


def fan_out_remaining_ms(event: dict[str, Any]) -> Callable[[], int] | None:
    """For a fanned-out run: milliseconds left until its starter's deadline (None for a scheduled run)."""
    spec = event.get(FAN_OUT_EVENT_KEY)
    if not isinstance(spec, dict) or not isinstance(spec.get("stopByEpochMs"), int):
        return None
    stop_by_ms: int = spec["stopByEpochMs"]
    return lambda: int(stop_by_ms - time.time() * 1000)
