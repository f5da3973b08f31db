"""``purge_sent_messages``: delete SENT outbox rows past their retention, in bounded batches by primary
key, archiving each batch first when an archive is configured. Pending and failed rows are never
touched; nor is a row that was requeued between the select and the delete."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from payment_outbox.domain.outbox import OutboxMessage
from payment_outbox.ports import Clock, MessageArchive, OperationsUnitOfWorkFactory

logger = logging.getLogger(__name__)

#: One statement never names more rows than this.
MAX_BATCH = 1000
#: Keep this much of the Lambda's time unused, beyond twice the slowest batch so far.
SAFETY_MARGIN_MS = 5_000


@dataclass
class PurgeReport:
    purged: int = 0
    archived: int = 0
    batches: int = 0
    archive_objects: list[str] = field(default_factory=list)
    #: True when the run stopped because time ran low, with rows possibly still due for purging.
    out_of_time: bool = False


class OutboxJanitor:
    def __init__(
        self,
        uow: OperationsUnitOfWorkFactory,
        clock: Clock,
        *,
        retention: timedelta,
        archive: MessageArchive | None = None,
        batch_size: int = MAX_BATCH,
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._retention = retention
        self._archive = archive
        self._batch_size = max(1, min(batch_size, MAX_BATCH))

    def purge_sent_messages(self, remaining_ms: Callable[[], int] | None = None) -> PurgeReport:
        report = PurgeReport()
        now = self._clock.now()
        cutoff = now - self._retention
        slowest_ms = 0.0
        while True:
            if remaining_ms is not None and remaining_ms() <= SAFETY_MARGIN_MS + 2 * slowest_ms:
                report.out_of_time = True
                break
            started = time.monotonic()
            with self._uow() as tx:
                ids = tx.operations.sent_ids_before(cutoff, limit=self._batch_size)
                rows = tx.operations.messages_by_ids(ids) if ids and self._archive is not None else []
            if not ids:
                break
            if self._archive is not None:
                # Written before the delete: if the archive fails, the rows stay for the next run.
                key = f"sent/{now:%Y/%m/%d}/{now:%Y%m%dT%H%M%S}-{ids[0]}-{ids[-1]}.jsonl"
                report.archive_objects.append(self._archive.store(key, [_archive_line(r) for r in rows]))
                report.archived += len(rows)
            with self._uow() as tx:
                report.purged += tx.operations.delete_sent(ids, sent_before=cutoff)
                tx.commit()
            report.batches += 1
            slowest_ms = max(slowest_ms, (time.monotonic() - started) * 1000)
            if len(ids) < self._batch_size:
                break
        logger.info(
            "outbox purge: %d row(s) deleted in %d batch(es), %d archived, cutoff %s",
            report.purged,
            report.batches,
            report.archived,
            cutoff.isoformat(),
        )
        return report


def _archive_line(message: OutboxMessage) -> str:
    return json.dumps(
        {
            "id": message.id,
            "messageId": message.message_id,
            "topic": message.topic,
            "businessKey": message.business_key,
            "businessType": message.business_type,
            "status": int(message.status),
            "retryCount": message.attempts,
            "createTime": _iso(message.create_time),
            "updateTime": _iso(message.update_time),
            "nextRetryAt": _iso(message.due_at),
            "sentTime": _iso(message.sent_time),
            "lastError": message.last_error,
            "content": message.content,
        },
        separators=(",", ":"),
    )


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat() + "Z"
