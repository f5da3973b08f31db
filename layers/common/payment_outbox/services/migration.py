"""``migrate_schema``: bring the database to the newest schema; safe to run any number of times."""

from __future__ import annotations

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
