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


def new_client(
    service: str,
    *,
    timeout_seconds: float | None = None,
    max_attempts: int | None = None,
    max_pool_connections: int | None = None,
) -> Any:
    """One boto3 client: botocore's standard retries unless ``max_attempts`` says otherwise;
    ``max_pool_connections``: one HTTP connection per concurrent call (botocore keeps 10)."""
    options: dict[str, Any] = {}
    if max_pool_connections is not None:
        options["max_pool_connections"] = max_pool_connections
    if timeout_seconds is not None:
        options["connect_timeout"] = timeout_seconds
        options["read_timeout"] = timeout_seconds
    if max_attempts is not None:
        options["retries"] = {"total_max_attempts": max_attempts, "mode": "standard"}
    session: Any = boto3.session.Session()  # untyped on purpose: the service is chosen at run time
    return session.client(service, config=Config(**options) if options else None)


class AwsClients:
    """The clients of one container. Adapters take ``factory(...)``: a getter that makes the client
    the first time it is called and returns that same client afterwards."""

    def __init__(self) -> None:
        self._made: dict[tuple[str, float | None, int | None, int | None], Any] = {}
        # The relay's publish threads may ask for their client at the same moment: make it once.
        self._lock = threading.Lock()

    def factory(
        self,
        service: str,
        *,
        timeout_seconds: float | None = None,
        max_attempts: int | None = None,
        max_pool_connections: int | None = None,
    ) -> Callable[[], Any]:
        key = (service, timeout_seconds, max_attempts, max_pool_connections)

        def client() -> Any:
            if key not in self._made:
                with self._lock:
                    if key not in self._made:
                        self._made[key] = new_client(
                            service,
                            timeout_seconds=timeout_seconds,
                            max_attempts=max_attempts,
                            max_pool_connections=max_pool_connections,
                        )
            return self._made[key]

        return client
