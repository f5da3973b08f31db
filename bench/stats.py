"""Medians, percentiles, ratios and the report: the only part of the benchmarks with unit tests.

Every headline figure is a ratio of two things measured in the same run, and every figure is the
median over repeated rounds, because timings on a shared machine drift from minute to minute.
"""

from __future__ import annotations

import json
import math
import platform
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
    """One benchmark: its figures (JSON-ready), a Markdown body, and the targets it checks."""

    key: str
    title: str
    figures: dict[str, Any] = field(default_factory=dict)
    markdown: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: The benchmark raised instead of measuring: ``make bench`` exits non-zero.
    failed: bool = False


@dataclass
class Report:
    machine: dict[str, Any]
    settings: dict[str, Any]
    method: list[str]
    sections: list[Section] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "settings": self.settings,
            "sections": {
                s.key: {
                    "title": s.title,
                    "figures": s.figures,
                    "targets": [t.to_dict() for t in s.targets],
                    "notes": s.notes,
                }
                for s in self.sections
            },
        }

    def to_markdown(self) -> str:
        lines = ["# Benchmarks", "", "Written by `make bench` (`python -m bench`); do not edit by hand.", ""]
        targets = [t for s in self.sections for t in s.targets]
        if targets:
            lines += ["## Targets", "", "| Target | Measured | Bound | Met |", "|---|---|---|---|"]
            lines += [
                f"| {t.description} | {fmt(t.value)} | {t.op} {fmt(t.bound)} | {_verdict(t)} |"
                for t in targets
            ]
            lines.append("")
        lines += ["## Machine", ""]
        lines += [f"- {name}: {value}" for name, value in self.machine.items()]
        lines += ["", "## Settings", ""]
        lines += [f"- {name}: {value}" for name, value in self.settings.items()]
        lines += ["", "## Method", ""]
        lines += [f"- {item}" for item in self.method]
        for section in self.sections:
            lines += ["", f"## {section.title}", ""]
            lines += section.markdown
            if section.notes:
                lines.append("")
                lines += [f"- {note}" for note in section.notes]
        return "\n".join(lines).rstrip() + "\n"

    def write(self, markdown_path: Path, json_path: Path) -> None:
        markdown_path.parent.mkdir(parents=True, exist_ok=True)
        markdown_path.write_text(self.to_markdown() + LOAD_SECTION, encoding="utf-8")
        json_path.write_text(json.dumps(self.to_json(), indent=2, sort_keys=False) + "\n", encoding="utf-8")


#: Kept at the end of every regenerated benchmarks.md: the load figures live in their own document.
LOAD_SECTION = """
## Load on the local stack

`make load` drives create + signed callback with locust against a local stack on MariaDB, with one
worker per function and with the default pool: the figures and how they are taken are in
[docs/load.md](load.md), kept apart from the benchmark figures above (which `make bench` writes).
"""


def _verdict(target: Target) -> str:
    return "yes" if target.met else "**no**"


def fmt(value: float) -> str:
    """Three significant figures, no scientific notation for the magnitudes a benchmark produces."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if math.isnan(value) or math.isinf(value):
        return str(value)
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
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
    }
    try:
        import os

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
