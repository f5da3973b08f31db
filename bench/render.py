"""The report, rendered from docs/benchmarks.json alone: docs/benchmarks.md, docs/capacity.md and
docs/capacity-drain.svg.

``make bench`` measures, writes the JSON, then calls this; ``python -m bench.render`` renders the docs
again from a JSON without measuring. Every number in the documents is a value of the JSON (a test
renders a recorded JSON and checks each one): the prose here carries words, never figures.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from bench.report.pages import write


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.render", description=__doc__)
    parser.add_argument(
        "--json",
        type=Path,
        default=Path("docs/benchmarks.json"),
        help="the report to render (docs/benchmarks.json)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("docs"), help="where the Markdown and the SVG go (docs)"
    )
    args = parser.parse_args(argv)
    for path in write(json.loads(args.json.read_text(encoding="utf-8")), args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
