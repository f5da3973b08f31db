"""docs/load.md's figures come from a run: its rendered part is a render of docs/load.json alone, every
number in it is a value of that JSON, the words around it carry no figure, and a sweep that failed
(a failed request, no paid order, a run that could not measure) says so and fails ``make load``."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest

from payment_outbox_dev.chaos.load import CREATE, NOTIFY, problems
from payment_outbox_dev.chaos.load_figures import BEGIN, END, figures_section, render_into, write_markdown
from payment_outbox_dev.measurement import fmt
from tests.docs_truth import load_json, untraced
from tests.support import ROOT

pytestmark = pytest.mark.unit

#: A JSON recorded by `make load ARGS="--workers 1,2 --users 2 --seconds 5"`, as measured.
FIXTURE = Path(__file__).parent / "data" / "load_quick.json"
DOCS = ROOT / "docs"


def verbatim_strings(doc: dict[str, Any]) -> list[str]:
    """Strings the figures may quote as they are, digits included: the machine's description, the
    database server and its version, locust's version, and what a failed run or request said."""
    strings = [v for v in doc["machine"].values() if isinstance(v, str)]
    for run in doc["runs"]:
        if run["error"]:
            strings.append(run["error"])
        strings += [error["error"] for error in run.get("errors", []) + run.get("exceptions", [])]
    # Only whole descriptions: a bare number is never quoted verbatim, it must be traced.
    described = [s for s in strings if re.search(r"[A-Za-z]", s)]
    database = doc["inputs"]["database"]
    return [*described, database["server"], database["version"], f"locust {doc['inputs']['locust']}"]


def untraced_numbers(text: str, doc: dict[str, Any]) -> list[str]:
    return untraced(text, doc, verbatim_strings(doc))


def _rendered_part(markdown: str) -> str:
    return markdown.split(BEGIN, 1)[1].split(END, 1)[0]


def _row(markdown: str, workers: int) -> str:
    return next(line for line in markdown.splitlines() if line.startswith(f"| {workers} |"))


@pytest.fixture(scope="module")
def recorded() -> dict[str, Any]:
    return load_json(FIXTURE)


def test_the_recorded_sweep_measured_every_run_and_passed(recorded: dict[str, Any]) -> None:
    assert [run["workers"] for run in recorded["runs"]] == recorded["inputs"]["workers"]
    assert problems(recorded) == []


def test_every_number_in_the_rendered_figures_comes_from_the_json(recorded: dict[str, Any]) -> None:
    assert untraced_numbers(figures_section(recorded), recorded) == []


def test_a_figure_typed_into_the_figures_is_caught(recorded: dict[str, Any]) -> None:
    # Given the render of the recorded sweep with one figure typed in by hand
    rendered = figures_section(recorded) + "\nWith four workers the stack pays 31.7 orders/s.\n"
    # Then the check names it
    assert untraced_numbers(rendered, recorded) == ["31.7"]


def test_the_table_says_each_runs_figures(recorded: dict[str, Any]) -> None:
    rendered = figures_section(recorded)
    for run in recorded["runs"]:
        cells = [c.strip() for c in _row(rendered, run["workers"]).strip("|").split("|")]
        create, notify = run["requests"][CREATE]["latency_ms"], run["requests"][NOTIFY]["latency_ms"]
        assert cells[:6] == [
            fmt(run["workers"]),
            fmt(run["paid_orders"]),
            fmt(run["paid_orders_per_second"]),
            " / ".join(fmt(create[p]) for p in ("p50", "p95", "p99")),
            " / ".join(fmt(notify[p]) for p in ("p50", "p95", "p99")),
            fmt(run["failed_requests"]),
        ]


def test_the_figures_follow_the_json_when_a_figure_changes(recorded: dict[str, Any]) -> None:
    # Given the same sweep with a different rate for its first run
    changed = copy.deepcopy(recorded)
    first = changed["runs"][0]
    first["paid_orders_per_second"] = 1234.0
    # Then its row says the new rate, and no longer the old one
    row = _row(figures_section(changed), first["workers"])
    assert "| 1,234 |" in row
    assert f"| {fmt(recorded['runs'][0]['paid_orders_per_second'])} |" not in row


