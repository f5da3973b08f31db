"""Capacity, simulated: how long a backlog left by an SNS outage takes to drain, with one relay and
with fan-out — a small discrete-event simulation fed with the figures ``make bench`` measures and
the quotas in docs/capacity.md.

The model, event by event:
- orders arrive at a steady rate, two messages each; while SNS is down the after-commit publish
  fails, and every row becomes due 1-2 s after its commit (its retry time);
- EventBridge starts a relay run every ``schedule_period`` seconds; while SNS is down a run's first
  claim is refused and the run ends (the relay's rule), so the backlog keeps its attempts;
- once SNS is back, a run drains claims of ``claim_size`` rows until ``safety_margin`` before its
  timeout; a claim takes ``claim_size / rate`` seconds, where one relay's rate is the smaller of its
  latency bound (``in_flight`` requests of 10 every round trip) and its CPU bound (the measured CPU per
  message against the Lambda's CPU share), and all relays together stay within the SNS publish quota
  left after live traffic (which the after-commit path keeps publishing itself);
- with fan-out, a run that has drained for ``fan_out_after`` seconds and still finds more due rows
  than it can drain before its deadline starts up to ``max_relays - 1`` more runs, which begin after
  a cold start and stop by its deadline;
- the relay drains in due order, so the oldest due row's age is the time since the first row not
  yet drained fell due.

The figure is written by hand as SVG (no plotting dependency: the file is small, deterministic text
that diffs cleanly and renders on GitHub and in any browser).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Inputs:
    orders_per_second: float = 1_000.0
    messages_per_order: int = 2
    outage_seconds: float = 600.0
    #: EventBridge rate(1 minute), the relay's Timeout, and its safety margin (SAFETY_MARGIN_MS).
    schedule_period: float = 60.0
    run_timeout: float = 60.0
    safety_margin: float = 3.0
    #: Where the schedule's ticks fall relative to the recovery (0: a run starts as SNS recovers).
    schedule_phase: float = 30.0
    #: Measured: the SNS round trip, requests in flight, CPU per message of the relay.
    round_trip_ms: float = 20.0
    in_flight: int = 10
    cpu_ms_per_message: float = 0.3
    #: The Lambda's CPU share at its memory size (1,769 MB is one vCPU).
    lambda_memory_mb: int = 1280
    claim_size: int = 200
    cold_start_seconds: float = 2.0
    fan_out_after: float = 2.0
    #: Quota assumed in docs/capacity.md: SNS publish, us-east-1, messages per second.
    sns_quota: float = 30_000.0
    max_relays: int = 1

    @property
    def arrivals(self) -> float:
        return self.orders_per_second * self.messages_per_order

    @property
    def relay_rate(self) -> float:
        """One relay's messages per second: the lower of its latency and CPU bounds."""
        latency_bound = self.in_flight * 10 / (self.round_trip_ms / 1000)
        cpu_bound = (self.lambda_memory_mb / 1769) / (self.cpu_ms_per_message / 1000)
        return min(latency_bound, cpu_bound)


@dataclass
class Result:
    inputs: Inputs
    #: (seconds since the outage began, due rows, oldest due row's age in seconds)
    curve: list[tuple[float, float, float]] = field(default_factory=list)
    drained_at: float | None = None
    age_under_10s_at: float | None = None
    relays_started: int = 0
    most_relays_at_once: int = 0

    def minutes_after_recovery(self, moment: float | None) -> float | None:
        return None if moment is None else (moment - self.inputs.outage_seconds) / 60

    def summary(self) -> dict[str, Any]:
        return {
            "max_relays": self.inputs.max_relays,
            "relay_messages_per_second": self.inputs.relay_rate,
            "backlog_at_recovery": self.inputs.arrivals * self.inputs.outage_seconds,
            "drained_minutes_after_recovery": self.minutes_after_recovery(self.drained_at),
            "oldest_due_under_10s_minutes_after_recovery": self.minutes_after_recovery(self.age_under_10s_at),
            "relays_started": self.relays_started,
            "most_relays_at_once": self.most_relays_at_once,
        }


