"""Fan-out as the benchmark measures it: the real relay handler in separate processes, the scheduled
run starting the others through the relay's own launcher and a stand-in Lambda Invoke endpoint, on the
real MariaDB and the latency SNS."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import Engine

from bench.fan_out_bench import fan_out_run
from bench.latency_sns import LatencySnsProcess

pytestmark = pytest.mark.integration

TOPIC = "arn:aws:sns:us-east-1:123456789012:OrderEvents"
#: More than three runs' worth even at several thousand messages a second.
BACKLOG = 200_000


def test_a_backlog_one_run_cannot_drain_starts_relays_in_processes_of_their_own(
    db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = db.url.render_as_string(hide_password=False)
    environment = {
        "DATABASE_URL": url,
        "ORDER_EVENTS_TOPIC_ARN": TOPIC,
        "POWERTOOLS_SERVICE_NAME": "outbox-relay",
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        **{k: v for k, v in os.environ.items() if k.startswith(("AWS_", "POWERTOOLS_TRACE"))},
    }
    with LatencySnsProcess(delay_ms=20) as sns:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SNS", sns.endpoint)
        # When one scheduled run with MaxRelayConcurrency 3 meets the backlog
        outcome = fan_out_run(
            database_url=url, environment=environment, sns=sns, max_relays=3, rows=BACKLOG, run_seconds=12.0
        )
    # Then it started the two relays it may, each ran in a process of its own and drained rows
    assert outcome["relays_started"] == 2
    runs = outcome["relay_runs_detail"]
    assert len(runs) == 3 and all(r["published"] > 0 for r in runs)
    # And the started runs began after the scheduled one and stopped by its deadline
    scheduled, *started = runs
    assert all(
        scheduled["started_s"] < r["started_s"] and r["ended_s"] <= outcome["run_seconds"] for r in started
    )
    # And the backlog outlived the run (one run could not drain it), nothing was published twice
    assert outcome["backlog_left_at_the_deadline"] > 0
    assert outcome["rows_published_twice"] == 0
    assert outcome["sns_entries_accepted"] == outcome["rows_sent_by_the_deadline"]
