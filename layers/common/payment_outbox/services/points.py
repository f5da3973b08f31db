"""``credit_points``: apply a points message to the user's balance, exactly once per message."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from payment_outbox.domain.envelope import TOPIC_POINTS, Envelope, PointsPayload, parse_payload
from payment_outbox.errors import InvalidEnvelope
from payment_outbox.ports import Clock, PointsCredit, PointsLedger

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CreditResult:
    message_id: str
    user_id: int
    points: int
    #: False when the ledger already held this message's entry (a duplicate delivery).
    credited: bool

    def to_dict(self) -> dict[str, object]:
        return {
            "messageId": self.message_id,
            "userId": self.user_id,
            "points": self.points,
            "credited": self.credited,
        }


def credit_points(envelope: Envelope, ledger: PointsLedger, clock: Clock) -> CreditResult:
    if envelope.topic != TOPIC_POINTS:
        raise InvalidEnvelope(
            f"message {envelope.message_id} has topic {envelope.topic!r}, not {TOPIC_POINTS}"
        )
    payload = parse_payload(envelope, PointsPayload)
    credited = ledger.credit(
        PointsCredit(
            message_id=envelope.message_id,
            user_id=payload.user_id,
            order_id=payload.order_id,
            points=payload.points,
            credited_at=clock.now(),
        )
    )
    if not credited:
        logger.info("points already credited for messageId=%s; nothing to do", envelope.message_id)
    return CreditResult(envelope.message_id, payload.user_id, payload.points, credited)
