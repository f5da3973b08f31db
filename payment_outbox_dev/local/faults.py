"""Fault injection at the AWS boundary, for the chaos run and the fault tests.

A ``FaultInjector`` wraps every boto3 client the application builds (``payment_outbox.adapters.aws``)
and, call by call, lets its rules fail the call the way AWS fails it (a ``ClientError`` such as
``Throttling``), fail some entries of a ``PublishBatch`` while the rest go through, lose the answer of
a call that did happen, or kill the process before or after the call (``ProcessKilled``: nothing in the
application catches it, as nothing survives a Lambda container dying). The adapters above the client
run unchanged, so what is tested is their real handling of each failure.

Nothing in the handlers or the composition root imports this module: only the local tools and the
tests install it, for the duration of a ``with injector.installed():`` block.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from botocore.exceptions import ClientError, ReadTimeoutError

from payment_outbox_dev.local.harness import current_function


class ProcessKilled(BaseException):
    """The Lambda container died mid-invocation (timeout, out of memory, host lost).

    A ``BaseException``: the application's ``except Exception`` blocks must not swallow it, exactly as
    they could not run at all when the process is gone."""


@dataclass(frozen=True)
class Call:
    """One API call a wrapped client is about to make."""

    service: str
    operation: str
    params: dict[str, Any]
    #: The template logical id of the function being invoked (None outside a harness invocation).
    function: str | None

    @property
    def table(self) -> str | None:
        """The DynamoDB table a call writes or reads (the first item's, for a transaction)."""
        if "TableName" in self.params:
            return str(self.params["TableName"])
        for item in self.params.get("TransactItems", []):
            for action in item.values():
                return str(action["TableName"])
        return None

    @property
    def entries(self) -> list[dict[str, Any]]:
        """The entries of an SNS ``PublishBatch``."""
        entries: list[dict[str, Any]] = self.params.get("PublishBatchRequestEntries", [])
        return entries

    @property
    def message_ids(self) -> list[str]:
        """The outbox message ids a ``PublishBatch`` carries (its ``messageId`` attributes)."""
        return [entry_message_id(e) for e in self.entries]

    @property
    def subject(self) -> str:
        """What the call is about, to cap faults per item: a ledger entry's message id, a table key,
        an SMS text, or the batch's message ids."""
        if self.operation == "transact_write_items":
            for item in self.params.get("TransactItems", []):
                put = item.get("Put")
                if put and "messageId" in put["Item"]:
                    return str(put["Item"]["messageId"]["S"])
        for key in ("Item", "Key"):
            if key in self.params:
                return "|".join(
                    f"{k}={v.get('S', v.get('N'))}"
                    for k, v in sorted(self.params[key].items())
                    if k in ("id", "messageId", "pk", "sk")
                )
        if self.operation == "publish" and "Message" in self.params:
            return str(self.params["Message"])
        return ",".join(self.message_ids)


def entry_message_id(entry: dict[str, Any]) -> str:
    return str(entry["MessageAttributes"]["messageId"]["StringValue"])


#: Makes the call for real (with these parameters) and returns its response.
Proceed = Callable[[dict[str, Any]], Any]


class Fault(Protocol):
    kind: str

    def apply(self, call: Call, proceed: Proceed) -> Any: ...


def client_error(operation: str, code: str, message: str = "", status: int = 400) -> ClientError:
    """The exception botocore raises for an error response."""
    response: Any = {
        "Error": {"Code": code, "Message": message or code},
        "ResponseMetadata": {"HTTPStatusCode": status, "RetryAttempts": 0},
    }
    return ClientError(response, _api_name(operation))


@dataclass(frozen=True)
class FailCall:
    """AWS refuses the call: nothing happens, a ``ClientError`` with ``code`` is raised."""

    code: str
    status: int = 400
    message: str = ""
    kind: str = ""

    def apply(self, call: Call, proceed: Proceed) -> Any:
        raise client_error(call.operation, self.code, self.message or f"injected {self.code}", self.status)


@dataclass(frozen=True)
class LoseResponse:
    """The call reaches AWS and takes effect, but its answer never comes back (a read timeout)."""

    kind: str = "response lost"

    def apply(self, call: Call, proceed: Proceed) -> Any:
        proceed(call.params)
        raise ReadTimeoutError(endpoint_url=f"https://{call.service}.local")


@dataclass(frozen=True)
class LateAnswer:
    """The call reaches AWS and takes effect, but only after the client stopped waiting for it: the
    client's read timeout (``wait_seconds``) passes, then the effect happens and its answer goes
    nowhere. ``settle()`` waits until every late effect has happened."""

    wait_seconds: float = 0.2
    late_by_seconds: float = 0.3
    kind: str = "answered after the client's timeout"
    _late: list[threading.Thread] = field(default_factory=list, compare=False, repr=False)

    def apply(self, call: Call, proceed: Proceed) -> Any:
        def happen_late() -> None:
            time.sleep(self.wait_seconds + self.late_by_seconds)
            proceed(call.params)

        thread = threading.Thread(target=happen_late, name="late-answer", daemon=True)
        self._late.append(thread)
        thread.start()
        time.sleep(self.wait_seconds)
        raise ReadTimeoutError(endpoint_url=f"https://{call.service}.local")

    def settle(self) -> int:
        """Wait for the late effects; return how many there were."""
        for thread in self._late:
            thread.join()
        return len(self._late)


@dataclass(frozen=True)
class Kill:
    """The process dies before the call is made, or right after it took effect."""

    after: bool = False
    kind: str = ""

    def apply(self, call: Call, proceed: Proceed) -> Any:
        if self.after:
            proceed(call.params)
        raise ProcessKilled(f"killed {'after' if self.after else 'before'} {call.service}.{call.operation}")


@dataclass(frozen=True)
class FailEntries:
    """A ``PublishBatch`` answered HTTP 200 with some entries listed as failed: those entries are not
    published, the others are. ``select(index, entry)`` picks the failing ones (default: every other)."""

    select: Callable[[int, dict[str, Any]], bool] = field(default=lambda index, _entry: index % 2 == 0)
    code: str = "InternalError"
    sender_fault: bool = False
    kind: str = "publish batch partly failed"

    def apply(self, call: Call, proceed: Proceed) -> Any:
        entries = call.entries
        failing = [e for i, e in enumerate(entries) if self.select(i, e)]
        passing = [e for e in entries if e not in failing]
        response: dict[str, Any] = (
            proceed({**call.params, "PublishBatchRequestEntries": passing})
            if passing
            else {"Successful": [], "Failed": []}
        )
        response = {**response, "Failed": list(response.get("Failed", []))}
        response["Failed"].extend(
            {
                "Id": e["Id"],
                "Code": self.code,
                "Message": "injected entry failure",
                "SenderFault": self.sender_fault,
            }
            for e in failing
        )
        return response


@dataclass(frozen=True)
class RunFirst:
    """Something else happens at this moment (``action``), then the call proceeds normally."""

    action: Callable[[Call], None]
    kind: str = ""

    def apply(self, call: Call, proceed: Proceed) -> Any:
        self.action(call)
        return proceed(call.params)


@dataclass
class Rule:
    """When a call of ``service``.``operation`` (any of ``operations``) matches ``when``, inject ``fault``
    with ``probability``, at most ``times`` times. ``kind`` names it in the counts."""

    fault: Fault
    service: str
    operations: tuple[str, ...]
    when: Callable[[Call], bool] | None = None
    probability: float = 1.0
    times: int | None = None
    kind: str = ""
    injected: int = 0

    def __post_init__(self) -> None:
        self.kind = self.kind or self.fault.kind or f"{self.service}.{self.operations[0]} fault"

    def targets(self, call: Call) -> bool:
        return (
            call.service == self.service
            and call.operation in self.operations
            and (self.times is None or self.injected < self.times)
        )


#: Called with each call that went through (possibly with changed parameters) and its response.
Observer = Callable[[Call, Any], None]


class FaultInjector:
    """Holds the rules, decides call by call (seeded, thread-safe), counts what it injected."""

    def __init__(self, rules: list[Rule] | None = None, *, seed: int | None = None) -> None:
        self.rules: list[Rule] = list(rules or [])
        self.enabled = True
        self.counts: Counter[str] = Counter()
        self._observers: list[Observer] = []
        self._rng = random.Random(seed)  # noqa: S311 - reproducible fault choice, not security  # nosec B311
        self._lock = threading.RLock()

    def add(self, fault: Fault, service: str, *operations: str, **options: Any) -> Rule:
        rule = Rule(fault, service, operations, **options)
        with self._lock:
            self.rules.append(rule)
        return rule

    def observe(self, observer: Observer) -> None:
        self._observers.append(observer)

    def heal(self) -> None:
        """Faults off: every call goes through from now on."""
        self.enabled = False

    def chance(self, probability: float) -> bool:
        """A seeded coin toss, for callers that inject faults of their own (duplicates, overlaps)."""
        with self._lock:
            return self._rng.random() < probability

    def count(self, kind: str, n: int = 1) -> None:
        with self._lock:
            self.counts[kind] += n

    def call(self, call: Call, method: Callable[..., Any]) -> Any:
        rule = self._choose(call)

        def proceed(params: dict[str, Any]) -> Any:
            response = method(**params)
            made = Call(call.service, call.operation, params, call.function)
            for observer in self._observers:
                observer(made, response)
            return response

        if rule is None:
            return proceed(call.params)
        return rule.fault.apply(call, proceed)

    def _choose(self, call: Call) -> Rule | None:
        if not self.enabled:
            return None
        with self._lock:
            for rule in self.rules:
                if not rule.targets(call):
                    continue
                if rule.probability < 1 and self._rng.random() >= rule.probability:
                    continue
                # Last, so that a condition with side effects (a per-message cap) sees only real picks.
                if rule.when is not None and not rule.when(call):
                    continue
                rule.injected += 1
                self.counts[rule.kind] += 1
                return rule
        return None

    @contextmanager
    def installed(self) -> Iterator[FaultInjector]:
        """Every client the application creates inside the block is wrapped by this injector (a
        client is created on a function's first use of it: load the handlers inside the block)."""
        from payment_outbox.adapters import aws

        original = aws.new_client
        aws.new_client = _FaultyClientFactory(original, self)
        try:
            yield self
        finally:
            aws.new_client = original


class FaultyClient:
    """A boto3 client whose API operations pass through the injector; everything else is the client's."""

    def __init__(self, inner: Any, service: str, injector: FaultInjector) -> None:
        self._inner = inner
        self._service = service
        self._injector = injector
        self._operations = set(inner.meta.method_to_api_mapping)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name not in self._operations:
            return attribute

        def operation(**params: Any) -> Any:
            call = Call(self._service, name, params, current_function.get())
            return self._injector.call(call, attribute)

        return operation


class _FaultyClientFactory:
    """Stands in for ``aws.new_client``: same arguments, wrapped result."""

    def __init__(self, original: Any, injector: FaultInjector) -> None:
        self._original = original
        self._injector = injector

    def __call__(self, service: str, **options: Any) -> FaultyClient:
        return FaultyClient(self._original(service, **options), service, self._injector)


def _api_name(operation: str) -> str:
    return "".join(part.capitalize() for part in operation.split("_"))
