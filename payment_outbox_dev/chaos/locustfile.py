"""Load on the local stack: each simulated provider client creates an order and pays it with a signed
callback, as fast as the stack answers.

    locust -f payment_outbox_dev/chaos/locustfile.py --host http://127.0.0.1:3000
    make load                      # a stack of its own on MariaDB, headless, bounded, with a summary

The callback is signed with $LOAD_WEBHOOK_SECRET (default: the local stack's secret), and the order
request with SigV4 by the local credentials of the stack's data folder ($LOAD_DATA_DIR, default
.local-stack), as an IAM caller. A paid order is one ``POST /payments/notify`` answered 200; the relay
and consumers work behind it as usual.
"""

from __future__ import annotations

import json
import os
import random
import time
from functools import cache
from pathlib import Path

from locust import HttpUser, constant, task

from payment_outbox.domain.signature import sign
from payment_outbox_dev.chaos.load import CREATE, NOTIFY
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
        created = self.client.post("/orders", data=request, headers=headers, name=CREATE)
        if created.status_code != 201:
            return
        order = created.json()
        body = callback_body(order["orderNo"], order["amount"], order["currency"])
        self.client.post(
            "/payments/notify",
            data=body,
            headers={
                "Content-Type": "application/json",
                "X-Signature": sign(body.encode(), SECRET, int(time.time())),
            },
            name=NOTIFY,
        )
