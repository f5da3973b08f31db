"""Every section's renderer by the section's key, and the order the report shows them in."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.report.callback import commit_to_publish, latency_callback
from bench.report.capacity import capacity_simulation, cost
from bench.report.format import Figures
from bench.report.functions import cold_start, consumer_cost
from bench.report.queries import claim_cost, reconcile_cost
from bench.report.relay import fallback_latency, fan_out, relay_throughput

#: Sections in the report's order; each renders from its own figures (and the document's inputs).
ORDER = (
    "latency_relay_throughput",
    "fan_out",
    "fallback_latency",
    "latency_callback",
    "latency_commit_to_publish",
    "claim_cost",
    "reconcile_cost",
    "consumer_cost",
    "cold_start",
    "capacity_simulation",
    "cost",
)


RENDERERS: dict[str, Callable[[Figures, dict[str, Any]], tuple[str, list[str]]]] = {
    "latency_relay_throughput": relay_throughput,
    "fan_out": fan_out,
    "fallback_latency": fallback_latency,
    "latency_callback": latency_callback,
    "latency_commit_to_publish": commit_to_publish,
    "claim_cost": claim_cost,
    "reconcile_cost": reconcile_cost,
    "consumer_cost": consumer_cost,
    "cold_start": cold_start,
    "capacity_simulation": capacity_simulation,
    "cost": cost,
}
