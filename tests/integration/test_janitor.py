"""The outbox janitor on MariaDB + moto: it deletes SENT rows past retention, by primary key in
batches of at most 1,000, archives each batch to S3 before deleting it, never touches pending or
failed rows, and stops when its time runs low."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import boto3
import pytest
from sqlalchemy import Engine, event, insert

from payment_outbox.adapters import aws
from payment_outbox.adapters.db.engine import make_session_factory
from payment_outbox.adapters.db.operations import SqlOperationsUnitOfWork
from payment_outbox.adapters.db.schema import MessageRecordRow
from payment_outbox.clock import SystemClock
from payment_outbox.domain.envelope import BUSINESS_TYPE_ORDER_PAID, TOPIC_POINTS
from payment_outbox.services.janitor import OutboxJanitor
from payment_outbox.settings import RetentionSettings
from tests.fakes import FakeClock
from tests.support import LocalSystem

pytestmark = pytest.mark.integration

PENDING, SENT, FAILED = 0, 1, 2
OLD, YOUNG = timedelta(days=8), timedelta(days=1)


# --- helpers ---------------------------------------------------------------------------------------


def now() -> datetime:
    return SystemClock().now()


def add_rows(system: LocalSystem, count: int, *, status: int, age: timedelta) -> list[str]:
    """Insert ``count`` rows created (and, if SENT, sent) ``age`` ago; returns their message ids."""
    created = now() - age
    ids = [uuid.uuid4().hex for _ in range(count)]
    with system.engine.begin() as conn:
        conn.execute(
            insert(MessageRecordRow),
            [
                {
                    "message_id": message_id,
                    "topic": TOPIC_POINTS,
                    "content": json.dumps({"messageId": message_id, "payload": {"userId": 1}}),
                    "status": status,
                    "retry_count": 0,
                    "create_time": created,
                    "update_time": created,
                    "business_key": "PO-OLD",
                    "business_type": BUSINESS_TYPE_ORDER_PAID,
                    "next_retry_at": created,
                    "sent_time": created + timedelta(seconds=2) if status == SENT else None,
                }
                for message_id in ids
            ],
        )
    return ids


def remaining_ids(system: LocalSystem) -> set[str]:
    return {r["message_id"] for r in system.outbox_rows()}


class Timeline:
    """Every DELETE on message_record (the ids it names) and every archive write, in order."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.delete_sizes: list[int] = []

    def on_sql(self, _conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE FROM MESSAGE_RECORD"):
            # Never a table-wide delete: every DELETE names its rows by primary key.
            assert "WHERE message_record.id IN (" in statement, statement
            ids = [name for name in parameters if re.fullmatch(r"id_\d+_\d+", name)]
            self.delete_sizes.append(len(ids))
            self.events.append("delete")

    def on_archive(self, **_kwargs: Any) -> None:
        self.events.append("archive")


@pytest.fixture
def timeline(system: LocalSystem, monkeypatch: pytest.MonkeyPatch) -> Iterator[Timeline]:
    recorder = Timeline()
    event.listen(Engine, "before_cursor_execute", recorder.on_sql)
    # Every S3 client the janitor creates from now on (inside moto): hook its PutObject calls.
    original = aws.new_client

    def hooked(service: str, **options: Any) -> Any:
        client = original(service, **options)
        if service == "s3":
            client.meta.events.register("before-call.s3.PutObject", recorder.on_archive)
        return client

    monkeypatch.setattr(aws, "new_client", hooked)
    yield recorder
    event.remove(Engine, "before_cursor_execute", recorder.on_sql)


def archive_bucket(system: LocalSystem) -> str:
    return system.resources.refs["ArchiveBucket"]


def archived_lines(system: LocalSystem) -> list[list[dict[str, Any]]]:
    """Each archive object's JSON lines, objects in key order."""
    s3 = boto3.client("s3")
    objects = s3.list_objects_v2(Bucket=archive_bucket(system)).get("Contents", [])
    return [
        [
            json.loads(line)
            for line in s3.get_object(Bucket=archive_bucket(system), Key=o["Key"])["Body"]
            .read()
            .decode()
            .splitlines()
        ]
        for o in sorted(objects, key=lambda o: o["Key"])
    ]


def emf_metrics(stdout: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in stdout.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            document = json.loads(line)
            for metric in document["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
                values[metric["Name"]] = float(sum(document[metric["Name"]]))
    return values


# --- the function ----------------------------------------------------------------------------------


def test_janitor_deletes_only_old_sent_rows_after_archiving_them(
    system: LocalSystem, timeline: Timeline, capsys: pytest.CaptureFixture[str], load_event: Any
) -> None:
    # Given old sent rows, young sent rows, and old pending and failed rows
    old_sent = add_rows(system, 3, status=SENT, age=OLD)
    young_sent = add_rows(system, 2, status=SENT, age=YOUNG)
    old_pending = add_rows(system, 2, status=PENDING, age=OLD)
    old_failed = add_rows(system, 2, status=FAILED, age=OLD)

    # When the janitor runs with the template's settings (7 days, archive on) and the shipped event
    capsys.readouterr()
    result = system.functions.invoke("OutboxJanitorFunction", load_event("outbox_janitor_schedule.json"))

    # Then only the old sent rows are gone; young sent, pending and failed rows are all still there
    assert (result["purged"], result["archived"], result["batches"]) == (3, 3, 1)
    assert remaining_ids(system) == set(young_sent + old_pending + old_failed)
    # And they were archived, whole, in one JSON-lines object, before the one DELETE that removed them
    [lines] = archived_lines(system)
    assert sorted(line["messageId"] for line in lines) == sorted(old_sent)
    assert all(line["status"] == SENT and json.loads(line["content"])["messageId"] for line in lines)
    assert timeline.events == ["archive", "delete"]
    assert timeline.delete_sizes == [3]
    # And what it did is emitted as metrics
    metrics = emf_metrics(capsys.readouterr().out)
    assert (metrics["MessagesPurged"], metrics["MessagesArchived"]) == (3.0, 3.0)


def test_janitor_deletes_in_batches_of_at_most_a_thousand_rows(
    system: LocalSystem, timeline: Timeline, load_event: Any
) -> None:
    # Given 2,100 old sent rows and one old failed row
    add_rows(system, 2100, status=SENT, age=OLD)
    [failed] = add_rows(system, 1, status=FAILED, age=OLD)

    # When the janitor runs
    result = system.functions.invoke("OutboxJanitorFunction", load_event("outbox_janitor_schedule.json"))

    # Then it deleted them in three statements of at most 1,000 ids, each after its batch's archive
    assert (result["purged"], result["batches"]) == (2100, 3)
    assert timeline.delete_sizes == [1000, 1000, 100]
    assert timeline.events == ["archive", "delete"] * 3
    assert [len(lines) for lines in archived_lines(system)] == [1000, 1000, 100]
    # And the failed row is all that is left
    assert remaining_ids(system) == {failed}


def test_nothing_is_deleted_when_the_archive_cannot_be_written(
    system: LocalSystem, timeline: Timeline, load_event: Any
) -> None:
    # Given old sent rows and an archive bucket that has gone away
    old_sent = add_rows(system, 4, status=SENT, age=OLD)
    boto3.client("s3").delete_bucket(Bucket=archive_bucket(system))

    # When the janitor runs
    with pytest.raises(Exception, match="NoSuchBucket"):
        system.functions.invoke("OutboxJanitorFunction", load_event("outbox_janitor_schedule.json"))

    # Then no DELETE was issued and every row is still there, for the next run
    assert timeline.delete_sizes == []
    assert remaining_ids(system) == set(old_sent)


# --- the use case with an injected clock, batch size and time budget -------------------------------


def janitor(system: LocalSystem, batch_size: int, clock: FakeClock) -> OutboxJanitor:
    sessions = make_session_factory(system.engine)
    return OutboxJanitor(
        lambda: SqlOperationsUnitOfWork(sessions),
        clock,
        retention=timedelta(days=7),
        archive=None,
        batch_size=batch_size,
    )


def test_batch_size_bounds_each_statement_and_retention_follows_the_clock(
    system: LocalSystem, timeline: Timeline
) -> None:
    # Given five rows sent eight days ago and two sent six days ago
    add_rows(system, 5, status=SENT, age=OLD)
    six_days = add_rows(system, 2, status=SENT, age=timedelta(days=6))
    clock = FakeClock(now())

    # When a janitor with batches of two runs without an archive
    report = janitor(system, 2, clock).purge_sent_messages()

    # Then it deleted the five old rows in statements of 2, 2 and 1 and archived nothing
    assert (report.purged, report.batches, report.archived) == (5, 3, 0)
    assert timeline.delete_sizes == [2, 2, 1]
    assert remaining_ids(system) == set(six_days)

    # When the clock moves on two days and it runs again
    clock.advance(days=2)
    report = janitor(system, 2, clock).purge_sent_messages()

    # Then the other two are past retention now, and gone
    assert report.purged == 2
    assert remaining_ids(system) == set()


def test_janitor_stops_when_the_lambda_time_runs_low(system: LocalSystem, timeline: Timeline) -> None:
    # Given six old sent rows
    add_rows(system, 6, status=SENT, age=OLD)
    # And a Lambda with plenty of time for one batch, then only three seconds left
    budgets = iter([60_000, 3_000])

    # When a janitor with batches of two runs
    report = janitor(system, 2, FakeClock(now())).purge_sent_messages(lambda: next(budgets))

    # Then it ran one batch, stopped before the next, and says so
    assert (report.purged, report.batches, report.out_of_time) == (2, 1, True)
    assert timeline.delete_sizes == [2]
    assert len(remaining_ids(system)) == 4


def test_an_empty_archive_bucket_setting_means_no_archive() -> None:
    # Given the janitor's settings as the template renders them with ArchiveSentMessages=false
    # When they are read / Then the empty bucket name means "no archive", and batches never exceed 1,000
    assert RetentionSettings(archive_bucket_name="").archive_bucket_name is None
    assert RetentionSettings().outbox_retention_batch_size == 1000
    with pytest.raises(ValueError, match="less than or equal to 1000"):
        RetentionSettings(outbox_retention_batch_size=1001)