def simulate(inputs: Inputs, *, horizon: float = 3_600.0, sample_every: float = 5.0) -> Result:
    result = Result(inputs)
    arrivals, recovery = inputs.arrivals, inputs.outage_seconds
    drained = 0.0  # rows of the outage's backlog published so far, oldest first
    backlog_total = arrivals * recovery

    def due_rows(now: float) -> float:
        written = arrivals * min(now, recovery)
        return max(0.0, written - drained)

    def oldest_age(now: float) -> float:
        if due_rows(now) <= 0:
            return 0.0
        return max(0.0, now - (drained / arrivals + 1.5))

    # Events: (time, order, kind, data). Kinds: tick (a scheduled run starts), start (a fanned-out
    # run starts after its cold start), claim (a run's claim is published and recorded).
    events: list[tuple[float, int, str, dict[str, Any]]] = []
    order = 0

    def push(moment: float, kind: str, **data: Any) -> None:
        nonlocal order
        order += 1
        heapq.heappush(events, (moment, order, kind, data))

    first_tick = recovery - inputs.schedule_period + inputs.schedule_phase
    tick = first_tick % inputs.schedule_period
    while tick < horizon:
        push(tick, "tick")
        tick += inputs.schedule_period
    moment = 0.0
    while moment <= horizon:
        push(moment, "sample")
        moment += sample_every

    active = 0

    def per_relay_rate() -> float:
        shared_quota = max(0.0, inputs.sns_quota - arrivals) / max(1, active)
        return min(inputs.relay_rate, shared_quota)

    def claim(now: float, run: dict[str, Any]) -> None:
        """Start the run's next claim, or end the run."""
        nonlocal active, drained
        if now >= run["deadline"] or due_rows(now) <= 0 or now < recovery:
            active -= 1
            return
        rows = min(inputs.claim_size, due_rows(now))
        run["claimed"] = rows
        drained += rows  # claimed rows leave the due set at once (leased)
        push(now + rows / per_relay_rate(), "claim", run=run)

    while events:
        now, _, kind, data = heapq.heappop(events)
        if now > horizon:
            break
        if kind == "sample":
            result.curve.append((now, due_rows(now), oldest_age(now)))
            if now >= recovery and result.drained_at is None and due_rows(now) <= 0:
                result.drained_at = now
            if now >= recovery and result.age_under_10s_at is None and oldest_age(now) < 10:
                result.age_under_10s_at = now
            continue
        if kind == "tick":
            run = {"started": now, "deadline": now + inputs.run_timeout - inputs.safety_margin, "root": True}
            active += 1
            result.most_relays_at_once = max(result.most_relays_at_once, active)
            claim(now, run)
            continue
        if kind == "start":
            run = data["run"]
            active += 1
            result.most_relays_at_once = max(result.most_relays_at_once, active)
            claim(now, run)
            continue
        run = data["run"]  # a claim finished
        if (
            run.get("root")
            and not run.get("decided")
            and now - run["started"] >= inputs.fan_out_after
            and inputs.max_relays > 1
        ):
            run["decided"] = True
            seconds_left = run["deadline"] - now
            per_run = per_relay_rate() * seconds_left
            wanted = min(inputs.max_relays, math.ceil(due_rows(now) / per_run)) if per_run > 0 else 1
            for _ in range(wanted - 1):
                push(now + inputs.cold_start_seconds, "start", run={"deadline": run["deadline"]})
            result.relays_started += max(0, wanted - 1)
        claim(now, run)
    del backlog_total
    return result


def scenarios(measured: dict[str, float]) -> list[Result]:
    """One relay, and fan-out with the template's default bound and with a larger one."""
    base = Inputs(
        round_trip_ms=measured.get("round_trip_ms", 20.0),
        in_flight=int(measured.get("in_flight", 10)),
        cpu_ms_per_message=measured.get("cpu_ms_per_message", 0.3),
        claim_size=int(measured.get("claim_size", 200)),
        cold_start_seconds=measured.get("cold_start_seconds", 2.0),
    )
    return [simulate(_with(base, max_relays=n)) for n in (1, 4, 10)]


