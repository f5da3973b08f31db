"""The relay's baselines: the naive seed-style relay (one Publish and one UPDATE/commit per row) and
bare PublishBatch calls, used by the throughput figures against the latency SNS."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, select, update

from payment_outbox.adapters.db.schema import MessageRecordRow
from payment_outbox.adapters.sns_publisher import MAX_BATCH_ENTRIES, message_attributes
from payment_outbox.clock import SystemClock
from payment_outbox.domain.outbox import OutboxMessage, OutboxStatus


def real_relay_drain() -> int:
    """The deployed relay, as the scheduled handler builds it: SqlUnitOfWork + SnsPublisher."""
    from payment_outbox.composition.relay import build_scheduled_relay

    relay = build_scheduled_relay().relay
    published = 0
    while True:
        report = relay.relay_due_messages()
        published += report.published
        if report.claimed == 0:
            return published


def naive_relay_drain(engine: Engine, topic_arn: str, batch: int = 100) -> int:
    """The seed's way: read pending rows, then per row one SNS Publish and one UPDATE in its own commit."""
    import boto3

    sns: Any = boto3.client("sns")
    published = 0
    clock = SystemClock()
    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                select(
                    MessageRecordRow.id,
                    MessageRecordRow.message_id,
                    MessageRecordRow.topic,
                    MessageRecordRow.content,
                )
                .where(
                    MessageRecordRow.status == int(OutboxStatus.PENDING),
                    MessageRecordRow.next_retry_at <= clock.now(),
                )
                .order_by(MessageRecordRow.id)
                .limit(batch)
            ).all()
        if not rows:
            return published
        for row in rows:
            sns.publish(
                TopicArn=topic_arn,
                Message=row.content,
                MessageAttributes={
                    "topic": {"DataType": "String", "StringValue": row.topic},
                    "messageId": {"DataType": "String", "StringValue": row.message_id},
                },
            )
            now = clock.now()
            with engine.begin() as conn:
                conn.execute(
                    update(MessageRecordRow)
                    .where(MessageRecordRow.id == row.id)
                    .values(status=int(OutboxStatus.SENT), sent_time=now, update_time=now)
                )
            published += 1


def publish_chunk(sns: Any, topic_arn: str, chunk: Sequence[OutboxMessage]) -> int:
    """One PublishBatch of up to 10 payloads, no database: the unit of every limit loop."""
    response = sns.publish_batch(
        TopicArn=topic_arn,
        PublishBatchRequestEntries=[
            {"Id": str(i), "Message": m.content, "MessageAttributes": message_attributes(m)}
            for i, m in enumerate(chunk)
        ],
    )
    if response.get("Failed"):
        raise RuntimeError(f"PublishBatch failed entries: {response['Failed']}")
    return len(chunk)


def publish_batch_limit(messages: Sequence[OutboxMessage], topic_arn: str) -> int:
    """The ceiling: the same payloads in PublishBatch calls of 10, one after another, no database."""
    import boto3

    sns: Any = boto3.client("sns")
    for start in range(0, len(messages), MAX_BATCH_ENTRIES):
        publish_chunk(sns, topic_arn, messages[start : start + MAX_BATCH_ENTRIES])
    return len(messages)
