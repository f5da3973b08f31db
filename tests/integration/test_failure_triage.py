"""Failure triage through the admin API, on both databases (the demo's SQLite and MariaDB): failed and
retrying rows grouped by error fingerprint; requeue or mark-resolved by group, dry run first, bounded,
audited; retrying rows left to the relay."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from payment_outbox.domain.envelope import TOPIC_POINTS, TOPIC_SMS
from payment_outbox.domain.triage import fingerprint
from tests.integration.test_admin_api import FAILED, OPERATOR, PENDING, SENT, add_row, admin, now, rows_by_id
from tests.support import LocalSystem

pytestmark = pytest.mark.integration

OUTAGE = "InternalError: request {} failed at 2026-12-0{}T10:1{}:00.123Z after {} attempts"
TOO_BIG = "message is {} bytes; SNS accepts at most 262144"


def mixed_failures(system: LocalSystem) -> dict[str, list[str]]:
    """Two causes across both topics, failed and retrying, with ids, numbers and times that differ
    row by row; plus rows triage must ignore (sent with an old error, pending with no error)."""
    t0 = now() - timedelta(hours=1)
    retry_at = now() + timedelta(minutes=5)
    minutes = iter(range(7))

    def row(status: int, topic: str, attempts: int, last_error: str) -> str:
        """Each row written a minute after the one before; a pending one is retrying, due in 5 minutes."""
        return add_row(
            system,
            status=status,
            topic=topic,
            attempts=attempts,
            created=t0 + timedelta(minutes=next(minutes)),
            due_at=retry_at if status == PENDING else None,
            last_error=last_error,
        )

    outage = [
        row(FAILED, TOPIC_POINTS, 8, OUTAGE.format("5f0c1d2e-aaaa-bbbb-cccc-1234567890ab", 1, 1, 8)),
        row(FAILED, TOPIC_SMS, 8, OUTAGE.format("0b1c2d3e-1111-2222-3333-444455556666", 2, 2, 8)),
        row(FAILED, TOPIC_POINTS, 8, OUTAGE.format("99999999-8888-7777-6666-555544443333", 3, 3, 8)),
    ]
    retrying = [
        row(PENDING, TOPIC_POINTS, 3, OUTAGE.format("12345678-1234-1234-1234-123456789012", 4, 4, 3)),
        row(PENDING, TOPIC_SMS, 1, OUTAGE.format("abcdefab-1234-1234-1234-123456789012", 5, 5, 1)),
    ]
    too_big = [
        row(FAILED, TOPIC_POINTS, 1, TOO_BIG.format(300001)),
        row(FAILED, TOPIC_POINTS, 1, TOO_BIG.format(262145)),
    ]
    ignored = [
        add_row(system, status=SENT, attempts=2, last_error=OUTAGE.format("x", 1, 1, 2)),
        add_row(system, status=PENDING, due_at=retry_at),
    ]
    return {"outage": outage, "retrying": retrying, "too_big": too_big, "ignored": ignored}


def groups_by_pattern(system: LocalSystem) -> dict[str, dict[str, Any]]:
    status, body = admin(system, "GET", "/admin/failures")
    assert status == 200, body
    return {g["pattern"]: g for g in body["groups"]}


def audit_rows(system: LocalSystem) -> list[dict[str, Any]]:
    with system.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(text("SELECT * FROM outbox_audit ORDER BY id"))]


OUTAGE_PATTERN = "InternalError: request <id> failed at <ts> after <n> attempts"
TOO_BIG_PATTERN = "message is <n> bytes; SNS accepts at most <n>"


def test_failures_group_by_fingerprint_with_counts_times_topics_and_a_sample(any_system: LocalSystem) -> None:
    # Given failed and retrying rows of two causes, and rows triage ignores
    rows = mixed_failures(any_system)
    # When an operator asks for the failure groups
    status, body = admin(any_system, "GET", "/admin/failures")
    # Then there are exactly two groups, the larger first
    assert status == 200, body
    assert [g["pattern"] for g in body["groups"]] == [OUTAGE_PATTERN, TOO_BIG_PATTERN]
    assert (body["scanned"], body["truncated"]) == (7, False)
    outage, too_big = body["groups"]
    # And each counts its failed and retrying rows, names its topics, and shows one real error
    assert (outage["count"], outage["failed"], outage["retrying"]) == (5, 3, 2)
    assert outage["topics"] == [TOPIC_POINTS, TOPIC_SMS]
    assert (
        outage["fingerprint"]
        == fingerprint(OUTAGE.format("00000000-0000-4000-8000-000000000000", 9, 9, 9))[0]
    )
    assert outage["sampleMessageId"] in rows["outage"] + rows["retrying"]
    assert outage["sampleError"].startswith("InternalError: request ")
    assert (too_big["count"], too_big["failed"], too_big["retrying"], too_big["topics"]) == (
        2,
        2,
        0,
        [TOPIC_POINTS],
    )
    # And first/last seen are the group's oldest and newest failure
    by_id = rows_by_id(any_system)
    # (SQLite hands DATETIME back as text)
    seen = sorted(
        datetime.fromisoformat(str(by_id[m]["update_time"])) for m in rows["outage"] + rows["retrying"]
    )
    assert outage["firstSeen"] == seen[0].isoformat(timespec="milliseconds") + "Z"
    assert outage["lastSeen"] == seen[-1].isoformat(timespec="milliseconds") + "Z"


def test_requeue_by_group_dry_run_first_then_only_that_groups_failed_rows_audited(
    any_system: LocalSystem,
) -> None:
    rows = mixed_failures(any_system)
    group = groups_by_pattern(any_system)[OUTAGE_PATTERN]["fingerprint"]
    before = rows_by_id(any_system)
    path = f"/admin/failures/{group}/requeue"

    # When the operator rehearses the requeue
    status, dry = admin(any_system, "POST", path, body={"dryRun": True, "reason": "SNS outage over"})
    # Then it names the three FAILED rows, leaves the two retrying ones to the relay, and changes nothing
    assert status == 200, dry
    assert (dry["dryRun"], dry["wouldAffect"], dry["retryingLeft"], dry["auditId"]) == (True, 3, 2, None)
    assert sorted(dry["messageIds"]) == sorted(rows["outage"])
    assert rows_by_id(any_system) == before
    assert audit_rows(any_system) == []

    # When it is done for real
    status, done = admin(any_system, "POST", path, body={"dryRun": False, "reason": "SNS outage over"})
    # Then exactly those rows are pending and due, keep their attempts and get a new requeue generation
    assert status == 200, done
    assert (done["affected"], done["more"]) == (3, False)
    after = rows_by_id(any_system)
    for message_id in rows["outage"]:
        assert (after[message_id]["status"], after[message_id]["retry_count"]) == (PENDING, 8)
        assert datetime.fromisoformat(str(after[message_id]["next_retry_at"])) <= now()
        assert after[message_id]["requeue_count"] == 1
    for message_id in rows["retrying"] + rows["too_big"] + rows["ignored"]:
        assert after[message_id] == before[message_id]
    # And one audit row says who, why, which group and each row's state before
    [audit] = audit_rows(any_system)
    assert (audit["id"], audit["actor"], audit["action"], audit["affected_count"]) == (
        done["auditId"],
        OPERATOR,
        "requeue_group",
        3,
    )
    assert audit["reason"] == "SNS outage over"
    filters = json.loads(audit["filters"])
    assert (filters["fingerprint"], filters["pattern"]) == (group, OUTAGE_PATTERN)
    assert sorted(filters["before"]["FAILED:8"]) == sorted(rows["outage"])
    # And the group now holds only its retrying rows
    assert groups_by_pattern(any_system)[OUTAGE_PATTERN]["failed"] == 0


def test_resolve_by_group_keeps_rows_failed_and_takes_them_out_of_triage(any_system: LocalSystem) -> None:
    rows = mixed_failures(any_system)
    group = groups_by_pattern(any_system)[TOO_BIG_PATTERN]["fingerprint"]
    path = f"/admin/failures/{group}/resolve"
    # When the operator rehearses, then resolves, the too-big group
    status, dry = admin(any_system, "POST", path, body={"dryRun": True, "reason": "reissued by hand"})
    assert (status, dry["wouldAffect"]) == (200, 2)
    assert all(rows_by_id(any_system)[m]["resolved_at"] is None for m in rows["too_big"])
    status, done = admin(any_system, "POST", path, body={"dryRun": False, "reason": "reissued by hand"})
    # Then its rows stay FAILED, are marked resolved, and the group is gone from triage
    assert (status, done["affected"]) == (200, 2)
    after = rows_by_id(any_system)
    assert all(after[m]["status"] == FAILED and after[m]["resolved_at"] is not None for m in rows["too_big"])
    assert TOO_BIG_PATTERN not in groups_by_pattern(any_system)
    assert [(a["action"], a["affected_count"]) for a in audit_rows(any_system)] == [("resolve_group", 2)]
    # And resolving it again finds no such group
    status, again = admin(any_system, "POST", path, body={"dryRun": False, "reason": "reissued by hand"})
    assert (status, again["error"]["code"]) == (404, "failure_group_not_found")


def test_a_group_action_is_bounded_and_says_there_is_more(
    any_system: LocalSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an admin API that changes at most 2 rows a call, and a group of 3 FAILED rows
    monkeypatch.setenv("ADMIN_REQUEUE_MAX_ROWS", "2")
    rows = mixed_failures(any_system)
    group = groups_by_pattern(any_system)[OUTAGE_PATTERN]["fingerprint"]
    # When the group is requeued twice
    path, body = f"/admin/failures/{group}/requeue", {"dryRun": False, "reason": "outage over"}
    _, first = admin(any_system, "POST", path, body=body)
    _, second = admin(any_system, "POST", path, body=body)
    # Then the first call changes 2 and says there is more, the second the last one
    assert (first["affected"], first["more"], first["maxRowsPerCall"]) == (2, True, 2)
    assert (second["affected"], second["more"]) == (1, False)
    assert all(rows_by_id(any_system)[m]["status"] == PENDING for m in rows["outage"])


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        (
            "/admin/failures/0123456789abcdef/requeue",
            {"dryRun": True, "reason": "why not"},
            404,
            "failure_group_not_found",
        ),
        (
            "/admin/failures/not-a-fingerprint/resolve",
            {"dryRun": True, "reason": "why not"},
            404,
            "failure_group_not_found",
        ),
        ("/admin/failures/{group}/requeue", {"reason": "no dry run stated"}, 422, "invalid_request"),
        (
            "/admin/failures/{group}/resolve",
            {"dryRun": "yes", "reason": "a string is not a bool"},
            422,
            "invalid_request",
        ),
        ("/admin/failures/{group}/requeue", {"dryRun": False, "reason": "x"}, 422, "invalid_request"),
    ],
)
def test_bad_group_requests_are_refused_and_change_nothing(
    any_system: LocalSystem, path: str, body: dict[str, Any], status: int, code: str
) -> None:
    mixed_failures(any_system)
    group = groups_by_pattern(any_system)[OUTAGE_PATTERN]["fingerprint"]
    before = rows_by_id(any_system)
    answered, answer = admin(any_system, "POST", path.format(group=group), body=body)
    assert (answered, answer["error"]["code"]) == (status, code)
    assert rows_by_id(any_system) == before
    assert audit_rows(any_system) == []
