"""No phone number and no password in any log, even when the database fails: every SQL statement of a
paid order's way (create, callback, relay, admin, reconciler, janitor) and of the migrator's user
upkeep fails once in turn with the error a lock timeout or a failover raises, the error goes wherever
the code sends it, and every line logged or printed is searched for the test's phone number and
password. Statement parameters are never part of an error's text (``hide_parameters``)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pymysql.cursors
import pymysql.err
import pytest
from sqlalchemy import Engine

from payment_outbox.adapters.db.engine import make_engine
from payment_outbox.adapters.db.users import MySqlApplicationUser
from tests.support import LocalSystem

pytestmark = pytest.mark.integration

PHONE = "+8613977770321"
PASSWORD = "Pw-never-logged-7731"
#: How they would show inside a message (the national part alone, the password's distinctive tail).
NEEDLES = (PHONE, PHONE[3:], PASSWORD, "never-logged-7731")


class FailNth:
    """Makes the n-th statement PyMySQL sends (counted while armed) fail as a lock wait timeout does."""

    def __init__(self) -> None:
        self.armed = False
        self.fail_at = 0
        self.seen = 0
        self.failed = False

    def arm(self, fail_at: int) -> None:
        self.armed, self.fail_at, self.seen, self.failed = True, fail_at, 0, False

    def before_query(self) -> None:
        if not self.armed:
            return
        self.seen += 1
        if self.seen == self.fail_at:
            self.failed = True
            raise pymysql.err.OperationalError(1205, "Lock wait timeout exceeded; try restarting transaction")


@pytest.fixture
def fail_nth(monkeypatch: pytest.MonkeyPatch) -> Iterator[FailNth]:
    injector = FailNth()
    query = pymysql.cursors.Cursor._query

    def failing(self: pymysql.cursors.Cursor, q: str) -> int:
        injector.before_query()
        return query(self, q)

    monkeypatch.setattr(pymysql.cursors.Cursor, "_query", failing)
    yield injector


def every_statement_failing_once(fail_nth: FailNth, steps: Callable[[], None]) -> int:
    """Runs ``steps`` once per statement they send, the n-th failing on the n-th run; returns how many
    statements were failed in all."""
    for n in range(1, 500):
        fail_nth.arm(n)
        try:
            steps()
        except Exception:
            logging.getLogger("test").exception("the step failed")  # as a Lambda runtime would log it
        finally:
            fail_nth.armed = False
        if not fail_nth.failed:
            return n - 1
    pytest.fail("the steps never ran without failing")


def assert_no_needle(text: str) -> None:
    hits = [needle for needle in NEEDLES if needle in text]
    assert hits == [], f"found {hits} in the logs"


def test_no_phone_number_reaches_a_log_when_any_statement_of_an_order_fails(
    system: LocalSystem,
    fail_nth: FailNth,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    load_event: Callable[[str], dict[str, Any]],
) -> None:
    caplog.set_level(logging.INFO)  # as deployed (POWERTOOLS_LOG_LEVEL: INFO)
    invoke = system.functions.invoke

    def an_order_on_its_way() -> None:
        response = system.api("POST", "/orders", json.dumps({"userId": 7, "phone": PHONE, "amount": "12.34"}))
        assert response.status == 201, response.body
        order: dict[str, Any] = response.body
        system.pay(order, transaction_id=f"txn-{order['orderNo']}")
        system.run_relay()
        system.api("GET", f"/admin/orders/{order['orderId']}/trace")
        system.api("GET", "/admin/messages?status=pending,sent")
        invoke("ReconcilerFunction", load_event("reconciler_schedule.json"))
        invoke("OutboxJanitorFunction", load_event("outbox_janitor_schedule.json"))

    # When every statement of the way fails once, in turn
    failed = every_statement_failing_once(fail_nth, an_order_on_its_way)

    # Then errors were raised on every one of them, and no log line holds the phone number
    assert failed >= 20
    assert_no_needle(caplog.text + capsys.readouterr().out)


def test_no_password_reaches_a_log_when_the_migrators_user_upkeep_fails(
    db: Engine, fail_nth: FailNth, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.INFO)  # as deployed (POWERTOOLS_LOG_LEVEL: INFO)
    users = MySqlApplicationUser(make_engine(db.url.render_as_string(hide_password=False)))

    # When each of its statements (CREATE USER, ALTER USER … IDENTIFIED BY, GRANT) fails in turn
    failed = every_statement_failing_once(fail_nth, lambda: users.ensure("po_logs_test_user", PASSWORD))

    # Then no log line holds the password
    assert failed >= 3
    assert_no_needle(caplog.text + capsys.readouterr().out)