def _with(inputs: Inputs, **changes: Any) -> Inputs:
    return Inputs(**{**asdict(inputs), **changes})


# --- the figure -------------------------------------------------------------------------------------

_COLOURS = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd")


def svg(results: list[Result], *, title: str) -> str:
    """Two panels over time: due rows, and the oldest due row's age; the outage shaded."""
    width, panel_h, left, right, top, gap = 760, 220, 70, 20, 40, 60
    height = top + 2 * panel_h + gap + 70
    outage_end = results[0].inputs.outage_seconds / 60
    end_minutes = max((r.drained_at or r.curve[-1][0]) / 60 for r in results) + 3
    x_max = math.ceil(end_minutes / 5) * 5
    plot_w = width - left - right

    def x(minutes: float) -> float:
        return left + plot_w * minutes / x_max

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="15">{_escape(title)}</text>',
    ]

    def rows_due(row: tuple[float, float, float]) -> float:
        return row[1]

    def age_minutes(row: tuple[float, float, float]) -> float:
        return row[2] / 60

    panels: tuple[tuple[str, int, Callable[[tuple[float, float, float]], float], str, float], ...] = (
        ("due rows", 1, rows_due, "{:.1f} M", 1e6),
        ("oldest due row's age (minutes)", 2, age_minutes, "{:.0f}", 1),
    )
    for label, index, value, tick_format, tick_scale in panels:
        y0 = top + (index - 1) * (panel_h + gap)
        y_max_raw = max(value(row) for r in results for row in r.curve if row[0] / 60 <= x_max) or 1
        y_step = _nice_step(y_max_raw / 4)
        y_max = math.ceil(y_max_raw / y_step) * y_step

        def y(v: float, y0: float = y0, y_max: float = y_max) -> float:
            return y0 + panel_h - panel_h * v / y_max

        parts.append(
            f'<rect x="{x(0):.1f}" y="{y0}" width="{x(outage_end) - x(0):.1f}" height="{panel_h}" '
            'fill="#f2f2f2"/>'
        )
        parts.append(
            f'<text x="{(x(0) + x(outage_end)) / 2:.1f}" y="{y0 + 16}" text-anchor="middle" '
            'fill="#777">SNS down</text>'
        )
        tick = 0.0
        while tick <= y_max + 1e-9:
            parts.append(
                f'<line x1="{left}" x2="{width - right}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
                'stroke="#e0e0e0"/>'
            )
            parts.append(
                f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">'
                f"{tick_format.format(tick / tick_scale)}</text>"
            )
            tick += y_step
        for minute in range(0, x_max + 1, 5):
            parts.append(
                f'<text x="{x(minute):.1f}" y="{y0 + panel_h + 16}" text-anchor="middle">{minute}</text>'
            )
        parts.append(
            f'<line x1="{left}" x2="{left}" y1="{y0}" y2="{y0 + panel_h}" stroke="#333"/>'
            f'<line x1="{left}" x2="{width - right}" y1="{y0 + panel_h}" y2="{y0 + panel_h}" stroke="#333"/>'
        )
        parts.append(
            f'<text x="18" y="{y0 + panel_h / 2}" transform="rotate(-90 18 {y0 + panel_h / 2})" '
            f'text-anchor="middle">{_escape(label)}</text>'
        )
        for colour, result in zip(_COLOURS, results, strict=False):
            points = " ".join(
                f"{x(row[0] / 60):.1f},{y(value(row)):.1f}" for row in result.curve if row[0] / 60 <= x_max
            )
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>')
    legend_y = top + 2 * panel_h + gap + 36
    parts.append(
        f'<text x="{width / 2}" y="{legend_y - 14}" text-anchor="middle">minutes since SNS went down</text>'
    )
    for i, (colour, result) in enumerate(zip(_COLOURS, results, strict=False)):
        lx = left + i * 230
        name = (
            "1 relay"
            if result.inputs.max_relays == 1
            else f"fan-out, MaxRelayConcurrency {result.inputs.max_relays}"
        )
        drained = result.minutes_after_recovery(result.drained_at)
        suffix = f": drained {drained:.1f} min after recovery" if drained is not None else ": not drained"
        parts.append(
            f'<line x1="{lx}" x2="{lx + 24}" y1="{legend_y + 10}" y2="{legend_y + 10}" '
            f'stroke="{colour}" stroke-width="3"/>'
        )
        parts.append(f'<text x="{lx + 30}" y="{legend_y + 14}">{_escape(name + suffix)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _nice_step(raw: float) -> float:
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for factor in (1, 2, 2.5, 5, 10):
        if factor * magnitude >= raw:
            return factor * magnitude
    return 10 * magnitude


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def write_figure(results: list[Result], path: Path) -> None:
    inputs = results[0].inputs
    title = (
        f"{inputs.orders_per_second:,.0f} orders/s, SNS down {inputs.outage_seconds / 60:.0f} min: "
        "the backlog after recovery"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(svg(results, title=title), encoding="utf-8")


def capacity_section(latency_figures: dict[str, Any] | None, figure_path: Path) -> Any:
    """The simulation fed with this run's measured relay figures; writes the figure."""
    from bench.stats import Section, Target, table

    measured: dict[str, float] = {}
    if latency_figures:
        measured = {
            "round_trip_ms": float(latency_figures["delay_ms"]),
            "in_flight": float(latency_figures["max_in_flight"]),
            "cpu_ms_per_message": float(latency_figures["cpu_ms_per_message_median"]["real"]),
        }
    results = scenarios(measured)
    write_figure(results, figure_path)
    inputs = results[0].inputs
    section = Section(
        "capacity_simulation", "6. Capacity, simulated: draining the backlog of a 10-minute SNS outage"
    )
    section.figures = {
        "inputs": asdict(inputs) | {"relay_messages_per_second": inputs.relay_rate},
        "fed_from_this_run": bool(latency_figures),
        "scenarios": [r.summary() for r in results],
        "figure": figure_path.name,
    }
    rows = []
    for r in results:
        s = r.summary()
        rows.append(
            [
                "1 relay"
                if r.inputs.max_relays == 1
                else f"fan-out, MaxRelayConcurrency {r.inputs.max_relays}",
                s["drained_minutes_after_recovery"]
                if s["drained_minutes_after_recovery"] is not None
                else "not drained",
                s["oldest_due_under_10s_minutes_after_recovery"]
                if s["oldest_due_under_10s_minutes_after_recovery"] is not None
                else "never",
                s["relays_started"],
                s["most_relays_at_once"],
            ]
        )
    source = "this run's latency SNS figures" if latency_figures else "default figures (section 1 not run)"
    section.markdown = [
        f"bench/capacity_sim.py, a discrete-event simulation fed with {source}: one relay drains "
        f"{inputs.relay_rate:,.0f} messages/s (the lower of its latency bound, {inputs.in_flight} "
        f"requests of 10 per {inputs.round_trip_ms:g} ms, and its CPU bound, "
        f"{inputs.cpu_ms_per_message:.3f} ms per message "
        f"on a {inputs.lambda_memory_mb} MB Lambda's CPU share), in claims of {inputs.claim_size}; "
        f"{inputs.orders_per_second:,.0f} orders/s ({inputs.arrivals:,.0f} messages/s), SNS down "
        f"{inputs.outage_seconds / 60:g} minutes, the schedule's next run {inputs.schedule_phase:g} s after "
        f"recovery, fanned-out runs starting after a {inputs.cold_start_seconds:g} s cold start, all within "
        f"the SNS quota of {inputs.sns_quota:,.0f} messages/s less live traffic. Figure: "
        f"docs/{figure_path.name}.",
        "",
        *table(
            [
                "",
                "drained, minutes after recovery",
                "oldest due < 10 s, minutes after",
                "relays started",
                "most at once",
            ],
            rows,
        ),
    ]
    fan_out = results[1].summary()["drained_minutes_after_recovery"]
    section.targets = [
        Target(
            "Simulated: backlog of a 10-min outage drained with fan-out (4), minutes after recovery",
            fan_out if fan_out is not None else math.inf,
            "<=",
            10.0,
        ),
    ]
    return section
