"""Medians, percentiles, ratios and the report: the only part of the benchmarks with unit tests.

Every headline figure is a ratio of two things measured in the same run, and every figure is the
median over repeated rounds, because timings on a shared machine drift from minute to minute.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


def median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("median of no values")
    return float(statistics.median(values))


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (p in 0..100): a value that was really observed, never interpolated."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= pct <= 100:
        raise ValueError("percentile must be within 0..100")
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return float(ordered[rank - 1])


def ratio(numerator: float, denominator: float) -> float:
    if denominator == 0:
        return math.inf if numerator else math.nan
    return numerator / denominator


def median_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float:
    """Median of the per-round ratios: each round's pair was measured side by side."""
    if len(numerators) != len(denominators):
        raise ValueError("ratios need one denominator per numerator")
    return median([ratio(n, d) for n, d in zip(numerators, denominators, strict=True)])


@dataclass
class Target:
    """``value`` must be ``op`` (">=" or "<=") ``bound``."""

    description: str
    value: float
    op: str
    bound: float

    @property
    def met(self) -> bool:
        if self.op == ">=":
            return self.value >= self.bound
        if self.op == "<=":
            return self.value <= self.bound
        raise ValueError(f"unknown comparison {self.op!r}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "met": self.met}


@dataclass
class Section:
    """One benchmark: its figures (JSON-ready) and the targets it checks. bench/render.py renders
    it from the JSON; nothing here is prose."""

    key: str
    title: str
    figures: dict[str, Any] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    #: The benchmark raised instead of measuring: ``make bench`` exits non-zero.
    failed: bool = False
    error: str | None = None


@dataclass
class Report:
    machine: dict[str, Any]
    settings: dict[str, Any]
    sections: list[Section] = field(default_factory=list)
    load: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    wall_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "load": self.load,
            "wall_seconds": self.wall_seconds,
            "settings": self.settings,
            "inputs": self.inputs,
            "sections": {
                s.key: {
                    "title": s.title,
                    "failed": s.failed,
                    "error": s.error,
                    "figures": s.figures,
                    "targets": [t.to_dict() for t in s.targets],
                }
                for s in self.sections
            },
        }

    def write(self, json_path: Path) -> None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")
