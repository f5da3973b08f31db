"""boto3 clients, created on first use and cached per container.

Lazy creation matters: a client made before a test starts its AWS emulator would talk to real AWS,
and an unused client only costs cold-start time. ``AWS_ENDPOINT_URL`` points them at a local emulator.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import boto3
from botocore.config import Config


@cache
def client(service: str, *, timeout_seconds: float | None = None, max_attempts: int | None = None) -> Any:
    options: dict[str, Any] = {}
    if timeout_seconds is not None:
        options["connect_timeout"] = timeout_seconds
        options["read_timeout"] = timeout_seconds
    if max_attempts is not None:
        options["retries"] = {"total_max_attempts": max_attempts, "mode": "standard"}
    session: Any = boto3.session.Session()  # untyped on purpose: the service is chosen at run time
    return session.client(service, config=Config(**options) if options else None)


def reset() -> None:
    client.cache_clear()
