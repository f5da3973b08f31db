"""Alembic migrations. Run them with ``python -m payment_outbox.migrations`` (or ``make migrate``)."""
