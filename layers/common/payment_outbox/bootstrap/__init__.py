"""Composition root: builds each use case from settings and adapters, once per container, on first use.

Split by function so that a consumer never imports SQLAlchemy and the API never imports the
idempotency layer. Nothing runs at import time: tests start their AWS emulator and point
``DATABASE_URL`` at a test database before any client or engine exists. ``reset()`` forgets all.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any, TypeVar

from payment_outbox.adapters import aws
from payment_outbox.clock import SystemClock

F = TypeVar("F", bound=Callable[..., Any])

clock = SystemClock()
_built: list[Any] = []
_on_reset: list[Callable[[], None]] = []


def once(function: F) -> F:
    """Cache ``function`` for the life of the container; ``reset()`` clears it."""
    cached = cache(function)
    _built.append(cached)
    return cached  # type: ignore[return-value]


def on_reset(callback: Callable[[], None]) -> None:
    _on_reset.append(callback)


def reset() -> None:
    for callback in _on_reset:
        callback()
    for cached in _built:
        cached.cache_clear()
    aws.reset()
