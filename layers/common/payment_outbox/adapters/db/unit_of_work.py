"""A unit of work is one database transaction with the repositories bound to it."""

from __future__ import annotations

from types import TracebackType
from typing import Self

from sqlalchemy.orm import Session, sessionmaker

from payment_outbox.adapters.db.repositories import SqlOrderRepository, SqlOutboxRepository


class SqlUnitOfWork:
    orders: SqlOrderRepository
    outbox: SqlOutboxRepository

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._session_factory = session_factory

    def __enter__(self) -> Self:
        self._session = self._session_factory()
        self.orders = SqlOrderRepository(self._session)
        self.outbox = SqlOutboxRepository(self._session)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Anything not committed explicitly is rolled back: a failure can never half-apply.
        self._session.rollback()
        self._session.close()

    def commit(self) -> None:
        self._session.commit()
