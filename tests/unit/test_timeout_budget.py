"""The timeout budget, proven per function: the worst case of the calls on its path — every attempt of
every call waiting out its connect and read timeouts, with botocore's longest backoff between attempts
— fits the function's Timeout in template.yaml (and API Gateway's 29 s for the payment API).

Every figure comes from the code's own values: the boto3 budgets (``payment_outbox.timeouts``), the
database timeouts each function gets from its environment in template.yaml (read through the same
``DatabaseSettings`` the code reads them with), the relay's and janitor's safety margins, the
custom-resource answer's timeouts. A database that stops answering costs each unit of work on the
path one (re)connect and one round trip waiting to the read timeout, then PyMySQL raises; the units
of work of the two hot paths are counted on the real paths by
tests/integration/test_timeout_budget_paths.py, which checks these constants.
"""

from __future__ import annotations

from typing import Any

import pytest

from payment_outbox import timeouts
from payment_outbox.adapters import cfn_response
from payment_outbox.composition.consumers import points_record_seconds, sms_record_seconds
from payment_outbox.services import janitor, relay
from payment_outbox.settings import DatabaseSettings
from payment_outbox.timeouts import CallBudget, DatabaseTimeouts
from payment_outbox_dev.checks.template import load_template
from tests.support import ROOT

pytestmark = pytest.mark.unit

#: API Gateway ends an integration at 29 s, whatever the function's Timeout.
API_GATEWAY_SECONDS = 29.0
#: Units of work (connections checked out) on the payment callback's path: the payment transaction
#: and the after-commit publish's mark (counted by the integration test).
CALLBACK_UNITS_OF_WORK = 2
#: On a cold relay run that claims, publishes and marks one wave, then looks for the next due row.
RELAY_WAVE_UNITS_OF_WORK = 6
#: One janitor batch: select and read the rows to archive, then delete them.
JANITOR_BATCH_UNITS_OF_WORK = 2
#: Secrets read on a cold path at most: the database credentials, the CA bundle (DB_TLS with a
#: bundle), and the webhook secret (payment API) or the application user's (migrator).
SECRETS_READ = 3


def template() -> dict[str, Any]:
    return load_template(ROOT / "template.yaml")


def function_timeout(logical_id: str) -> float:
    loaded = template()
    default = float(loaded["Globals"]["Function"]["Timeout"])
    return float(loaded["Resources"][logical_id]["Properties"].get("Timeout", default))


def database_timeouts(logical_id: str) -> DatabaseTimeouts:
    """The function's database timeouts, read from its template environment by ``DatabaseSettings``."""
    variables = template()["Resources"][logical_id]["Properties"]["Environment"]["Variables"]
    timeouts_env = {k.lower(): v for k, v in variables.items() if k.endswith("_TIMEOUT_SECONDS")}
    assert set(timeouts_env) == {
        "db_connect_timeout_seconds",
        "db_read_timeout_seconds",
        "db_write_timeout_seconds",
    }, logical_id
    return DatabaseSettings(database_url="mysql+pymysql://budget/db", **timeouts_env).timeouts()


def database_seconds(db: DatabaseTimeouts, units_of_work: int) -> float:
    return units_of_work * db.unit_of_work_seconds()


def secrets_seconds(budget: CallBudget) -> float:
    return SECRETS_READ * budget.worst_case_seconds()


def test_every_call_budget_is_botocores_standard_mode_with_its_own_timeouts() -> None:
    from payment_outbox.adapters.aws import new_client

    client = new_client("sns", budget=timeouts.SMS_SEND)
    config = client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (2, 5)
    assert config.retries == {"total_max_attempts": 1, "mode": "standard"}


def test_the_sms_send_is_one_attempt() -> None:
    assert timeouts.SMS_SEND.max_attempts == 1


def test_worst_case_counts_every_attempt_and_the_longest_backoff_between() -> None:
    budget = CallBudget(connect_timeout_seconds=1, read_timeout_seconds=2, max_attempts=3)
    assert budget.worst_case_seconds() == 3 * (1 + 2) + 1 + 2


def test_the_payment_callback_fits_api_gateways_29_seconds() -> None:
    worst = (
        secrets_seconds(timeouts.SECRETS_ON_HOT_PATH)
        + database_seconds(database_timeouts("PaymentApiFunction"), CALLBACK_UNITS_OF_WORK)
        + timeouts.after_commit_publish(1.0).worst_case_seconds()
    )
    assert worst <= min(API_GATEWAY_SECONDS, function_timeout("PaymentApiFunction")), worst


def test_a_points_record_fits_the_points_consumers_timeout() -> None:
    assert points_record_seconds() <= function_timeout("PointsConsumerFunction")


def test_an_sms_record_fits_the_sms_consumers_timeout() -> None:
    assert sms_record_seconds() <= function_timeout("SmsConsumerFunction")


def test_the_relays_first_wave_fits_its_timeout_before_its_safety_margin() -> None:
    worst = (
        secrets_seconds(timeouts.SECRETS_ON_HOT_PATH)
        + database_seconds(database_timeouts("OutboxRelayFunction"), RELAY_WAVE_UNITS_OF_WORK)
        + timeouts.SNS_RELAY.worst_case_seconds()
    )
    assert worst <= function_timeout("OutboxRelayFunction") - relay.SAFETY_MARGIN_MS / 1000, worst


def test_a_janitor_batch_fits_its_timeout_before_its_safety_margin() -> None:
    worst = (
        secrets_seconds(timeouts.SECRETS)
        + database_seconds(database_timeouts("OutboxJanitorFunction"), JANITOR_BATCH_UNITS_OF_WORK)
        + timeouts.S3_ARCHIVE.worst_case_seconds()
    )
    assert worst <= function_timeout("OutboxJanitorFunction") - janitor.SAFETY_MARGIN_MS / 1000, worst


def test_the_migrator_always_has_time_to_answer_cloudformation() -> None:
    # The answer's two PUTs and the pause between them fit the time kept back for it
    answer = 2 * cfn_response.SEND_TIMEOUT_SECONDS + 0.5
    assert answer <= cfn_response.ANSWER_RESERVE_SECONDS
    # Building the migrator (its secrets) is part of the answered work, which gets what is left after
    # the reserve: with the secrets' worst case taken, time is left for the migration itself
    timeout = function_timeout("SchemaMigratorFunction")
    assert secrets_seconds(timeouts.SECRETS) < timeout - cfn_response.ANSWER_RESERVE_SECONDS
    # A DDL blocked on a read gives up within the function's life
    assert database_timeouts("SchemaMigratorFunction").read_seconds < timeout
    # And CloudFormation waits longer than the function may live
    service_timeout = float(template()["Resources"]["SchemaMigration"]["Properties"]["ServiceTimeout"])
    assert service_timeout > timeout
