"""The benchmark's own tools: the latency SNS speaks enough SNS for boto3, and the capacity
simulation drains a backlog at the rates it is given."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from bench.capacity_sim import Inputs, simulate, svg
from bench.latency_sns import LatencySnsProcess

pytestmark = pytest.mark.unit

TOPIC = "arn:aws:sns:us-east-1:123456789012:OrderEvents"


@pytest.fixture(scope="module")
def latency_sns() -> LatencySnsProcess:
    with LatencySnsProcess(delay_ms=1) as sns:
        yield sns  # type: ignore[misc]


def _client(endpoint: str) -> object:
    return boto3.client(
        "sns",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
    )


def _entries(count: int) -> list[dict[str, object]]:
    return [{"Id": f"e{i}", "Message": f"m{i}"} for i in range(count)]


def test_the_latency_sns_answers_publish_and_publish_batch_as_sns_does(
    latency_sns: LatencySnsProcess,
) -> None:
    sns = _client(latency_sns.endpoint)
    latency_sns.control(mode="ok", fail_every=0)
    # A Publish gets a message id; a PublishBatch gets one per entry, by the entry's own id
    assert sns.publish(TopicArn=TOPIC, Message="hello")["MessageId"]  # type: ignore[attr-defined]
    answer = sns.publish_batch(TopicArn=TOPIC, PublishBatchRequestEntries=_entries(10))  # type: ignore[attr-defined]
    assert sorted(s["Id"] for s in answer["Successful"]) == sorted(f"e{i}" for i in range(10))
    assert answer["Failed"] == []


def test_the_latency_sns_fails_entries_and_whole_calls_on_demand(latency_sns: LatencySnsProcess) -> None:
    sns = _client(latency_sns.endpoint)
    # Failed entries come back under Failed with HTTP 200, as SNS reports partial failures
    latency_sns.control(mode="ok", fail_every=2)
    answer = sns.publish_batch(TopicArn=TOPIC, PublishBatchRequestEntries=_entries(4))  # type: ignore[attr-defined]
    assert len(answer["Successful"]) == 2
    assert [f["Code"] for f in answer["Failed"]] == ["InternalError", "InternalError"]
    # An outage refuses every call
    latency_sns.control(mode="outage", fail_every=0)
    with pytest.raises(ClientError, match="InternalError"):
        sns.publish_batch(TopicArn=TOPIC, PublishBatchRequestEntries=_entries(1))  # type: ignore[attr-defined]
    latency_sns.control(mode="throttle")
    with pytest.raises(ClientError, match="Throttling"):
        sns.publish(TopicArn=TOPIC, Message="x")  # type: ignore[attr-defined]
    latency_sns.control(mode="ok")
    assert latency_sns.stats()["calls"] >= 3


def test_one_relay_drains_a_backlog_at_its_rate_and_fan_out_stays_within_its_bound() -> None:
    # Given 1,000 orders/s (2,000 messages/s) and SNS down for 10 minutes: 1.2 M rows due at recovery
    one = Inputs(cpu_ms_per_message=0.4, max_relays=1)
    # When one relay (latency bound 5,000/s, CPU bound 0.72 / 0.4 ms = 1,809/s) drains them
    result = simulate(one)
    # Then it takes the backlog over its rate, plus the schedule's gaps, to drain
    assert one.relay_rate == pytest.approx((1280 / 1769) / 0.0004)
    drained = result.minutes_after_recovery(result.drained_at)
    assert drained is not None
    assert 1_200_000 / one.relay_rate / 60 < drained < 1_200_000 / one.relay_rate / 60 * 60 / 57 + 1.5
    # And with fan-out bounded by 4 it drains sooner, never with more than 4 relays at once
    fan = simulate(Inputs(cpu_ms_per_message=0.4, max_relays=4))
    assert fan.most_relays_at_once <= 4 and fan.relays_started > 0
    assert fan.drained_at is not None and fan.drained_at < result.drained_at  # type: ignore[operator]


def test_the_capacity_figure_is_well_formed_svg() -> None:
    results = [simulate(Inputs(max_relays=n), horizon=1_500) for n in (1, 4)]
    root = ET.fromstring(svg(results, title="backlog & recovery"))  # noqa: S314 - our own output
    assert root.tag.endswith("svg")
    assert len(root.findall("{http://www.w3.org/2000/svg}polyline")) == 4  # two panels, two lines
