"""Alembic migrations, run by the SchemaMigrator function on each deploy (by hand: ``make migrate``)."""