def test_a_failed_sweep_renders_what_failed_and_fails_in_one_phrase_per_run(recorded: dict[str, Any]) -> None:
    # Given the sweep with failed callbacks in its first run and no paid order and no answer in its second
    failed = copy.deepcopy(recorded)
    first, second = failed["runs"][0], failed["runs"][1]
    first["failed_requests"] = 3
    first["errors"] = [
        {"request": NOTIFY, "error": "CatchResponseError('answered 500, not 200')", "occurrences": 3}
    ]
    second["paid_orders"], second["paid_orders_per_second"] = 0, 0.0
    # Then the figures list the failures, every number still traced
    rendered = figures_section(failed)
    assert (
        f"- {first['workers']} worker(s): `{NOTIFY}` CatchResponseError('answered 500, not 200') (3 times)"
        in (rendered)
    )
    assert untraced_numbers(rendered, failed) == []
    # And the sweep fails, one phrase per failed run naming it and why
    assert problems(failed) == [
        f"{first['workers']} worker(s): 3 failed request(s) "
        f"(first: {NOTIFY} CatchResponseError('answered 500, not 200'))",
        f"{second['workers']} worker(s): no paid order",
    ]


def test_a_client_that_raised_or_a_locust_that_failed_fails_the_sweep(recorded: dict[str, Any]) -> None:
    # Given the sweep with a client exception in its first run, and locust exiting 1 in its second
    failed = copy.deepcopy(recorded)
    first, second = failed["runs"][0], failed["runs"][1]
    first["exceptions"] = [{"error": "KeyError('orderNo')", "occurrences": 2}]
    second["locust_exit_code"] = 1
    # Then the figures list the exception, and the sweep fails naming both runs
    rendered = figures_section(failed)
    assert f"- {first['workers']} worker(s): a client raised KeyError('orderNo') (2 times)" in rendered
    assert untraced_numbers(rendered, failed) == []
    assert problems(failed) == [
        f"{first['workers']} worker(s): 1 kind(s) of exception in the clients (first: KeyError('orderNo'))",
        f"{second['workers']} worker(s): locust exited with 1",
    ]


def test_a_run_that_could_not_measure_is_rendered_and_fails_the_sweep(recorded: dict[str, Any]) -> None:
    broken = copy.deepcopy(recorded)
    workers, load = broken["runs"][0]["workers"], broken["runs"][0]["load"]
    broken["runs"][0] = {"workers": workers, "error": "RuntimeError: the stack exited with 1", "load": load}
    rendered = figures_section(broken)
    assert "not measured: RuntimeError: the stack exited with 1" in _row(rendered, workers)
    assert untraced_numbers(rendered, broken) == []
    assert problems(broken) == [f"{workers} worker(s): not measured (RuntimeError: the stack exited with 1)"]


def test_rendering_replaces_only_the_part_between_the_markers(
    recorded: dict[str, Any], tmp_path: Path
) -> None:
    # Given a load.md with words around an old rendered part
    (tmp_path / "load.md").write_text(f"# Words\n\nBefore.\n\n{BEGIN}\nold figures\n{END}\n\nAfter.\n")
    # When the recorded sweep is rendered into it
    write_markdown(recorded, tmp_path)
    # Then the words stay, and the part between the markers is the sweep's figures
    written = (tmp_path / "load.md").read_text()
    assert written == f"# Words\n\nBefore.\n\n{BEGIN}\n\n{figures_section(recorded)}\n\n{END}\n\nAfter.\n"


def test_a_document_without_the_markers_is_refused(recorded: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="no rendered part"):
        render_into("# Load\n\nNo markers here.\n", recorded)


def test_the_committed_load_md_is_a_render_of_the_committed_json() -> None:
    committed = (DOCS / "load.md").read_text(encoding="utf-8")
    assert render_into(committed, load_json(DOCS / "load.json")) == committed, (
        "docs/load.md: run python -m payment_outbox_dev.chaos.load_figures"
    )


def test_the_committed_figures_carry_no_untraced_number() -> None:
    doc = load_json(DOCS / "load.json")
    assert problems(doc) == [], "the committed sweep failed"
    assert untraced_numbers(_rendered_part((DOCS / "load.md").read_text(encoding="utf-8")), doc) == []


def test_the_words_around_the_figures_carry_no_figure() -> None:
    # Outside the rendered part only code (commands, options, status codes) may hold digits.
    markdown = (DOCS / "load.md").read_text(encoding="utf-8")
    before, rest = markdown.split(BEGIN, 1)
    words = before + rest.split(END, 1)[1]
    prose = re.sub(r"`[^`\n]*`", " ", re.sub(r"```.*?```", " ", words, flags=re.DOTALL))
    assert re.findall(r"[^\n]*\d[^\n]*", prose) == []
