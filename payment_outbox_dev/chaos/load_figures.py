"""docs/load.md's figures, rendered from docs/load.json alone.

``make load`` measures, writes the JSON, then renders; ``python -m payment_outbox_dev.chaos.load_figures``
renders again from a JSON without measuring. Only the part of load.md between the two markers is
rendered: the words around it are written by hand and carry no figure. Every number in the rendered
part is a value of the JSON (a test renders a recorded JSON and checks each one).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from payment_outbox_dev.chaos.load import CREATE, NOTIFY
from payment_outbox_dev.measurement import fmt, table

BEGIN = (
    "<!-- The figures below are rendered from load.json beside this file by make load (again, without "
    "measuring: python -m payment_outbox_dev.chaos.load_figures); they are never edited by hand. -->"
)
END = "<!-- End of the rendered figures. -->"
JSON_NAME, MARKDOWN_NAME = "load.json", "load.md"


def figures_section(doc: dict[str, Any]) -> str:
    """The Markdown between the markers: what was run, where, the table, and what failed."""
    inputs, machine, load = doc["inputs"], doc["machine"], doc["load"]
    database = inputs["database"]
    counts = [fmt(w) for w in inputs["workers"]]
    counts_said = counts[0] if len(counts) == 1 else f"{', '.join(counts[:-1])} and {counts[-1]}"
    during = load["during"]
    lines = [
        f"One run per worker count ({counts_said} worker processes per function), each on a stack and a "
        f"database of its own, driven by {fmt(inputs['users'])} locust clients (locust "
        f"{inputs['locust']}) for {fmt(inputs['seconds'])} s; the stack's time scale "
        f"{fmt(inputs['time_scale'])}; the database server at {database['server']} "
        f"({database['version']}).",
        "",
        f"The machine: {machine.get('cpu model', machine['processor'])}, {fmt(machine['cpus'])} CPUs, "
        f"{machine.get('memory', 'memory unknown')}, {machine['python']} on {machine['platform']}. Its "
        "load average over one, five and fifteen minutes was "
        f"{_listed(load['at_start'], fmt)} as the runs began and {_listed(load['at_end'], fmt)} as they "
        f"ended; the one-minute load, sampled every {_whole(during['every_seconds'], fmt)} s while they ran, "
        f"averaged {fmt(during['mean'])} (at most {fmt(during['max'])}). The whole sweep took "
        f"{fmt(doc['wall_seconds'])} s.",
        "",
    ]
    rows: list[list[Any]] = []
    for run in doc["runs"]:
        run_load = run["load"]["during"]
        load_said = f"{fmt(run_load['mean'])} / {fmt(run_load['max'])}"
        if run["error"]:
            rows.append([run["workers"], f"not measured: {run['error']}", "-", "-", "-", "-", load_said])
            continue
        rows.append(
            [
                run["workers"],
                run["paid_orders"],
                run["paid_orders_per_second"],
                _percentiles(run["requests"].get(CREATE), fmt),
                _percentiles(run["requests"].get(NOTIFY), fmt),
                run["failed_requests"],
                load_said,
            ]
        )
    lines += table(
        [
            "workers per function",
            "paid orders",
            "paid orders/s",
            f"`{CREATE}` p50 / p95 / p99 ms",
            f"`{NOTIFY}` p50 / p95 / p99 ms",
            "failed requests",
            "one-minute load during the run (mean / max)",
        ],
        rows,
    )
    failures = [
        f"- {fmt(run['workers'])} worker(s): `{error['request']}` {error['error']} "
        f"({fmt(error['occurrences'])} times)"
        for run in doc["runs"]
        if not run["error"]
        for error in run["errors"]
    ] + [
        f"- {fmt(run['workers'])} worker(s): a client raised {exception['error']} "
        f"({fmt(exception['occurrences'])} times)"
        for run in doc["runs"]
        if not run["error"]
        for exception in run["exceptions"]
    ]
    if failures:
        lines += ["", "Failed requests (they fail `make load`):", "", *failures]
    return "\n".join(lines)


def _percentiles(request: dict[str, Any] | None, fmt: Callable[[float], str]) -> str:
    if request is None:
        return "no request"
    latency = request["latency_ms"]
    return " / ".join(fmt(latency[p]) for p in ("p50", "p95", "p99"))


def _whole(value: float, fmt: Callable[[float], str]) -> str:
    """A setting as it was given: 5, not 5.00."""
    return fmt(int(value)) if float(value).is_integer() else fmt(value)


def _listed(values: Sequence[float], fmt: Callable[[float], str]) -> str:
    return ", ".join(fmt(v) for v in values)


def render_into(markdown: str, doc: dict[str, Any]) -> str:
    """``markdown`` with the part between the markers rendered again from ``doc``; the rest as it was."""
    before, begin, rest = markdown.partition(BEGIN)
    _, end, after = rest.partition(END)
    if not begin or not end:
        raise ValueError(f"the document has no rendered part: it needs the markers {BEGIN!r} and {END!r}")
    # Blank lines around the part: the markers never join the paragraph or the table next to them.
    return f"{before}{BEGIN}\n\n{figures_section(doc)}\n\n{END}{after}"


def write_json(doc: dict[str, Any], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / JSON_NAME
    path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return path


def write_markdown(doc: dict[str, Any], out: Path) -> Path:
    """OUT/load.md's rendered part from ``doc`` (a load.md of the rendered part alone if there is none)."""
    path = out / MARKDOWN_NAME
    existing = path.read_text(encoding="utf-8") if path.is_file() else f"{BEGIN}\n{END}\n"
    path.write_text(render_into(existing, doc), encoding="utf-8")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m payment_outbox_dev.chaos.load_figures",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--json", type=Path, default=Path("docs") / JSON_NAME, help="the record to render (docs/load.json)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("docs"), help="the folder of the load.md to render into (docs)"
    )
    args = parser.parse_args(argv)
    doc = json.loads(args.json.read_text(encoding="utf-8"))
    print(f"wrote {write_markdown(doc, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
