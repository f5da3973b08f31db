"""Failure triage: failed and retrying rows grouped by the fingerprint of their error, and one decision
per group — requeue its FAILED rows, or mark them resolved — with a dry run, the requeue's bounds and
an audit row.

Retrying rows are shown (an incident in progress) but never changed: they are the relay's, which
retries them on its own. A resolved row stays FAILED (the seed's status codes are kept) and leaves
triage; a later requeue makes it pending again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from payment_outbox.domain.outbox import OutboxStatus
from payment_outbox.domain.triage import fingerprint
from payment_outbox.errors import FailureGroupNotFound
from payment_outbox.ports import AuditEntry, Clock, ErrorRow, OperationsUnitOfWorkFactory
from payment_outbox.services.operations import MAX_REQUEUE_ROWS, SAMPLE_SIZE

logger = logging.getLogger(__name__)

#: Rows read per triage call: the grouping happens here (the normalisation is not SQL any database
#: shares), so the read is bounded and the answer says when it was cut short.
DEFAULT_SCAN_LIMIT = 20_000


@dataclass(frozen=True)
class FailureGroup:
    fingerprint: str
    #: The error with its ids, numbers and timestamps taken out.
    pattern: str
    failed: int
    retrying: int
    first_seen: datetime
    last_seen: datetime
    topics: list[str]
    sample_message_id: str
    #: One row's error as recorded.
    sample_error: str | None

    @property
    def count(self) -> int:
        return self.failed + self.retrying


@dataclass(frozen=True)
class TriageReport:
    groups: list[FailureGroup]
    #: Rows read, and whether more rows were there than one call reads.
    scanned: int
    truncated: bool
    scan_limit: int
    at: datetime


@dataclass(frozen=True)
class GroupActionResult:
    action: str
    fingerprint: str
    pattern: str
    dry_run: bool
    #: FAILED rows changed (or, in a dry run, that would be).
    count: int
    message_ids: list[str]
    #: Rows of the group still retrying: the relay's, left alone.
    retrying_left: int
    max_rows: int
    more: bool
    audit_id: int | None = None


class FailureTriage:
    def __init__(
        self,
        uow: OperationsUnitOfWorkFactory,
        clock: Clock,
        *,
        max_rows: int = MAX_REQUEUE_ROWS,
        scan_limit: int = DEFAULT_SCAN_LIMIT,
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._max_rows = min(max_rows, MAX_REQUEUE_ROWS)
        self._scan_limit = scan_limit

    def groups(self) -> TriageReport:
        """Every group, the largest first (then the most recent)."""
        now = self._clock.now()
        with self._uow() as tx:
            rows = tx.operations.error_rows(limit=self._scan_limit + 1)
        truncated = len(rows) > self._scan_limit
        rows = rows[: self._scan_limit]
        groups = [_group(fp, members) for fp, members in _by_fingerprint(rows).items()]
        groups.sort(key=lambda g: (-g.count, -g.last_seen.timestamp(), g.fingerprint))
        return TriageReport(groups, len(rows), truncated, self._scan_limit, now)

    def requeue_group(
        self, group: str, *, reason: str, actor: str, dry_run: bool, reset_attempts: bool = False
    ) -> GroupActionResult:
        """Requeue the group's FAILED rows, as ``OutboxOperations.requeue`` does for a filter."""
        return self._act(
            "requeue_group", group, reason=reason, actor=actor, dry_run=dry_run, reset=reset_attempts
        )

    def resolve_group(self, group: str, *, reason: str, actor: str, dry_run: bool) -> GroupActionResult:
        """Mark the group's FAILED rows resolved: they stay FAILED and leave triage."""
        return self._act("resolve_group", group, reason=reason, actor=actor, dry_run=dry_run, reset=False)

    def _act(
        self, action: str, group: str, *, reason: str, actor: str, dry_run: bool, reset: bool
    ) -> GroupActionResult:
        now = self._clock.now()
        with self._uow() as tx:
            rows = tx.operations.error_rows(limit=self._scan_limit)
            members = _by_fingerprint(rows).get(group)
            if not members:
                raise FailureGroupNotFound(f"no failed or retrying message has error fingerprint {group}")
            pattern = fingerprint(members[0].last_error)[1]
            failed = [r for r in members if r.status is OutboxStatus.FAILED]
            retrying = len(members) - len(failed)
            chosen = failed[: self._max_rows]
            more = len(failed) > self._max_rows
            sample = [r.message_id for r in chosen[:SAMPLE_SIZE]]
            if dry_run:
                return GroupActionResult(
                    action, group, pattern, True, len(chosen), sample, retrying, self._max_rows, more
                )
            ids = [r.id for r in chosen]
            if action == "requeue_group":
                changed = tx.operations.requeue(ids, now=now, include_sent=False, reset_attempts=reset)
            else:
                changed = tx.operations.mark_resolved(ids, now=now)
            audit_id = tx.operations.record_audit(
                AuditEntry(
                    actor=actor,
                    action=action,
                    filters={
                        "fingerprint": group,
                        "pattern": pattern,
                        "resetAttempts": reset,
                        "maxRows": self._max_rows,
                        "before": _history(chosen),
                    },
                    affected_count=changed,
                    reason=reason,
                    created_at=now,
                )
            )
            tx.commit()
        logger.warning(
            "outbox %s by %s: fingerprint %s, %d row(s), more=%s, audit id %d",
            action,
            actor,
            group,
            changed,
            more,
            audit_id,
        )
        return GroupActionResult(
            action, group, pattern, False, changed, sample, retrying, self._max_rows, more, audit_id
        )


def _by_fingerprint(rows: list[ErrorRow]) -> dict[str, list[ErrorRow]]:
    groups: dict[str, list[ErrorRow]] = {}
    for row in rows:
        groups.setdefault(fingerprint(row.last_error)[0], []).append(row)
    return groups


def _group(group: str, members: list[ErrorRow]) -> FailureGroup:
    failed = sum(1 for r in members if r.status is OutboxStatus.FAILED)
    latest = max(members, key=lambda r: (r.seen_at, r.id))
    return FailureGroup(
        fingerprint=group,
        pattern=fingerprint(latest.last_error)[1],
        failed=failed,
        retrying=len(members) - failed,
        first_seen=min(r.seen_at for r in members),
        last_seen=latest.seen_at,
        topics=sorted({r.topic for r in members}),
        sample_message_id=latest.message_id,
        sample_error=latest.last_error,
    )


def _history(rows: list[ErrorRow]) -> dict[str, list[str]]:
    """Each row's state before the action, kept in the audit row: message ids by "<status>:<retries>"."""
    groups: dict[str, list[str]] = {}
    for r in rows:
        groups.setdefault(f"{r.status.name}:{r.attempts}", []).append(r.message_id)
    return groups
