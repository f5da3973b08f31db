"""Medians, percentiles, ratios and the report: the only part of the benchmarks with unit tests.

Every headline figure is a ratio of two things measured in the same run, and every figure is the
median over repeated rounds, because timings on a shared machine drift from minute to minute.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import threading
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


class LoadSampler:
    """The machine's one-minute load average, sampled while the benchmarks run: every figure
    competes with it for the cores."""

    def __init__(self, every_seconds: float = 5.0) -> None:
        self.every_seconds = every_seconds
        self.samples: list[float] = []
        self.at_start = loadavg()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every_seconds):
            self.samples.append(loadavg()[0])

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(timeout=self.every_seconds + 1)
        samples = self.samples or [loadavg()[0]]
        return {
            "cpus": os.cpu_count(),
            "at_start": self.at_start,
            "at_end": loadavg(),
            "during": {
                "every_seconds": self.every_seconds,
                "samples": len(samples),
                "mean": sum(samples) / len(samples),
                "max": max(samples),
            },
        }


def loadavg() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return [math.nan, math.nan, math.nan]


def fmt(value: float) -> str:
    """Three significant figures, no scientific notation for the magnitudes a benchmark produces."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    digits = max(0, 2 - math.floor(math.log10(abs(value))))
    return f"{value:.{digits}f}"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """A Markdown table; numbers are formatted with ``fmt``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(fmt(c) if isinstance(c, int | float) else str(c) for c in row) + " |")
    return lines


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
    }
    try:
        info["cpus"] = os.cpu_count()
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            models = {line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")}
        if models:
            info["cpu model"] = ", ".join(sorted(models))
        with open("/proc/meminfo", encoding="utf-8") as handle:
            first = handle.readline().split()
        info["memory"] = f"{int(first[1]) // 1024} MiB"
    except OSError:
        pass
    return info
