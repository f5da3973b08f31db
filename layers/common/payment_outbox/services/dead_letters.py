"""DLQ redrive: each dead-letter queue's depth and oldest message, and moving its messages back to
the queue they came from — bounded, dry run first, audited like a requeue.

Safe because the consumers are idempotent on the envelope's messageId: a message that had in fact
been applied before it reached the DLQ (its delete lost, say) is recognised and applied once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from payment_outbox.ports import (
    AuditEntry,
    Clock,
    DeadLetterQueues,
    DeadLetterQueueState,
    OperationsUnitOfWorkFactory,
)

logger = logging.getLogger(__name__)

#: Messages one redrive call moves at most (an operator may ask for fewer).
MAX_REDRIVE_MESSAGES = 1000


@dataclass(frozen=True)
class RedriveResult:
    name: str
    dry_run: bool
    #: The DLQ's depth before the call.
    depth: int
    #: Moved (or, in a dry run, that would be: the depth up to the bound).
    count: int
    #: Refused by the target queue: still in the DLQ.
    failed: int
    max_messages: int
    #: Messages are left in the DLQ: call again.
    more: bool
    audit_id: int | None = None


class DeadLetterRedrive:
    def __init__(
        self,
        queues: DeadLetterQueues,
        uow: OperationsUnitOfWorkFactory,
        clock: Clock,
        *,
        max_messages: int = MAX_REDRIVE_MESSAGES,
    ) -> None:
        self._queues = queues
        self._uow = uow
        self._clock = clock
        self._max_messages = max_messages

    def states(self) -> list[DeadLetterQueueState]:
        return [self._queues.state(name) for name in self._queues.names()]

    def redrive(
        self, name: str, *, reason: str, actor: str, dry_run: bool, max_messages: int | None = None
    ) -> RedriveResult:
        bound = min(max_messages or self._max_messages, self._max_messages)
        state = self._queues.state(name)
        if dry_run:
            count = min(state.depth, bound)
            return RedriveResult(name, True, state.depth, count, 0, bound, state.depth > bound)
        move = self._queues.move(name, max_messages=bound)
        # Recorded after the move, whatever it moved: the audit says what happened, not what was meant.
        with self._uow() as tx:
            audit_id = tx.operations.record_audit(
                AuditEntry(
                    actor=actor,
                    action="dlq_redrive",
                    filters={
                        "dlq": name,
                        "dlqUrl": state.dlq_url,
                        "targetUrl": state.target_url,
                        "maxMessages": bound,
                        "depthBefore": state.depth,
                        "failed": move.failed,
                    },
                    affected_count=move.moved,
                    reason=reason,
                    created_at=self._clock.now(),
                )
            )
            tx.commit()
        more = move.failed > 0 or (not move.drained and self._queues.state(name).depth > 0)
        logger.warning(
            "dlq %s redriven by %s: %d moved, %d refused, more=%s, audit id %d",
            name,
            actor,
            move.moved,
            move.failed,
            more,
            audit_id,
        )
        return RedriveResult(name, False, state.depth, move.moved, move.failed, bound, more, audit_id)
