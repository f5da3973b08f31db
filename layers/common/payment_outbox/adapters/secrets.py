"""Secrets Manager reads with a short in-container cache (rotation is picked up within the TTL)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from payment_outbox.domain.signature import MIN_SECRET_LENGTH
from payment_outbox.errors import ConfigurationError

DEFAULT_TTL_SECONDS = 300.0


class CachedSecret:
    def __init__(
        self,
        secret_id: str,
        client_factory: Callable[[], Any],
        *,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._secret_id = secret_id
        self._client_factory = client_factory
        self._ttl = ttl_seconds
        self._monotonic = monotonic
        self._value: str | None = None
        self._fetched_at = 0.0

    def value(self) -> str:
        if self._value is None or self._monotonic() - self._fetched_at > self._ttl:
            response = self._client_factory().get_secret_value(SecretId=self._secret_id)
            secret = response.get("SecretString")
            if not secret:
                raise ConfigurationError(f"secret {self._secret_id} has no SecretString")
            self._value, self._fetched_at = secret, self._monotonic()
        return self._value

    def invalidate(self) -> None:
        self._value = None


class ConfiguredWebhookSecret:
    """A webhook secret given as a plain value (local runs and tests)."""

    def __init__(self, secret: str) -> None:
        self._secret = secret

    def current(self) -> list[str]:
        return [self._secret]


class SecretsManagerWebhookSecrets:
    """The webhook secret from Secrets Manager, re-read when its cache expires (rotation)."""

    def __init__(self, secret: CachedSecret) -> None:
        self._secret = secret

    def current(self) -> list[str]:
        return webhook_secrets(self._secret.value())


def webhook_secrets(raw: str) -> list[str]:
    """A webhook secret is a plain string, or JSON ``{"current": ..., "previous": ...}`` mid-rotation.

    ``ConfigurationError`` when any of them is shorter than ``MIN_SECRET_LENGTH``: callbacks then fail
    closed (500, nothing written) until the secret is fixed, and the error log says why.
    """
    try:
        document = json.loads(raw)
    except ValueError:
        document = None
    if isinstance(document, dict):
        found = [str(document[k]) for k in ("current", "previous") if document.get(k)]
    else:
        found = [raw]
    if not found or any(len(secret) < MIN_SECRET_LENGTH for secret in found):
        raise ConfigurationError(f"every webhook secret must be at least {MIN_SECRET_LENGTH} characters")
    return found


def database_credentials(raw: str) -> tuple[str, str]:
    """Username and password from an RDS-style JSON secret."""
    try:
        document = json.loads(raw)
        return str(document["username"]), str(document["password"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigurationError("database secret must be JSON with username and password") from exc
