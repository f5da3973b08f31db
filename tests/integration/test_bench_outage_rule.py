"""The capacity simulation's rule for attempts during an outage is the relay's own: found by running
the scheduled relay and the after-commit publish against the latency SNS answering every call with a
server error, on the real MariaDB, and reading the rows' attempts back."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text

from bench.capacity_sim import probe_outage_rule
from bench.latency_sns import LatencySnsProcess
from payment_outbox.settings import OutboxSettings

pytestmark = pytest.mark.integration

TOPIC = "arn:aws:sns:us-east-1:123456789012:OrderEvents"


def test_the_simulations_outage_rule_is_found_by_running_the_relay(
    db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORDER_EVENTS_TOPIC_ARN", TOPIC)
    with LatencySnsProcess(delay_ms=1) as sns:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SNS", sns.endpoint)
        # When the probe runs the relay through an outage
        rule, evidence = probe_outage_rule(db.url.render_as_string(hide_password=False), sns)
        # Then SNS really refused the relay's requests (the stand-in counted them)...
        assert sns.stats()["calls"] >= 2
    # ...and the rule is what the rows show: a whole-request refusal charges no attempt, on the
    # scheduled run and on the after-commit publish alike (every row still at zero attempts)
    assert evidence == {
        "attempts_after_refused_run": [0, 0, 0, 0],
        "attempts_after_failed_after_commit_publish": [0, 0],
    }
    assert rule.refusal_charges_attempt is False
    assert rule.after_commit_failure_charges_attempt is False
    # And a refused row backs off by its age, within the retry policy's limits, read from the settings
    policy = OutboxSettings().retry_policy()
    assert rule.outage_backs_off_by_age is True
    assert (rule.max_attempts, rule.backoff_base_seconds, rule.backoff_max_seconds) == (
        policy.max_attempts,
        policy.base_delay_seconds,
        policy.max_delay_seconds,
    )
    assert rule.max_message_age_seconds == policy.max_age_seconds
    # And the probe leaves nothing behind
    with db.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM message_record")).scalar_one() == 0
