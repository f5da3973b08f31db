"""The benchmark's own tools: the latency SNS speaks enough SNS for boto3, and the capacity
simulation drains a backlog at the rates it is given."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Callable

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from bench.capacity_sim import Inputs, simulate, svg
from bench.latency_sns import LatencySnsProcess

pytestmark = pytest.mark.unit

TOPIC = "arn:aws:sns:us-east-1:123456789012:OrderEvents"


#: The delay the benchmarks use: a realistic round trip to SNS.
DELAY_MS = 20.0
FIFO_TOPIC = "arn:aws:sns:us-east-1:123456789012:OrderEvents.fifo"


@pytest.fixture(scope="module")
def latency_sns() -> LatencySnsProcess:
    with LatencySnsProcess(delay_ms=DELAY_MS) as sns:
        yield sns  # type: ignore[misc]


def _client(endpoint: str) -> object:
    return boto3.client(
        "sns",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}, parameter_validation=False),
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


def test_the_latency_sns_reports_the_round_trips_it_gave(latency_sns: LatencySnsProcess) -> None:
    # Given a fresh count and five calls, each timed by the caller
    sns = _client(latency_sns.endpoint)
    latency_sns.control(mode="ok", fail_every=0, delay_ms=DELAY_MS)
    latency_sns.reset_stats()
    seen_by_caller = []
    for _ in range(5):
        started = time.perf_counter()
        sns.publish_batch(TopicArn=TOPIC, PublishBatchRequestEntries=_entries(10))  # type: ignore[attr-defined]
        seen_by_caller.append((time.perf_counter() - started) * 1000)
    # Then it reports one round trip per call, none shorter than its delay, none longer than the
    # caller saw (the stand-in's answer is part of the caller's wait)
    trips = latency_sns.stats()["round_trip_ms"]
    assert trips["calls"] == 5
    assert DELAY_MS <= trips["p50"] <= trips["p99"] == trips["max"] <= max(seen_by_caller)
    # And a reset starts the count again
    latency_sns.reset_stats()
    assert latency_sns.stats()["round_trip_ms"] == {"calls": 0, "p50": None, "p99": None, "max": None}


def _refusal(call: Callable[[], object]) -> tuple[int, str]:
    with pytest.raises(ClientError) as refused:
        call()
    error = refused.value.response
    return error["ResponseMetadata"]["HTTPStatusCode"], error["Error"]["Code"]


@pytest.mark.parametrize(
    ("topic", "entries", "code"),
    [
        (TOPIC, [], "EmptyBatchRequest"),
        (TOPIC, _entries(11), "TooManyEntriesInBatchRequest"),
        (TOPIC, [{"Id": "same", "Message": "a"}, {"Id": "same", "Message": "b"}], "BatchEntryIdsNotDistinct"),
        (TOPIC, [{"Id": "not valid!", "Message": "a"}], "InvalidBatchEntryId"),
        # 2 x 128 KiB of bodies and a one-byte attribute: one byte over 256 KiB in all
        (
            TOPIC,
            [
                {"Id": "a", "Message": "x" * 128 * 1024},
                {
                    "Id": "b",
                    "Message": "x" * (128 * 1024 - len("k") - len("String")),
                    "MessageAttributes": {"k": {"DataType": "String", "StringValue": "v"}},
                },
            ],
            "BatchRequestTooLong",
        ),
        (FIFO_TOPIC, [{"Id": "a", "Message": "m", "MessageDeduplicationId": "d"}], "InvalidParameter"),
    ],
    ids=["empty", "eleven-entries", "same-ids", "bad-id", "over-256-KiB", "fifo-without-group"],
)
def test_the_latency_sns_refuses_the_batches_sns_refuses(
    latency_sns: LatencySnsProcess, topic: str, entries: list[dict[str, object]], code: str
) -> None:
    sns = _client(latency_sns.endpoint)
    latency_sns.control(mode="ok", fail_every=0)
    latency_sns.reset_stats()
    # When the batch goes out (botocore's client-side validation off: the server judges, as SNS does)
    status, answered = _refusal(
        lambda: sns.publish_batch(TopicArn=topic, PublishBatchRequestEntries=entries)  # type: ignore[attr-defined]
    )
    # Then it is refused whole, with SNS's code, and nothing is counted as published
    assert (status, answered) == (400, code)
    stats = latency_sns.stats()
    assert stats["refused"] == {code: 1} and stats["entries"] == 0


def test_the_latency_sns_accepts_exactly_256_kib_and_a_fifo_batch_with_groups(
    latency_sns: LatencySnsProcess,
) -> None:
    sns = _client(latency_sns.endpoint)
    latency_sns.control(mode="ok", fail_every=0)
    # At the limit: two bodies of 128 KiB
    at_limit = [{"Id": "a", "Message": "x" * 128 * 1024}, {"Id": "b", "Message": "y" * 128 * 1024}]
    assert len(sns.publish_batch(TopicArn=TOPIC, PublishBatchRequestEntries=at_limit)["Successful"]) == 2  # type: ignore[attr-defined]
    fifo = [{"Id": "a", "Message": "m", "MessageGroupId": "g", "MessageDeduplicationId": "d"}]
    assert sns.publish_batch(TopicArn=FIFO_TOPIC, PublishBatchRequestEntries=fifo)["Failed"] == []  # type: ignore[attr-defined]


def test_the_latency_sns_refuses_a_publish_sns_refuses(latency_sns: LatencySnsProcess) -> None:
    sns = _client(latency_sns.endpoint)
    latency_sns.control(mode="ok", fail_every=0)
    too_long = lambda: sns.publish(TopicArn=TOPIC, Message="x" * (256 * 1024 + 1))  # type: ignore[attr-defined]  # noqa: E731
    assert _refusal(too_long) == (400, "InvalidParameter")
    no_group = lambda: sns.publish(TopicArn=FIFO_TOPIC, Message="m")  # type: ignore[attr-defined]  # noqa: E731
    assert _refusal(no_group) == (400, "InvalidParameter")


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
