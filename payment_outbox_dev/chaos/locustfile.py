"""Load on the local stack: each simulated provider client creates an order and pays it with a signed
callback, as fast as the stack answers.

    locust -f payment_outbox_dev/chaos/locustfile.py --host http://127.0.0.1:3000
    make load                      # stacks of its own on MariaDB, headless, bounded, recorded

The callback is signed with $LOAD_WEBHOOK_SECRET (default: the local stack's secret), and the order
request with SigV4 by the local credentials of the stack's data folder ($LOAD_DATA_DIR, default
.local-stack), as an IAM caller. A paid order is one ``POST /payments/notify`` answered 200 with the
order PAID; any other answer is a failed request. The relay and consumers work behind it as usual.

With $LOAD_STATS_FILE set, the run's final statistics are written there as JSON when locust quits
(after its users stopped): what ``make load`` records.
"""

from __future__ import annotations

import json
import os
import random
import time
from functools import cache
from pathlib import Path
from typing import Any

from locust import HttpUser, constant, events, task
from locust.clients import ResponseContextManager
from locust.env import Environment

from payment_outbox.domain.signature import sign
from payment_outbox_dev.chaos.load import CREATE, NOTIFY, PERCENTILES
from payment_outbox_dev.local.auth import LocalCredentials
from payment_outbox_dev.local.callback import callback_body

SECRET = os.environ.get("LOAD_WEBHOOK_SECRET", "local-webhook-secret-for-this-machine-only")


@cache
def _credentials() -> LocalCredentials:
    """The stack's local credentials, read when the first client starts (never at import)."""
    return LocalCredentials.load_or_create(Path(os.environ.get("LOAD_DATA_DIR", ".local-stack")))


class PayingCustomer(HttpUser):
    wait_time = constant(0)

    @task
    def create_and_pay(self) -> None:
        user_id = random.randrange(1, 10_000)  # noqa: S311 - load data  # nosec B311
        amount = f"{random.randrange(1, 500)}.{random.randrange(100):02d}"  # noqa: S311  # nosec B311
        request = json.dumps({"userId": user_id, "phone": "+8613812345678", "amount": amount}).encode()
        headers = _credentials().sign(
            "POST", f"{self.host}/orders", request, {"Content-Type": "application/json"}
        )
        with self.client.post(
            "/orders", data=request, headers=headers, name=CREATE, catch_response=True
        ) as created:
            if created.status_code != 201:
                created.failure(_unexpected(created, "201"))
                return
            order = created.json()
        body = callback_body(order["orderNo"], order["amount"], order["currency"])
        with self.client.post(
            "/payments/notify",
            data=body,
            headers={
                "Content-Type": "application/json",
                "X-Signature": sign(body.encode(), SECRET, int(time.time())),
            },
            name=NOTIFY,
            catch_response=True,
        ) as paid:
            if paid.status_code != 200:
                paid.failure(_unexpected(paid, "200"))
            elif paid.json().get("status") != "PAID":
                paid.failure(f"answered the order {paid.json().get('status')}, not PAID")


def _unexpected(response: ResponseContextManager, wanted: str) -> str:
    """Why a request failed: no answer at all (the client's error), or another status than ``wanted``."""
    if response.status_code == 0:
        return f"no answer: {response.error!r}"
    return f"answered {response.status_code}, not {wanted}"


def _record_statistics(environment: Environment, **_: Any) -> None:
    path = os.environ.get("LOAD_STATS_FILE")
    if path:
        Path(path).write_text(json.dumps(final_statistics(environment), indent=1), encoding="utf-8")


# Once the users have stopped (locust's quitting event): the statistics are final.
events.quitting.add_listener(_record_statistics)  # type: ignore[no-untyped-call]  # locust leaves it untyped


def final_statistics(environment: Environment) -> dict[str, Any]:
    """Per request name: count, failures and locust's latency percentiles (ms); each failure, and each
    exception a client raised."""
    stats = environment.stats
    return {
        "requests": {
            entry.name: {
                "count": entry.num_requests,
                "failures": entry.num_failures,
                "latency_ms": {
                    f"p{round(pct * 100)}": entry.get_response_time_percentile(pct) for pct in PERCENTILES
                },
            }
            for entry in stats.entries.values()
        },
        "errors": [
            {
                "request": error.name,
                "error": str(error.parse_error(error.error)),
                "occurrences": error.occurrences,
            }
            for error in stats.errors.values()
        ],
        # A client that raised instead of recording its request (its task stopped there).
        "exceptions": [
            {"error": str(row["msg"]), "occurrences": int(row["count"])}
            for row in (environment.runner.exceptions.values() if environment.runner else [])
        ],
    }
