"""``migrate_schema``: bring the database to the newest schema; safe to run any number of times.
``is_rollback``: whether a deploy asks for an older schema than the one it replaces."""

from __future__ import annotations

from collections.abc import Sequence

from payment_outbox.ports import ApplicationUser, SchemaMigrations


def migrate_schema(
    schema: SchemaMigrations,
    application_user: tuple[ApplicationUser, tuple[str, str]] | None = None,
) -> str:
    """Apply pending migrations and return the revision the database is now at ("none" without one).
    With ``application_user`` (the user port and its username and password), also keep the user the
    functions connect as, with row access only, in step with its secret."""
    schema.upgrade_to_head()
    if application_user is not None:
        users, (username, password) = application_user
        users.ensure(username, password)
    return schema.current_revision() or "none"


def is_rollback(old: str | None, new: str | None, known: Sequence[str]) -> bool:
    """True when a deploy replacing schema revision ``old`` asks for ``new``, an older one: a stack
    rolling back, whose code (this code) predates ``old`` — which it may not even know. The newer
    schema stays: migrations only expand while a previous release may still run (a contract step
    comes a release later), so the older code works on it; nothing must be undone or re-run."""
    if old is None or new is None or old == new or new not in known:
        return False
    return old not in known or known.index(old) > known.index(new)
