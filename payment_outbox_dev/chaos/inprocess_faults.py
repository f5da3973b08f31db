"""The in-process fault source's rules: which boto3 calls fail, how, and how often.

SNS publishes: throttling, internal errors, partly failed batches, lost answers, the process dying
after the payment commit or after a publish, and a relay run overlapping the after-commit publish —
each message kept below its publish-attempt budget (exhausting it is the FAILED path, tested on its
own). Consumers: DynamoDB errors, deaths after crediting or after recording the SMS, the SMS
provider refusing — only while a record is below its receive budget (``consumer_faults_allowed``).
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from payment_outbox_dev.local.faults import (
    Call,
    FailCall,
    FailEntries,
    FaultInjector,
    Kill,
    LoseResponse,
    RunFirst,
)

PAYMENT_API = "PaymentApiFunction"
#: How often one message may be killed around its publish.
KILLS_PER_MESSAGE = 2


@dataclass
class FaultRules:
    injector: FaultInjector
    #: The run's generator: the rules draw from it in turn with the orders, so a seed replays both.
    rng: random.Random
    fault_rate: float
    max_attempts: int
    refs: dict[str, str]
    relay_overlapping: Callable[[Any], None]
    #: Set by the run while the record being delivered may still fail without being dead-lettered.
    consumer_faults_allowed: bool = False
    #: Per outbox message: publish attempts failed by a fault, and deaths around its publish.
    attempt_faults: Counter[str] = field(default_factory=Counter)
    kills: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _within(self, spent: Counter[str], budget: int) -> Callable[[Call], bool]:
        """A rule's condition: every message of the call is below ``budget`` in ``spent``, which the
        call then charges (so a message is never faulted past what its retries absorb)."""

        def allowed(call: Call) -> bool:
            with self._lock:
                if any(spent[m] >= budget for m in call.message_ids):
                    return False
                spent.update(call.message_ids)
                return True

        return allowed

    def install(self) -> None:
        """Every rule, in the order they are tried (the first that fires wins)."""
        rng, injector = self.rng, self.injector
        attempts_allowed = self._within(self.attempt_faults, self.max_attempts - 2)
        kill_allowed = self._within(self.kills, KILLS_PER_MESSAGE)

        def payment_api(call: Call) -> bool:
            return call.function == PAYMENT_API

        sns_faults: list[tuple[Any, dict[str, Any]]] = [
            (FailCall("Throttling", 400, "Rate exceeded", kind="sns throttling"), {"when": attempts_allowed}),
            (FailCall("InternalError", 500, kind="sns internal error"), {"when": attempts_allowed}),
            (
                FailEntries(select=lambda _i, _e: rng.random() < 0.5, kind="sns batch entries failed"),
                {"when": attempts_allowed},
            ),
            (LoseResponse(kind="sns answer lost after publishing"), {"when": attempts_allowed}),
            (
                Kill(kind="crash after commit, before after-commit publish"),
                {"when": lambda c: payment_api(c) and kill_allowed(c)},
            ),
            (Kill(after=True, kind="crash after publish, before mark sent"), {"when": kill_allowed}),
            (
                RunFirst(self.relay_overlapping, kind="relay run overlapping the after-commit publish"),
                {"when": payment_api},
            ),
        ]
        rate = self.fault_rate / len(sns_faults)
        for fault, options in sns_faults:
            # The order matters: the chance is per rule, and the first rule that fires wins.
            injector.add(fault, "sns", "publish_batch", probability=rate, **options)

        def consumer(call: Call) -> bool:
            return self.consumer_faults_allowed

        def table(logical_id: str) -> Any:
            name = self.refs[logical_id]
            return lambda call: self.consumer_faults_allowed and call.table == name

        consumer_faults: list[tuple[Any, str, str, Any]] = [
            (
                FailCall("ThrottlingException", 400, kind="dynamodb ledger throttled"),
                "dynamodb",
                "transact_write_items",
                consumer,
            ),
            (
                FailCall("InternalServerError", 500, kind="dynamodb ledger internal error"),
                "dynamodb",
                "transact_write_items",
                consumer,
            ),
            (
                Kill(after=True, kind="points consumer killed after crediting (INPROGRESS left)"),
                "dynamodb",
                "transact_write_items",
                consumer,
            ),
            (
                FailCall(
                    "ProvisionedThroughputExceededException", 400, kind="dynamodb idempotency put failed"
                ),
                "dynamodb",
                "put_item",
                table("IdempotencyTable"),
            ),
            (
                FailCall("InternalServerError", 500, kind="dynamodb idempotency completion failed"),
                "dynamodb",
                "update_item",
                table("IdempotencyTable"),
            ),
            (
                # The intent before the send (retried: nothing went out) or the SENT record after it
                # (the SMS went out: the redelivery parks it as uncertain, the operator confirms it).
                FailCall("InternalServerError", 500, kind="dynamodb SMS delivery record write failed"),
                "dynamodb",
                "put_item",
                table("SmsDeliveriesTable"),
            ),
            (
                Kill(after=True, kind="SMS consumer killed after recording the SMS"),
                "dynamodb",
                "put_item",
                lambda call: table("SmsDeliveriesTable")(call) and _item_state(call) == "SENT",
            ),
            (FailCall("Throttling", 400, kind="SMS provider throttled"), "sns", "publish", consumer),
            # The provider takes the SMS and its answer never reaches the consumer: parked as uncertain,
            # never sent again by a delivery (the runbook's operator decides after the run).
            (LoseResponse(kind="SMS provider took the SMS, answer lost"), "sns", "publish", consumer),
            (
                Kill(after=True, kind="SMS consumer killed after the provider took the SMS"),
                "sns",
                "publish",
                consumer,
            ),
        ]
        rate = self.fault_rate / 3
        for fault, service, operation, when in consumer_faults:
            injector.add(fault, service, operation, when=when, probability=rate)


def _item_state(call: Any) -> str | None:
    """The ``state`` of the SMS delivery record a ``PutItem`` writes."""
    state = call.params.get("Item", {}).get("state", {}).get("S")
    return str(state) if state is not None else None
