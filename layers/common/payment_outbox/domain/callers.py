"""Who is calling, and for which user they may act.

Two ways a deployment knows its callers (``CALLER_IDENTITY``):

- ``iam``: a trusted order service signs its requests (SigV4) and states the user in the body; it may
  act for any user.
- ``cognito``: end users call with a user-pool token; the caller is the user the token names, may
  create orders only for that user and sees only that user's orders. Another user's order answers
  exactly like a missing one, so its existence is never revealed.
"""

from __future__ import annotations

from dataclasses import dataclass

from payment_outbox.domain.orders import Order
from payment_outbox.errors import ForbiddenForCaller


@dataclass(frozen=True)
class Caller:
    """A request's caller: ``user_id`` is the one user it may act for, or None for a trusted service."""

    user_id: int | None

    @classmethod
    def trusted_service(cls) -> Caller:
        return cls(None)

    @classmethod
    def user(cls, user_id: int) -> Caller:
        return cls(user_id)

    def require_may_act_for(self, user_id: int) -> None:
        """Raise ``ForbiddenForCaller`` (403) when this caller is a user other than ``user_id``."""
        if self.user_id is not None and self.user_id != user_id:
            raise ForbiddenForCaller(
                "the order names a user other than the caller",
                details=[{"field": "userId", "problem": "must be the authenticated user"}],
            )

    def may_see(self, order: Order) -> bool:
        return self.user_id is None or self.user_id == order.user_id
