"""boto3 clients for one Lambda container, each created on first use and then kept.

Lazy creation matters: a client made before a test starts its AWS emulator would talk to real AWS,
and an unused client only costs cold-start time. ``AWS_ENDPOINT_URL`` points them at a local emulator.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config

from payment_outbox.timeouts import CallBudget


def new_client(service: str, *, budget: CallBudget, max_pool_connections: int | None = None) -> Any:
    """One boto3 client within ``budget``: botocore's standard retry mode with the budget's attempts
    and timeouts, never botocore's defaults; ``max_pool_connections``: one HTTP connection per
    concurrent call (botocore keeps 10)."""
    options: dict[str, Any] = {
        "connect_timeout": budget.connect_timeout_seconds,
        "read_timeout": budget.read_timeout_seconds,
        "retries": {"total_max_attempts": budget.max_attempts, "mode": "standard"},
    }
    if max_pool_connections is not None:
        options["max_pool_connections"] = max_pool_connections
    if service in FORM_ENCODED_SERVICES:
        options["parameter_validation"] = False
    session: Any = boto3.session.Session()  # untyped on purpose: the service is chosen at run time
    client = session.client(service, config=Config(**options))
    if service in FORM_ENCODED_SERVICES:
        client.meta.events.register(f"before-sign.{service}", encode_form_body_once)
    return client


#: Services that speak AWS's query protocol: a request is a form of many small parameters (a
#: PublishBatch has one for every entry's id and body and for each attribute's name, type and value),
#: which the service checks on arrival, answering a bad one with InvalidParameter. Their clients skip
#: botocore's own pass over every parameter, and url-encode the form once instead of twice: together a
#: large share of a PublishBatch call's CPU, and so of the relay's (docs/benchmarks.md).
FORM_ENCODED_SERVICES = frozenset({"sns"})


def encode_form_body_once(request: Any, **_: Any) -> None:
    """botocore url-encodes a form body each time the request is prepared: once to sign it, again to
    send it. Encoded here, before signing, the same bytes are signed and sent."""
    if isinstance(request.data, dict):
        request.data = request.body


class AwsClients:
    """The clients of one container. Adapters take ``factory(...)``: a getter that makes the client
    the first time it is called and returns that same client afterwards."""

    def __init__(self) -> None:
        self._made: dict[tuple[str, CallBudget, int | None], Any] = {}
        # The relay's publish threads may ask for their client at the same moment: make it once.
        self._lock = threading.Lock()

    def factory(
        self, service: str, budget: CallBudget, *, max_pool_connections: int | None = None
    ) -> Callable[[], Any]:
        key = (service, budget, max_pool_connections)

        def client() -> Any:
            if key not in self._made:
                with self._lock:
                    if key not in self._made:
                        self._made[key] = new_client(
                            service, budget=budget, max_pool_connections=max_pool_connections
                        )
            return self._made[key]

        return client
