"""The admin API on MariaDB + moto, through its handler: list outbox messages by filter and page,
requeue what gave up (dry run, bounded, audited, SENT rows only when asked), read the counts, trace
an order to its points and SMS, and list idempotency records stuck INPROGRESS."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer, IdempotencyConfig
from sqlalchemy import insert, text

from payment_outbox.adapters.db.schema import MessageRecordRow
from payment_outbox.adapters.idempotent_record_handler import indexed_persistence_layer
from payment_outbox.clock import SystemClock
from payment_outbox.domain.envelope import BUSINESS_TYPE_ORDER_PAID, TOPIC_POINTS, TOPIC_SMS, Envelope
from payment_outbox.domain.orders import PaymentNotice
from payment_outbox.services.payments import PaymentService
from payment_outbox_dev.local.harness import api_gateway_event
from tests.support import LocalSystem, configured_database

pytestmark = pytest.mark.integration

OPERATOR = "arn:aws:sts::123456789012:assumed-role/PaymentOutboxOperator/alice"
PENDING, SENT, FAILED = 0, 1, 2


# --- helpers ---------------------------------------------------------------------------------------


def now() -> datetime:
    return SystemClock().now()


def admin(
    system: LocalSystem,
    method: str,
    path: str,
    *,
    query: dict[str, str] | None = None,
    body: dict[str, Any] | None = None,
    user_arn: str | None = OPERATOR,
) -> tuple[int, Any]:
    """Call an admin route as API Gateway would after IAM authorised ``user_arn``."""
    matched = system.functions.match_route(method, path)
    assert matched is not None, f"no route for {method} {path}"
    route, params = matched
    event = api_gateway_event(
        method, path, route.path, params, None if body is None else json.dumps(body), {}
    )
    event["queryStringParameters"] = query
    event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()} if query else None
    event["requestContext"]["identity"]["userArn"] = user_arn
    result = system.functions.invoke(route.function, event)
    return int(result["statusCode"]), json.loads(result["body"])


def add_row(
    system: LocalSystem,
    *,
    status: int,
    topic: str = TOPIC_POINTS,
    business_key: str = "PO-A",
    created: datetime | None = None,
    due_at: datetime | None = None,
    attempts: int = 0,
    last_error: str | None = None,
) -> str:
    """Insert one message_record row in the given state; returns its message id."""
    created = created or now() - timedelta(minutes=5)
    message_id = uuid.uuid4().hex
    envelope = Envelope(
        message_id=message_id,
        topic=topic,
        business_key=business_key,
        business_type=BUSINESS_TYPE_ORDER_PAID,
        occurred_at=created,
        payload={"userId": 7, "orderId": 1, "points": 10},
    )
    with system.engine.begin() as conn:
        conn.execute(
            insert(MessageRecordRow).values(
                message_id=message_id,
                topic=topic,
                content=envelope.to_json(),
                status=status,
                retry_count=attempts,
                create_time=created,
                update_time=created,
                business_key=business_key,
                business_type=BUSINESS_TYPE_ORDER_PAID,
                next_retry_at=due_at or created,
                last_error=last_error,
                sent_time=created + timedelta(seconds=1) if status == SENT else None,
            )
        )
    return message_id


def rows_by_id(system: LocalSystem) -> dict[str, dict[str, Any]]:
    return {r["message_id"]: r for r in system.outbox_rows()}


def audit_rows(system: LocalSystem) -> list[dict[str, Any]]:
    with system.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(text("SELECT * FROM outbox_audit ORDER BY id"))]


def paid_order_whose_messages_gave_up(system: LocalSystem, amount: str = "128.50") -> dict[str, Any]:
    """A real order paid through the payment use case (its outbox rows written in the same
    transaction), whose rows then exhausted their attempts: status 2, as the relay leaves them."""
    order = system.create_order(amount=amount)
    with configured_database() as database:
        payments = PaymentService(
            database.unit_of_work, SystemClock(), after_commit_lease=timedelta(seconds=60)
        )
        payments.pay_order(
            PaymentNotice(order["orderNo"], f"txn-{uuid.uuid4().hex[:12]}", Decimal(amount), now(), "CNY")
        )
    with system.engine.begin() as conn:
        changed = conn.execute(
            text(
                "UPDATE message_record SET status = 2, retry_count = 5, last_error = :error "
                "WHERE business_key = :key"
            ),
            {"error": "NotFound: Topic does not exist", "key": order["orderNo"]},
        ).rowcount
    assert changed == 2
    return order


@pytest.fixture(autouse=True)
def empty_audit_and_queues(system: LocalSystem) -> Iterator[None]:
    with system.engine.begin() as conn:
        conn.execute(text("DELETE FROM outbox_audit"))
    yield
    system.drain_consumers()


# --- listing ---------------------------------------------------------------------------------------


def test_list_filters_by_status_topic_business_key_and_creation_window(system: LocalSystem) -> None:
    # Given rows of every status, two topics, two business keys and creation times an hour apart
    t0 = now() - timedelta(hours=5)
    failed_points = add_row(system, status=FAILED, topic=TOPIC_POINTS, business_key="PO-A", created=t0)
    failed_sms = add_row(
        system, status=FAILED, topic=TOPIC_SMS, business_key="PO-B", created=t0 + timedelta(hours=1)
    )
    sent = add_row(system, status=SENT, topic=TOPIC_SMS, business_key="PO-A", created=t0 + timedelta(hours=2))
    pending = add_row(
        system, status=PENDING, topic=TOPIC_POINTS, business_key="PO-B", created=t0 + timedelta(hours=3)
    )

    def listed(**query: str) -> list[str]:
        status, body = admin(system, "GET", "/admin/messages", query=query)
        assert status == 200, body
        return [item["messageId"] for item in body["items"]]

    # When the listing is filtered / Then each filter narrows it as named
    assert listed(status="failed") == [failed_points, failed_sms]
    assert listed(status="2") == [failed_points, failed_sms]
    assert listed(status="pending,failed", topic=TOPIC_POINTS) == [failed_points, pending]
    assert listed(businessKey="PO-B") == [failed_sms, pending]
    # (from is inclusive, to exclusive: the pending row created exactly at "to" is outside)
    window_from, window_to = t0 + timedelta(minutes=30), t0 + timedelta(hours=3)
    assert listed(**{"from": window_from.isoformat() + "Z", "to": window_to.isoformat() + "Z"}) == [
        failed_sms,
        sent,
    ]
    # And an item shows the state an operator needs, never the content (it holds a phone number)
    _, body = admin(system, "GET", "/admin/messages", query={"status": "failed", "topic": TOPIC_POINTS})
    [item] = body["items"]
    assert item["status"] == "FAILED" and item["statusCode"] == 2 and item["businessKey"] == "PO-A"
    assert "content" not in item


def test_list_pages_with_an_opaque_cursor_until_the_last_page(system: LocalSystem) -> None:
    # Given seven failed rows
    ids = [add_row(system, status=FAILED) for _ in range(7)]

    # When the listing is walked three rows at a time
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        query = {"status": "failed", "limit": "3", **({"cursor": cursor} if cursor else {})}
        status, body = admin(system, "GET", "/admin/messages", query=query)
        assert status == 200, body
        pages += 1
        assert len(body["items"]) <= 3
        seen.extend(item["messageId"] for item in body["items"])
        cursor = body["nextCursor"]
        if cursor is None:
            break
        assert not cursor.isdigit()  # opaque, not a bare id

    # Then every row came exactly once, in insertion order, over three pages
    assert seen == ids
    assert pages == 3


@pytest.mark.parametrize(
    "query",
    [{"limit": "201"}, {"limit": "0"}, {"status": "lost"}, {"cursor": "not-a-cursor"}, {"from": "yesterday"}],
)
def test_list_refuses_bad_query_parameters(system: LocalSystem, query: dict[str, str]) -> None:
    # Given a query outside the contract (page size above 200, unknown status, forged cursor, bad date)
    # When it is sent
    status, body = admin(system, "GET", "/admin/messages", query=query)
    # Then it is refused as invalid, with a model error body
    assert status == 422, body
    assert body["error"]["code"] == "invalid_request"


# --- requeue ---------------------------------------------------------------------------------------


def test_requeued_failed_messages_are_published_and_consumed_once(system: LocalSystem) -> None:
    # Given a paid order whose two messages gave up before anything was published
    order = paid_order_whose_messages_gave_up(system, amount="128.50")
    before = rows_by_id(system)
    assert system.points_balance(order["userId"]) == 0

    # When an operator requeues them by business key
    status, body = admin(
        system,
        "POST",
        "/admin/messages/requeue",
        body={"businessKey": order["orderNo"], "dryRun": False, "reason": "SNS topic policy fixed"},
    )

    # Then both are pending and due now, their attempt count and last error kept (history)
    assert status == 200, body
    assert body["requeued"] == 2 and body["more"] is False and body["maxRowsPerCall"] == 1000
    assert sorted(body["messageIds"]) == sorted(before)
    for message_id, row in rows_by_id(system).items():
        assert (row["status"], row["retry_count"]) == (PENDING, 5)
        assert row["next_retry_at"] <= now()
        assert row["last_error"] == before[message_id]["last_error"]

    # And when the relay runs and the consumers drain (twice, as a redelivery would)
    assert system.run_relay()["published"] == 2
    system.drain_consumers()
    system.run_relay()
    system.drain_consumers()

    # Then both rows are sent, the points are credited once and one SMS went out
    assert [r["status"] for r in system.outbox_rows()] == [SENT, SENT]
    assert system.points_balance(order["userId"]) == 128
    assert len(system.ledger_entries(order["userId"])) == 1
    assert len(system.sms_deliveries()) == 1

    # And the action is audited with the IAM caller, the count, the filters and the reason
    [audit] = audit_rows(system)
    assert audit["actor"] == OPERATOR
    assert audit["action"] == "requeue"
    assert audit["affected_count"] == 2
    assert audit["reason"] == "SNS topic policy fixed"
    assert json.loads(audit["filters"])["businessKey"] == order["orderNo"]
    assert body["auditId"] == audit["id"]


def test_dry_run_reports_what_would_change_and_changes_nothing(system: LocalSystem) -> None:
    # Given failed rows
    order = paid_order_whose_messages_gave_up(system)
    before = system.outbox_rows()

    # When a bulk requeue is rehearsed
    status, body = admin(
        system,
        "POST",
        "/admin/messages/requeue",
        body={"status": "failed", "dryRun": True, "reason": "how many would go?"},
    )

    # Then it names what it would requeue
    assert status == 200, body
    assert body["dryRun"] is True and body["wouldRequeue"] == 2
    assert sorted(body["messageIds"]) == sorted(r["message_id"] for r in before)
    # And nothing changed: rows identical, no audit row, nothing published
    assert system.outbox_rows() == before
    assert audit_rows(system) == []
    assert system.run_relay()["claimed"] == 0
    assert system.points_balance(order["userId"]) == 0


def test_sent_rows_are_untouched_unless_include_sent(system: LocalSystem) -> None:
    # Given a sent row, a failed row, a pending row waiting for a later retry and a pending row due now
    sent = add_row(system, status=SENT)
    failed = add_row(system, status=FAILED, attempts=5, last_error="gave up")
    later = add_row(system, status=PENDING, attempts=3, due_at=now() + timedelta(hours=1))
    due = add_row(system, status=PENDING, attempts=1, due_at=now() - timedelta(seconds=5))
    before = rows_by_id(system)

    # When everything the (empty) filter selects is requeued
    status, body = admin(
        system, "POST", "/admin/messages/requeue", body={"dryRun": False, "reason": "outage over"}
    )

    # Then only the failed row is requeued, keeping its attempts; the sent and both pending rows
    # (the relay's: in flight or waiting for their retry) are untouched
    assert status == 200, body
    assert body["messageIds"] == [failed]
    after = rows_by_id(system)
    assert after[sent] == before[sent]
    assert after[due] == before[due]
    assert after[later] == before[later]
    assert (after[failed]["status"], after[failed]["retry_count"]) == (PENDING, 5)

    # When sent rows are asked for without includeSent
    status, body = admin(
        system,
        "POST",
        "/admin/messages/requeue",
        body={"status": "sent", "dryRun": False, "reason": "replay"},
    )
    # Then it is refused and the sent row is unchanged
    assert status == 409, body
    assert body["error"]["code"] == "not_requeueable"
    assert rows_by_id(system)[sent] == before[sent]

    # When includeSent is explicit
    status, body = admin(
        system,
        "POST",
        "/admin/messages/requeue",
        body={"status": "sent", "includeSent": True, "dryRun": False, "reason": "consumer lost its data"},
    )
    # Then the sent row is pending again, due now
    assert status == 200, body
    assert body["messageIds"] == [sent]
    assert rows_by_id(system)[sent]["status"] == PENDING
    assert [a["affected_count"] for a in audit_rows(system)] == [1, 1]


def test_bulk_requeue_is_bounded_to_a_thousand_rows_a_call(system: LocalSystem) -> None:
    # Given 1,001 failed rows
    created = now() - timedelta(minutes=5)
    with system.engine.begin() as conn:
        conn.execute(
            insert(MessageRecordRow),
            [
                {
                    "message_id": uuid.uuid4().hex,
                    "topic": TOPIC_POINTS,
                    "content": "{}",
                    "status": FAILED,
                    "retry_count": 5,
                    "create_time": created,
                    "update_time": created,
                    "business_key": "PO-BULK",
                    "next_retry_at": created,
                }
                for _ in range(1001)
            ],
        )
    request = {"status": "failed", "dryRun": False, "reason": "bulk after outage"}

    # When one bulk requeue is made
    status, body = admin(system, "POST", "/admin/messages/requeue", body=request)

    # Then it changes 1,000 rows, says more remain, and echoes only a sample of ids
    assert status == 200, body
    assert (body["requeued"], body["more"], body["maxRowsPerCall"]) == (1000, True, 1000)
    assert 0 < len(body["messageIds"]) <= 50
    assert system.count("message_record WHERE status = 2") == 1

    # And a second call takes the rest
    status, body = admin(system, "POST", "/admin/messages/requeue", body=request)
    assert (body["requeued"], body["more"]) == (1, False)
    assert system.count("message_record WHERE status = 2") == 0
    # Keep the relay from publishing 1,001 junk rows in later tests: they are this test's only
    with system.engine.begin() as conn:
        conn.execute(text("DELETE FROM message_record"))


def test_requeue_one_message_by_id(system: LocalSystem) -> None:
    # Given a failed row, a pending row already due, and a sent row
    failed = add_row(system, status=FAILED, attempts=5, last_error="oversize")
    due = add_row(system, status=PENDING, due_at=now() - timedelta(seconds=1))
    sent = add_row(system, status=SENT)

    # When the failed row is requeued by its message id (no IAM caller: a local run)
    status, body = admin(
        system, "POST", f"/admin/messages/{failed}/requeue", body={"reason": "payload fixed"}, user_arn=None
    )

    # Then it is pending again, and the audit names the local actor and the message
    assert status == 200, body
    assert (body["requeued"], body["messageIds"]) == (1, [failed])
    assert rows_by_id(system)[failed]["status"] == PENDING
    [audit] = audit_rows(system)
    assert (audit["actor"], audit["action"], audit["affected_count"]) == ("local", "requeue_message", 1)
    assert json.loads(audit["filters"])["messageId"] == failed

    # And an unknown id is 404, a pending row and a sent row (without includeSent) are 409
    assert admin(system, "POST", "/admin/messages/nope/requeue", body={"reason": "why not"})[0] == 404
    assert admin(system, "POST", f"/admin/messages/{due}/requeue", body={"reason": "push it"})[0] == 409
    assert admin(system, "POST", f"/admin/messages/{sent}/requeue", body={"reason": "again"})[0] == 409
    # And a request without a reason is refused before anything happens
    assert admin(system, "POST", f"/admin/messages/{sent}/requeue", body={"includeSent": True})[0] == 422
    assert rows_by_id(system)[sent]["status"] == SENT
    assert len(audit_rows(system)) == 1


# --- stats and trace -------------------------------------------------------------------------------


def test_stats_count_statuses_and_the_due_backlog(system: LocalSystem) -> None:
    # Given two pending rows due (the oldest for two minutes), one pending later, three sent, one failed
    add_row(system, status=PENDING, due_at=now() - timedelta(seconds=120))
    add_row(system, status=PENDING, due_at=now() - timedelta(seconds=10))
    add_row(system, status=PENDING, due_at=now() + timedelta(minutes=10))
    for _ in range(3):
        add_row(system, status=SENT)
    add_row(system, status=FAILED)

    # When the stats are read
    status, body = admin(system, "GET", "/admin/stats")

    # Then the counts and the backlog are exact, and the oldest due row's age is about two minutes
    assert status == 200, body
    assert body["counts"] == {"pending": 3, "sent": 3, "failed": 1}
    assert body["dueBacklog"] == 2
    assert 120 <= body["oldestDueAgeSeconds"] < 140


def test_stats_of_an_empty_outbox(system: LocalSystem) -> None:
    status, body = admin(system, "GET", "/admin/stats")
    assert status == 200
    assert body["counts"] == {"pending": 0, "sent": 0, "failed": 0}
    assert (body["dueBacklog"], body["oldestDueAgeSeconds"]) == (0, None)


def test_trace_shows_the_order_its_messages_and_the_points_and_sms_it_produced(system: LocalSystem) -> None:
    # Given an order paid, relayed and consumed end to end
    order = system.create_order(amount="88.80")
    assert system.pay(order, transaction_id=f"txn-{uuid.uuid4().hex[:8]}").status == 200
    system.run_relay()
    system.drain_consumers()
    messages = {r["topic"]: r["message_id"] for r in system.outbox_rows()}

    # When its trace is read
    status, body = admin(system, "GET", f"/admin/orders/{order['orderId']}/trace")

    # Then it shows the PAID order, both messages sent, the ledger entry and the SMS delivery
    assert status == 200, body
    assert body["order"]["status"] == "PAID" and body["order"]["orderNo"] == order["orderNo"]
    assert {(m["topic"], m["status"]) for m in body["messages"]} == {
        (TOPIC_POINTS, "SENT"),
        (TOPIC_SMS, "SENT"),
    }
    points = body["effects"]["points"]
    assert points["credited"] is True
    assert [(e["messageId"], e["points"]) for e in points["entries"]] == [(messages[TOPIC_POINTS], 88)]
    sms = body["effects"]["sms"]
    assert sms["sent"] is True
    [delivery] = sms["deliveries"]
    assert delivery["messageId"] == messages[TOPIC_SMS]
    assert delivery["maskedPhone"] == "+86*******5678"


def test_trace_of_an_order_whose_messages_gave_up_shows_no_effects(system: LocalSystem) -> None:
    # Given a paid order whose messages failed
    order = paid_order_whose_messages_gave_up(system)
    # When its trace is read
    status, body = admin(system, "GET", f"/admin/orders/{order['orderId']}/trace")
    # Then the failures and their last error are there, and no points or SMS
    assert status == 200, body
    assert {(m["status"], m["retryCount"]) for m in body["messages"]} == {("FAILED", 5)}
    assert all(m["lastError"] == "NotFound: Topic does not exist" for m in body["messages"])
    assert body["effects"]["points"] == {"credited": False, "entries": []}
    assert body["effects"]["sms"]["sent"] is False
    assert [d["delivered"] for d in body["effects"]["sms"]["deliveries"]] == [False]
    # And an unknown order is 404
    assert admin(system, "GET", "/admin/orders/999999999/trace")[0] == 404


# --- stuck idempotency records ---------------------------------------------------------------------


def idempotency_layer(system: LocalSystem) -> DynamoDBPersistenceLayer:
    layer = indexed_persistence_layer(system.resources.refs["IdempotencyTable"], boto3.client("dynamodb"))
    layer.configure(IdempotencyConfig(event_key_jmespath="messageId"), function_name="points")
    return layer


def test_stuck_in_progress_idempotency_records_are_listed(system: LocalSystem) -> None:
    # Given, written by Powertools itself: an INPROGRESS record whose invocation lock ran out a minute
    # ago (the consumer died), one still within its lock, and a completed one
    layer = idempotency_layer(system)
    layer.save_inprogress({"messageId": "stuck"}, remaining_time_in_millis=-60_000)
    layer.save_inprogress({"messageId": "running"}, remaining_time_in_millis=60_000)
    layer.save_inprogress({"messageId": "done"}, remaining_time_in_millis=60_000)
    layer.save_success({"messageId": "done"}, {"credited": True})

    # When the stuck records are listed
    status, body = admin(system, "GET", "/admin/idempotency/stuck")

    # Then only the one past its lock is there
    assert status == 200, body
    assert body["count"] == 1
    [record] = body["items"]
    assert record["status"] == "INPROGRESS"
    assert record["inProgressExpiration"] < now().timestamp() * 1000 + 1  # in the past


# --- the events/ files -----------------------------------------------------------------------------


def test_admin_events_in_events_folder_are_served(system: LocalSystem, load_event) -> None:  # type: ignore[no-untyped-def]
    # Given a paid order whose messages gave up, and the admin events exactly as shipped
    order = paid_order_whose_messages_gave_up(system)
    before = system.outbox_rows()
    trace = load_event("admin_api_trace.json")
    trace["path"] = f"/admin/orders/{order['orderId']}/trace"
    trace["pathParameters"] = {"orderId": str(order["orderId"])}

    # When each is handled
    responses = {
        name: system.functions.invoke("AdminApiFunction", event)
        for name, event in {
            "list": load_event("admin_api_list_messages.json"),
            "dry_run": load_event("admin_api_requeue_dry_run.json"),
            "stats": load_event("admin_api_stats.json"),
            "trace": trace,
            "stuck": load_event("admin_api_idempotency_stuck.json"),
        }.items()
    }

    # Then each answers 200; the list and the dry run (both failed SMS rows) find the failed SMS row
    assert {name: r["statusCode"] for name, r in responses.items()} == dict.fromkeys(responses, 200)
    listed = json.loads(responses["list"]["body"])["items"]
    assert [(m["topic"], m["status"]) for m in listed] == [(TOPIC_SMS, "FAILED")]
    assert json.loads(responses["dry_run"]["body"])["wouldRequeue"] == 1
    assert json.loads(responses["stats"]["body"])["counts"]["failed"] == 2
    assert json.loads(responses["trace"]["body"])["order"]["orderNo"] == order["orderNo"]
    # And the dry run changed nothing
    assert system.outbox_rows() == before


# --- requeue keeps history ---------------------------------------------------------------------------


def test_leased_and_waiting_pending_rows_are_in_flight_not_requeueable(system: LocalSystem) -> None:
    # Given a row a relay has claimed (leased for a minute) and a row waiting for its next retry
    leased = add_row(system, status=PENDING, attempts=0, due_at=now() + timedelta(seconds=60))
    waiting = add_row(
        system,
        status=PENDING,
        attempts=2,
        due_at=now() + timedelta(minutes=3),
        last_error="Throttled",
    )
    before = rows_by_id(system)

    # When an operator requeues pending rows in bulk, and each one by its id
    status, body = admin(
        system,
        "POST",
        "/admin/messages/requeue",
        body={"status": "pending", "dryRun": False, "reason": "hurry them"},
    )
    singles = [
        admin(system, "POST", f"/admin/messages/{m}/requeue", body={"reason": "hurry it"})
        for m in (leased, waiting)
    ]

    # Then nothing is requeued: the bulk call selects none, each single call is 409, no row changed
    assert status == 200, body
    assert (body["requeued"], body["messageIds"], body["changes"]) == (0, [], [])
    assert [s for s, _ in singles] == [409, 409]
    assert all(b["error"]["code"] == "not_requeueable" for _, b in singles)
    assert rows_by_id(system) == before


def test_requeue_keeps_attempts_unless_a_fresh_budget_is_asked_for(system: LocalSystem) -> None:
    # Given two rows that gave up after 5 attempts
    error = "AuthorizationError"
    kept = add_row(system, status=FAILED, attempts=5, last_error=error, business_key="PO-K")
    fresh = add_row(system, status=FAILED, attempts=5, last_error=error, business_key="PO-F")

    # When one is requeued plainly and the other with resetAttempts
    plain = admin(
        system,
        "POST",
        "/admin/messages/requeue",
        body={"businessKey": "PO-K", "dryRun": False, "reason": "policy fixed"},
    )
    reset = admin(
        system,
        "POST",
        "/admin/messages/requeue",
        body={"businessKey": "PO-F", "dryRun": False, "resetAttempts": True, "reason": "policy fixed"},
    )

    # Then the plain one keeps its 5 attempts (one more try), the other starts a fresh budget
    assert plain[0] == 200 and reset[0] == 200
    rows = rows_by_id(system)
    assert (rows[kept]["status"], rows[kept]["retry_count"]) == (PENDING, 5)
    assert (rows[fresh]["status"], rows[fresh]["retry_count"]) == (PENDING, 0)
    assert rows[kept]["last_error"] == rows[fresh]["last_error"] == "AuthorizationError"
    # And each audit row keeps the rows' prior state and whether the budget was reset
    first, second = audit_rows(system)
    assert json.loads(first["filters"])["resetAttempts"] is False
    assert json.loads(second["filters"])["resetAttempts"] is True
    assert json.loads(second["filters"])["before"] == {"FAILED:5": [fresh]}


def test_dry_run_shows_exactly_the_changes_the_real_run_makes(system: LocalSystem) -> None:
    # Given a failed row
    failed = add_row(system, status=FAILED, attempts=5, last_error="gave up")
    before = rows_by_id(system)[failed]

    # When a reset requeue is rehearsed, then made
    dry = admin(
        system,
        "POST",
        f"/admin/messages/{failed}/requeue",
        body={"dryRun": True, "resetAttempts": True, "reason": "rehearse"},
    )
    assert rows_by_id(system)[failed] == before
    real = admin(
        system,
        "POST",
        f"/admin/messages/{failed}/requeue",
        body={"resetAttempts": True, "reason": "for real"},
    )

    # Then the rehearsal listed the change the real run made, field by field
    assert dry[0] == 200 and real[0] == 200
    [planned] = dry[1]["changes"]
    [made] = real[1]["changes"]
    assert planned["status"] == made["status"] == {"from": "FAILED", "to": "PENDING"}
    assert planned["retryCount"] == made["retryCount"] == {"from": 5, "to": 0}
    after = rows_by_id(system)[failed]
    assert (after["status"], after["retry_count"]) == (PENDING, 0)
