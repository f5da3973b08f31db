"""Secrets Manager secrets, cached per container."""

from __future__ import annotations

from payment_outbox.adapters import aws
from payment_outbox.adapters.secrets import CachedSecret
from payment_outbox.bootstrap import once


@once
def secret(secret_id: str) -> CachedSecret:
    return CachedSecret(secret_id, lambda: aws.client("secretsmanager"))
