"""The benchmark's bookkeeping: medians, percentiles, ratios, targets, the report files and the
MemorySize rule. No timing is asserted anywhere."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench.capacity_sim import ASSUMED_COLD_START_SECONDS, relay_cold_start
from bench.cold_start import FULL_VCPU_MB, choose_memory_size, memory_for_cpu, memory_size_for
from bench.stats import Report, Section, Target, median, median_ratio, percentile, ratio
from payment_outbox_dev.measurement import fmt, table

pytestmark = pytest.mark.unit


def test_median_of_odd_and_even_counts() -> None:
    # Given rounds in no particular order / Then the median is the middle one, or the mean of the two
    assert median([5.0, 1.0, 3.0]) == 3.0
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5


def test_median_of_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="no values"):
        median([])


def test_percentile_is_nearest_rank_and_an_observed_value() -> None:
    # Given 1..100 / Then p50 and p99 are observed values, p100 is the maximum and p0 the minimum
    values = [float(v) for v in range(100, 0, -1)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile(values, 0) == 1.0
    # And with few samples p99 is the largest one, never an interpolation
    assert percentile([1.0, 2.0, 10.0], 99) == 10.0


def test_percentile_outside_0_to_100_is_refused() -> None:
    with pytest.raises(ValueError, match="within"):
        percentile([1.0], 101)


def test_ratio_handles_a_zero_denominator() -> None:
    assert ratio(6.0, 3.0) == 2.0
    assert ratio(1.0, 0.0) == math.inf
    assert math.isnan(ratio(0.0, 0.0))


def test_median_ratio_pairs_each_round_with_its_own_baseline() -> None:
    # Given per-round figures where the baseline drifts but the ratio stays 2x in most rounds
    system = [20.0, 40.0, 90.0]
    baseline = [10.0, 20.0, 30.0]
    # Then the median of per-round ratios is 2.0 (the ratio of medians would say 2.0 only by chance)
    assert median_ratio(system, baseline) == 2.0
    with pytest.raises(ValueError, match="one denominator"):
        median_ratio([1.0], [1.0, 2.0])


@pytest.mark.parametrize(
    ("value", "op", "bound", "met"),
    [(5.0, ">=", 5.0, True), (4.99, ">=", 5.0, False), (1.5, "<=", 1.5, True), (1.6, "<=", 1.5, False)],
)
def test_a_target_is_met_on_the_right_side_of_its_bound(
    value: float, op: str, bound: float, met: bool
) -> None:
    assert Target("t", value, op, bound).met is met


def test_a_target_with_an_unknown_comparison_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown comparison"):
        _ = Target("t", 1.0, "==", 1.0).met


def test_fmt_keeps_three_significant_figures() -> None:
    assert fmt(1234.5) == "1,234"  # whole numbers from 100 up, with separators
    assert fmt(12.345) == "12.3"
    assert fmt(0.012345) == "0.0123"
    assert fmt(0) == "0"
    assert fmt(4) == "4" and fmt(36165) == "36,165"  # counts stay whole
    assert fmt(math.inf) == "inf"
    assert fmt(True) == "True"


def test_table_formats_numbers_and_leaves_text_alone() -> None:
    assert table(["a", "b"], [["x", 2.3456]]) == ["| a | b |", "|---|---|", "| x | 2.35 |"]


def test_the_report_writes_every_figure_and_verdict_to_the_json(tmp_path: Path) -> None:
    # Given a report with one section, one met and one missed target
    section = Section("relay", "Relay", figures={"ratio": 5.5})
    section.targets = [Target("vs naive", 5.5, ">=", 5.0), Target("vs limit", 0.5, ">=", 0.7)]
    report = Report(machine={"cpus": 2}, settings={"rounds": 5}, sections=[section], load={"cpus": 2})
    # When it is written
    report.write(tmp_path / "docs" / "benchmarks.json")
    # Then the JSON holds the figures, each target's verdict, the machine and its load
    data = json.loads((tmp_path / "docs" / "benchmarks.json").read_text())
    assert data["sections"]["relay"]["figures"] == {"ratio": 5.5}
    assert data["sections"]["relay"]["failed"] is False
    assert [t["met"] for t in data["sections"]["relay"]["targets"]] == [True, False]
    assert (
        data["machine"] == {"cpus": 2} and data["settings"] == {"rounds": 5} and data["load"] == {"cpus": 2}
    )


@pytest.mark.parametrize(("peak", "size"), [(60.0, 256), (127.0, 256), (130.0, 384), (200.0, 512)])
def test_memory_size_is_twice_the_peak_in_128_mb_steps_and_at_least_256(peak: float, size: int) -> None:
    assert memory_size_for(peak) == size


def test_memory_size_needs_a_measured_peak() -> None:
    with pytest.raises(ValueError, match="measured peak"):
        memory_size_for(float("nan"))


def test_memory_for_cpu_scales_one_core_of_cpu_to_lambdas_share() -> None:
    # Given 600 ms of one core's CPU and a 1,500 ms budget: 600 x 1769 / 1500 = 707.6 MB -> 768 MB
    assert memory_for_cpu(600.0, 1500.0) == 768
    # And the result stays within Lambda's 128..10,240 MB
    assert memory_for_cpu(1.0, 1000.0) == 128
    assert memory_for_cpu(100_000.0, 1.0) == 10_240
    with pytest.raises(ValueError, match="positive"):
        memory_for_cpu(0.0, 1.0)


def test_the_relay_cpu_rule_stops_at_one_vcpu_where_one_interpreter_can_use_no_more() -> None:
    # Given a relay whose CPU per message would need more than one vCPU at the bare loop's rate
    figures = {
        "cpu_ms_per_message_median": {"real": 0.24},
        "messages_per_second_median": {"real": 2500.0, "bare": 3200.0},
    }

    # When the memory rules weigh it, Then the relay CPU rule asks for one vCPU, no more
    size, rule = choose_memory_size("OutboxRelayFunction", 94.0, 600.0, figures)
    assert (size, rule) == (1792, "relay CPU")
    assert size >= FULL_VCPU_MB > size - 128

    # And a relay light enough for less gets less
    figures["cpu_ms_per_message_median"]["real"] = 0.05
    assert choose_memory_size("OutboxRelayFunction", 94.0, 600.0, figures) == (640, "relay CPU")


def test_the_simulated_cold_start_is_the_relays_measured_import_on_the_lambdas_share() -> None:
    # Given the cold-start section's figures as the report records them
    recorded = json.loads((Path(__file__).parent / "data" / "benchmarks_quick.json").read_text())
    cold = recorded["sections"]["cold_start"]["figures"]
    import_ms = cold["functions"]["OutboxRelayFunction"]["import_ms_median"]

    # Then a started relay's cold start is that import, stretched below one vCPU and not above it
    assert relay_cold_start(cold, 896)[0] == pytest.approx(import_ms / 1000 * FULL_VCPU_MB / 896)
    assert relay_cold_start(cold, 1792) == (
        pytest.approx(import_ms / 1000),
        "the relay's import measured in this run, on the Lambda's CPU share",
    )
    # And without the section it is an assumption, said as one
    assert relay_cold_start(None, 1792) == (
        ASSUMED_COLD_START_SECONDS,
        "assumed: the cold-start section did not run",
    )


def test_make_bench_fails_when_a_section_fails_or_a_target_is_missed() -> None:
    from bench.__main__ import exit_status

    said: list[str] = []
    met = Section("relay", "Relay", targets=[Target("vs naive", 12.0, ">=", 10.0)])
    # Every section measured and every target met: success
    assert exit_status(Report({}, {}, sections=[met]), said.append) == 0
    # A section that could not measure: failure, named
    broken = Section("fan_out", "fan_out: not measured", failed=True)
    assert exit_status(Report({}, {}, sections=[met, broken]), said.append) == 1
    # A missed target: failure, named
    missed = Section("relays", "Relays", targets=[Target("2 relays vs 1", 1.2, ">=", 1.6)])
    assert exit_status(Report({}, {}, sections=[met, missed]), said.append) == 1
    assert said == ["FAILED section: fan_out", "MISSED target: 2 relays vs 1"]
