"""The benchmark's own tools: the latency SNS speaks enough SNS for boto3, and the capacity
simulation drains a backlog at the rates it is given."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import replace

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from bench.capacity_sim import Inputs, OutageRule, simulate
from bench.latency_sns import LatencySnsProcess
from bench.report.figure import capacity_figure, capacity_svg

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


def test_the_latency_sns_counts_a_batchs_size_in_utf8_bytes_as_sns_does(
    latency_sns: LatencySnsProcess,
) -> None:
    sns = _client(latency_sns.endpoint)
    latency_sns.control(mode="ok", fail_every=0)

    # Bodies of two-byte characters (each sent as two %XX escapes), a space and a plus sign (sent as +
    # and %2B): 128 KiB and 128 KiB less the attribute's "k", "String" and "v", so 256 KiB in all
    def body(size: int) -> str:
        return "é" * ((size - 4) // 2) + " +" + "x" * ((size - 4) % 2 + 2)

    attribute = {"k": {"DataType": "String", "StringValue": "v"}}
    at_limit = [
        {"Id": "a", "Message": body(128 * 1024)},
        {"Id": "b", "Message": body(128 * 1024 - len("kStringv")), "MessageAttributes": attribute},
    ]
    assert sum(len(str(e["Message"]).encode()) for e in at_limit) + len("kStringv") == 256 * 1024
    assert len(sns.publish_batch(TopicArn=TOPIC, PublishBatchRequestEntries=at_limit)["Successful"]) == 2  # type: ignore[attr-defined]
    one_over = [at_limit[0], {**at_limit[1], "Message": at_limit[1]["Message"] + "x"}]
    assert _refusal(
        lambda: sns.publish_batch(TopicArn=TOPIC, PublishBatchRequestEntries=one_over)  # type: ignore[attr-defined]
    ) == (400, "BatchRequestTooLong")


def test_the_latency_sns_refuses_a_publish_sns_refuses(latency_sns: LatencySnsProcess) -> None:
    sns = _client(latency_sns.endpoint)
    latency_sns.control(mode="ok", fail_every=0)
    too_long = lambda: sns.publish(TopicArn=TOPIC, Message="x" * (256 * 1024 + 1))  # type: ignore[attr-defined]  # noqa: E731
    assert _refusal(too_long) == (400, "InvalidParameter")
    no_group = lambda: sns.publish(TopicArn=FIFO_TOPIC, Message="m")  # type: ignore[attr-defined]  # noqa: E731
    assert _refusal(no_group) == (400, "InvalidParameter")


def test_the_relay_rate_is_the_measured_one_scaled_to_the_lambdas_cpu_share() -> None:
    # Given a relay measured at 3,000 messages/s using 0.3 ms CPU each: 0.9 of a core here
    inputs = Inputs(measured_relay_messages_per_second=3_000.0, cpu_ms_per_message=0.3, lambda_memory_mb=1280)
    # Then on a 1,280 MB Lambda (1280/1769 of a vCPU) it drains that share of what it used
    assert inputs.cores_used_here == pytest.approx(0.9)
    assert inputs.relay_rate == pytest.approx(3_000.0 * (1280 / 1769) / 0.9)
    # And never more than its latency bound: 10 requests of 10 per 20 ms round trip
    fast = replace(inputs, cpu_ms_per_message=0.01, measured_relay_messages_per_second=9_000.0)
    assert fast.relay_rate == fast.latency_bound == pytest.approx(5_000.0)


def test_one_relay_drains_a_backlog_at_its_rate_and_fan_out_stays_within_its_bound() -> None:
    # Given 1,000 orders/s (2,000 messages/s) and SNS down for 10 minutes: 1.2 M rows at recovery
    one = Inputs(measured_relay_messages_per_second=2_000.0, cpu_ms_per_message=0.4, max_relays=1)
    result = simulate(one)
    assert result.backlog_at_recovery == pytest.approx(1_200_000)
    # Then one relay takes the backlog over its rate, plus the schedule's gaps, to drain
    drained = result.minutes_after_recovery(result.drained_at)
    assert drained is not None
    assert 1_200_000 / one.relay_rate / 60 < drained < 1_200_000 / one.relay_rate / 60 * 60 / 57 + 1.5
    # And with fan-out bounded by 4 it drains sooner, never with more than 4 relays at once
    fan = simulate(replace(one, max_relays=4))
    assert fan.most_relays_at_once <= 4 and fan.relays_started > 0
    assert fan.drained_at is not None and fan.drained_at < result.drained_at  # type: ignore[operator]


QUIET = Inputs(orders_per_second=0.5, outage_seconds=1_800.0, max_relays=4)


def test_when_refusals_charge_attempts_a_quiet_outage_fails_rows() -> None:
    # Given the rule of a relay that charges each refused claim's rows an attempt
    charging = replace(QUIET, rule=OutageRule(refusal_charges_attempt=True, max_attempts=5))
    result = simulate(charging)
    # Then the oldest rows, claimed again by every run, reach their last attempt: FAILED
    assert result.failed_rows > 0
    # And the FAILED rows are not drained: the backlog left is the rest
    assert result.backlog_at_recovery == pytest.approx(
        QUIET.arrivals * QUIET.outage_seconds - result.failed_rows
    )


def test_when_refusals_charge_no_attempt_the_same_outage_fails_nothing() -> None:
    kept = simulate(replace(QUIET, rule=OutageRule(refusal_charges_attempt=False, max_attempts=5)))
    assert kept.failed_rows == 0
    assert kept.backlog_at_recovery == pytest.approx(QUIET.arrivals * QUIET.outage_seconds)
    assert kept.drained_at is not None


def test_a_max_message_age_fails_the_rows_refused_past_it() -> None:
    # Given no attempts charged but a 10-minute age limit, and a 30-minute outage
    aged = simulate(
        replace(QUIET, rule=OutageRule(refusal_charges_attempt=False, max_message_age_seconds=600.0))
    )
    # Then rows refused when older than 10 minutes are FAILED, and only those
    assert 0 < aged.failed_rows < QUIET.arrivals * QUIET.outage_seconds


def _doc_with_curves() -> dict[str, object]:
    results = [simulate(Inputs(max_relays=n), horizon=1_500) for n in (1, 4, 10)]
    return {
        "sections": {
            "capacity_simulation": {
                "failed": False,
                "figures": {
                    "inputs": {"outage_minutes": 10.0, "orders_per_second": 1_000.0, "schedule_period": 60.0},
                    "scenarios": [r.summary() for r in results],
                    "curves": {str(r.inputs.max_relays): [list(p) for p in r.curve] for r in results},
                },
            }
        }
    }


def test_the_capacity_figure_is_svg_from_a_plotting_library_and_the_same_for_the_same_json() -> None:
    doc = _doc_with_curves()
    first = capacity_svg(doc)  # type: ignore[arg-type]
    root = ET.fromstring(first)  # noqa: S314 - our own output
    assert root.tag.endswith("svg")
    assert capacity_svg(doc) == first  # type: ignore[arg-type]


def test_the_capacity_figure_is_readable_legend_and_axis_titles_clear_of_each_other() -> None:
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figure = capacity_figure(_doc_with_curves())  # type: ignore[arg-type]
    canvas = FigureCanvasAgg(figure)  # a raster canvas measures the text as drawn
    canvas.draw()
    renderer = canvas.get_renderer()
    rows_axis, age_axis = figure.axes
    legend = rows_axis.get_legend()
    entries = [t.get_window_extent(renderer) for t in legend.get_texts()]
    assert len(entries) == 3
    # No two legend entries overlap
    for a in range(len(entries)):
        for b in range(a + 1, len(entries)):
            assert not entries[a].overlaps(entries[b])
    # The x-axis title sits clear of the tick labels, and each y-axis title of its axis' labels
    x_title = age_axis.xaxis.label.get_window_extent(renderer)
    assert not any(
        x_title.overlaps(t.get_window_extent(renderer)) for t in age_axis.get_xticklabels() if t.get_text()
    )
    for axis in (rows_axis, age_axis):
        y_title = axis.yaxis.label.get_window_extent(renderer)
        assert not any(
            y_title.overlaps(t.get_window_extent(renderer)) for t in axis.get_yticklabels() if t.get_text()
        )
    plt.close(figure)


def test_an_outage_that_backs_off_by_age_fails_nothing_but_drains_later() -> None:
    # Given the same outage under a rule that charges nothing, with and without backing off by age
    busy = Inputs(measured_relay_messages_per_second=3_000.0, cpu_ms_per_message=0.25, max_relays=4)
    flat = simulate(replace(busy, rule=OutageRule(refusal_charges_attempt=False)))
    aged = simulate(
        replace(busy, rule=OutageRule(refusal_charges_attempt=False, outage_backs_off_by_age=True))
    )
    # Then neither fails a row, and the rows still backing off at recovery hold the drain back
    assert flat.failed_rows == aged.failed_rows == 0
    assert flat.drained_at is not None and aged.drained_at is not None
    assert aged.drained_at > flat.drained_at
