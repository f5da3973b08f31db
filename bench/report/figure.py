"""docs/capacity-drain.svg: the simulated outage's backlog over time, drawn with matplotlib."""

from __future__ import annotations

import io
from typing import Any

from payment_outbox_dev.measurement import fmt


def capacity_figure(doc: dict[str, Any]) -> Any:
    """The outage's backlog over time, one line per fan-out bound: rows waiting and the oldest due row's
    age, the outage shaded (a matplotlib Figure)."""
    import matplotlib

    matplotlib.use("svg")
    import matplotlib.pyplot as plt

    section = doc["sections"].get("capacity_simulation")
    plt.rcParams.update({"svg.hashsalt": "payment-outbox", "font.size": 10, "svg.fonttype": "none"})
    figure, (rows_axis, age_axis) = plt.subplots(2, 1, figsize=(9, 7), sharex=True, layout="constrained")
    if section is None or section.get("failed"):
        figure.suptitle("Capacity simulation not measured in this run")
    else:
        f = section["figures"]
        outage_minutes = f["inputs"]["outage_minutes"]
        for summary in f["scenarios"]:
            curve = f["curves"][str(summary["max_relays"])]
            minutes = [point[0] / 60 for point in curve]
            label = (
                "one relay"
                if summary["max_relays"] == 1
                else f"fan-out, MaxRelayConcurrency {summary['max_relays']}"
            )
            drained = summary["drained_minutes_after_recovery"]
            label += (
                f": drained {fmt(drained)} min after recovery" if drained is not None else ": not drained"
            )
            rows_axis.plot(minutes, [point[1] / 1e6 for point in curve], linewidth=2, label=label)
            age_axis.plot(minutes, [point[2] / 60 for point in curve], linewidth=2, label=label)
        ends = [s["drained_minutes_after_recovery"] for s in f["scenarios"]]
        if all(e is not None for e in ends):  # show the recovery, not the quiet hour after it
            rows_axis.set_xlim(0, outage_minutes + max(ends) + f["inputs"]["schedule_period"] / 60 * 5)
        for axis in (rows_axis, age_axis):
            axis.axvspan(0, outage_minutes, color="0.92", label="_nolegend_")
            axis.grid(True, color="0.85", linewidth=0.6)
        rows_axis.text(
            outage_minutes / 2,
            0.95,
            "SNS down",
            transform=rows_axis.get_xaxis_transform(),
            ha="center",
            va="top",
            color="0.4",
        )
        rows_axis.set_ylabel("rows waiting (millions)")
        age_axis.set_ylabel("oldest due row's age (minutes)")
        age_axis.set_xlabel("minutes since SNS went down")
        rows_axis.legend(loc="upper right", frameon=True)
        inputs = f["inputs"]
        figure.suptitle(
            f"{fmt(inputs['orders_per_second'])} orders/s, SNS down {fmt(outage_minutes)} min: "
            "the backlog after recovery"
        )
    return figure


def capacity_svg(doc: dict[str, Any]) -> str:
    """The figure as SVG text, written without dates or random ids: the same JSON, the same file."""
    import matplotlib.pyplot as plt

    figure = capacity_figure(doc)
    out = io.StringIO()
    figure.savefig(out, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(figure)
    return out.getvalue()
