"""The stack's dead-letter queues on SQS: their depth and oldest message, and a bounded move back.

The move is receive → send to the target → delete from the DLQ, ten messages at a time, rather than
SQS's own message move task (StartMessageMoveTask): a task moves *everything* at a rate, cannot be
bounded by a count, and only returns messages to the queue whose redrive policy names the DLQ — not
to a subscribed queue, which is where an SNS subscription's DLQ must go. A message is deleted from
the DLQ only after the target accepted it: a move that dies midway leaves a message in both places
at worst, and the consumers, idempotent on the envelope's messageId, apply it once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from payment_outbox.errors import DeadLetterQueueNotFound
from payment_outbox.ports import DeadLetterMove, DeadLetterQueueState

#: SQS receives, sends and deletes at most ten messages a request.
_BATCH = 10
#: Long enough for one batch to be sent and deleted; a message left behind returns after it.
_MOVE_VISIBILITY_SECONDS = 60


class SqsDeadLetterQueues:
    def __init__(self, client_factory: Callable[[], Any], pairs: Sequence[tuple[str, str, str]]) -> None:
        """``pairs``: (name, DLQ URL, target queue URL)."""
        self._client_factory = client_factory
        self._pairs = {name: (dlq, target) for name, dlq, target in pairs}

    def names(self) -> list[str]:
        return list(self._pairs)

    def _pair(self, name: str) -> tuple[str, str]:
        if name not in self._pairs:
            raise DeadLetterQueueNotFound(f"no dead-letter queue named {name!r}")
        return self._pairs[name]

    def state(self, name: str) -> DeadLetterQueueState:
        dlq, target = self._pair(name)
        sqs = self._client_factory()
        attributes = sqs.get_queue_attributes(
            QueueUrl=dlq,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        depth = int(attributes.get("ApproximateNumberOfMessages", 0))
        oldest, peeked = None, 0
        if depth:
            # A peek: received and made visible again at once (a DLQ has no consumer to disturb).
            messages = sqs.receive_message(
                QueueUrl=dlq,
                MaxNumberOfMessages=_BATCH,
                VisibilityTimeout=0,
                AttributeNames=["SentTimestamp"],
            ).get("Messages", [])
            peeked = len(messages)
            sent = [
                int(m["Attributes"]["SentTimestamp"])
                for m in messages
                if "SentTimestamp" in m.get("Attributes", {})
            ]
            if sent:
                oldest = datetime.fromtimestamp(min(sent) / 1000, UTC).replace(tzinfo=None)
        return DeadLetterQueueState(
            name=name,
            dlq_url=dlq,
            target_url=target,
            depth=depth,
            in_flight=int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
            oldest_sent_at=oldest,
            peeked=peeked,
        )

    def move(self, name: str, *, max_messages: int) -> DeadLetterMove:
        dlq, target = self._pair(name)
        sqs = self._client_factory()
        fifo_target = target.endswith(".fifo")
        moved = failed = 0
        drained = False
        while moved + failed < max_messages:
            messages = sqs.receive_message(
                QueueUrl=dlq,
                MaxNumberOfMessages=min(_BATCH, max_messages - moved - failed),
                VisibilityTimeout=_MOVE_VISIBILITY_SECONDS,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            if not messages:
                drained = True
                break
            by_id = {str(i): m for i, m in enumerate(messages)}
            answer = sqs.send_message_batch(
                QueueUrl=target, Entries=[_entry(i, m, fifo_target) for i, m in by_id.items()]
            )
            accepted = [by_id[ok["Id"]] for ok in answer.get("Successful", [])]
            failed += len(messages) - len(accepted)
            if accepted:
                sqs.delete_message_batch(
                    QueueUrl=dlq,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(accepted)
                    ],
                )
                # A copy whose delete failed stays in the DLQ too: moved, and harmless if moved again.
                moved += len(accepted)
            if len(accepted) < len(messages):
                break  # the target refuses: stop, what it refused is still in the DLQ
        return DeadLetterMove(moved=moved, failed=failed, drained=drained)


def _entry(entry_id: str, message: dict[str, Any], fifo_target: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"Id": entry_id, "MessageBody": message["Body"]}
    attributes = {
        name: {k: v for k, v in value.items() if k in ("DataType", "StringValue", "BinaryValue")}
        for name, value in message.get("MessageAttributes", {}).items()
    }
    if attributes:
        entry["MessageAttributes"] = attributes
    if fifo_target:
        system = message.get("Attributes", {})
        entry["MessageGroupId"] = system.get("MessageGroupId") or message["MessageId"]
        # A fresh deduplication id: the original's may still be within its 5-minute window.
        entry["MessageDeduplicationId"] = f"redrive-{message['MessageId']}"[:128]
    return entry
