"""Answering a CloudFormation custom resource request (a PUT of the outcome to its pre-signed URL).

CloudFormation waits until it gets an answer (or the resource's ServiceTimeout passes), and every
resource that depends on the custom resource waits with it. So a request is always answered, before
the function's own deadline: Delete and unknown request types without touching anything, Create and
Update with the work's outcome, or FAILED when the work would outlive the function.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

#: One PUT may take at most this long; CloudFormation's URL answers within a second normally.
SEND_TIMEOUT_SECONDS = 10
#: Time kept back from the function's deadline to deliver the answer: two PUTs and a pause.
ANSWER_RESERVE_SECONDS = 2 * SEND_TIMEOUT_SECONDS + 5
#: Attempts at delivering one answer (a PUT that fails once, e.g. a reset connection, is retried).
SEND_ATTEMPTS = 3


@dataclass(frozen=True)
class Outcome:
    success: bool
    reason: str
    data: dict[str, str]


@dataclass(frozen=True)
class Done:
    """What finished work answers: why it succeeded (CloudFormation shows it) and its data."""

    reason: str
    data: dict[str, str]


def answer(
    event: dict[str, Any],
    *,
    work: Callable[[], Done | dict[str, str]],
    remaining_seconds: Callable[[], float],
    physical_resource_id: str,
    log_stream_name: str = "",
    reserve_seconds: float = ANSWER_RESERVE_SECONDS,
) -> Outcome:
    """Run ``work`` for Create and Update, then answer CloudFormation; always answer, in time, and
    always with a reason (``Done.reason`` when the work gives one).

    ``remaining_seconds`` is the function's time left (``context.get_remaining_time_in_millis``).
    ``work`` gets what is left after ``reserve_seconds``; if it has not finished by then, the answer
    is FAILED and the work is abandoned (the function returns; a blocked DDL is also bounded by the
    database's lock wait timeout the work sets)."""
    request_type = event.get("RequestType")
    if request_type == "Delete":
        outcome = Outcome(True, "nothing to delete: the resource outlives the stack", {})
    elif request_type in ("Create", "Update"):
        outcome = _run_within(work, remaining_seconds() - reserve_seconds)
    else:
        outcome = Outcome(False, f"unknown request type {request_type!r}; nothing was done", {})
    send(
        event,
        success=outcome.success,
        reason=outcome.reason,
        physical_resource_id=physical_resource_id,
        data=outcome.data,
        log_stream_name=log_stream_name,
        deadline=time.monotonic() + max(remaining_seconds() - 1.0, 1.0),
    )
    return outcome


def _run_within(work: Callable[[], Done | dict[str, str]], budget_seconds: float) -> Outcome:
    if budget_seconds <= 0:
        return Outcome(False, "no time left to run before the function's deadline", {})
    result: list[Outcome] = []

    def run() -> None:
        try:
            done = work()
            if isinstance(done, Done):
                result.append(Outcome(True, done.reason, done.data))
            else:
                result.append(Outcome(True, "done", done))
        except Exception as exc:
            logger.exception("custom resource work failed")
            result.append(Outcome(False, f"failed with {type(exc).__name__}; see the function's log", {}))

    # A daemon thread: the answer must not wait for work that is stuck (e.g. a DDL waiting on a lock).
    worker = threading.Thread(target=run, name="custom-resource-work", daemon=True)
    worker.start()
    worker.join(budget_seconds)
    if result:
        return result[0]
    logger.error("custom resource work did not finish within %.0f s", budget_seconds)
    return Outcome(
        False,
        f"did not finish within {budget_seconds:.0f} s (e.g. a DDL waiting on a lock); "
        "see the function's log",
        {},
    )


def send(
    event: dict[str, Any],
    *,
    success: bool,
    reason: str,
    physical_resource_id: str,
    data: dict[str, str] | None = None,
    log_stream_name: str = "",
    deadline: float | None = None,
) -> None:
    """PUT the answer, retrying a failed attempt while ``deadline`` (monotonic seconds) allows."""
    body = json.dumps(
        {
            "Status": "SUCCESS" if success else "FAILED",
            "Reason": f"{reason} (log stream {log_stream_name})" if log_stream_name else reason,
            "PhysicalResourceId": physical_resource_id,
            "StackId": event["StackId"],
            "RequestId": event["RequestId"],
            "LogicalResourceId": event["LogicalResourceId"],
            "NoEcho": False,
            "Data": data or {},
        }
    ).encode()
    url = event["ResponseURL"]
    if not url.startswith(("https://", "http://127.0.0.1", "http://localhost")):
        raise ValueError("ResponseURL must be an https URL")
    deadline = time.monotonic() + SEND_ATTEMPTS * SEND_TIMEOUT_SECONDS if deadline is None else deadline
    for attempt in range(1, SEND_ATTEMPTS + 1):
        timeout = min(SEND_TIMEOUT_SECONDS, deadline - time.monotonic())
        try:
            _put(url, body, timeout)
            return
        except (urllib.error.URLError, OSError) as exc:
            if attempt == SEND_ATTEMPTS or deadline - time.monotonic() < 1.0:
                raise
            logger.warning("answer to CloudFormation failed (%s); retrying", type(exc).__name__)
            time.sleep(0.5)


def _put(url: str, body: bytes, timeout: float) -> None:
    request = urllib.request.Request(  # noqa: S310 - scheme checked by the caller  # nosec B310
        url, data=body, method="PUT", headers={"Content-Type": "", "Content-Length": str(len(body))}
    )
    with urllib.request.urlopen(request, timeout=max(timeout, 0.1)):  # noqa: S310 - scheme checked  # nosec B310
        pass
