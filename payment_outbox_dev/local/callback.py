"""A payment provider's callback for an order, as the tooling sends it: the body names the order's
number, amount and currency, paid now, under a transaction id of the order's own unless one is given.
The demos, the chaos runs and the load run all pay through it (the signature is each sender's own).
"""

from __future__ import annotations

import json
import time


def callback_body(order_no: str, amount: str, currency: str, transaction_id: str | None = None) -> str:
    return json.dumps(
        {
            "orderNo": order_no,
            "transactionId": transaction_id or f"txn-{order_no}",
            "amount": amount,
            "currency": currency,
            "paidAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    )
