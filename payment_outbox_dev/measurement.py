"""What a measuring run records beside its figures, and how it writes them: the machine it ran on, the
load the machine carried meanwhile, and numbers at three significant figures in Markdown tables. Shared
by ``make bench`` (bench/) and ``make load`` (chaos/load.py), so their reports read alike."""

from __future__ import annotations

import math
import os
import platform
import threading
from collections.abc import Sequence
from typing import Any


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
