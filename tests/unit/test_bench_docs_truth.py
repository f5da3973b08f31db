"""Every figure in the docs comes from a run: the report is rendered from docs/benchmarks.json alone,
every number in it is a value of that JSON, and the committed docs are a render of the committed JSON.
Figure-bearing comments elsewhere (template, Makefile, CLI help, deploy.md's endpoint list) either
carry no figure or are checked against what they describe."""

from __future__ import annotations

import copy
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from bench.report import pages, sections
from payment_outbox_dev.measurement import fmt
from tests.docs_truth import load_json, untraced
from tests.support import ROOT

pytestmark = pytest.mark.unit

#: A JSON recorded by `make bench ARGS="--quick"`: every section, as measured.
FIXTURE = Path(__file__).parent / "data" / "benchmarks_quick.json"
DOCS = ROOT / "docs"


def verbatim_strings(doc: dict[str, Any]) -> list[str]:
    """Strings the docs may quote as they are, digits included: the machine's description, a failed
    section's error, the price table's date and Region, and the database's own EXPLAIN output."""
    strings = [v for v in doc["machine"].values() if isinstance(v, str)]
    strings += [doc["inputs"]["prices_as_of"], doc["inputs"]["region"]]
    for section in doc["sections"].values():
        if section.get("error"):
            strings.append(section["error"])
        for plan in section.get("figures", {}).get("plans", {}).values():
            strings.append(plan["statement"])
            strings += [v for v in plan.values() if isinstance(v, str)]
    # Only whole descriptions: a bare number is never quoted verbatim, it must be traced.
    return sorted({s for s in strings if re.search(r"[A-Za-z]", s)}, key=len, reverse=True)


def untraced_numbers(text: str, doc: dict[str, Any]) -> list[str]:
    return untraced(text, doc, verbatim_strings(doc))


def svg_words(svg: str) -> str:
    """The SVG's text that says something (title, axis titles, legend): tick labels, which the
    plotting library derives from the axes' ranges, are left out."""
    root = ET.fromstring(svg)  # noqa: S314 - our own output
    texts = ["".join(node.itertext()) for node in root.iter("{http://www.w3.org/2000/svg}text")]
    return "\n".join(t for t in texts if re.search(r"[A-Za-z]", t))


@pytest.fixture(scope="module")
def recorded() -> dict[str, Any]:
    return load_json(FIXTURE)


def test_the_recorded_run_has_every_section(recorded: dict[str, Any]) -> None:
    assert set(recorded["sections"]) == set(sections.ORDER)
    assert not any(s["failed"] for s in recorded["sections"].values())


@pytest.mark.parametrize("name", ["benchmarks.md", "capacity.md"])
def test_every_number_in_a_rendered_doc_comes_from_the_json(recorded: dict[str, Any], name: str) -> None:
    rendered = pages.render(recorded)[name]
    assert untraced_numbers(rendered, recorded) == []


def test_every_number_the_capacity_figure_says_comes_from_the_json(recorded: dict[str, Any]) -> None:
    words = svg_words(pages.render(recorded)["capacity-drain.svg"])
    assert "minutes since SNS went down" in words and "MaxRelayConcurrency" in words
    assert untraced_numbers(words, recorded) == []


def test_a_figure_typed_into_the_prose_is_caught(recorded: dict[str, Any]) -> None:
    # Given the render of the recorded run with one figure typed in by hand
    rendered = pages.render(recorded)["capacity.md"] + "\nOne relay drains 3,189 messages/s.\n"
    # Then the check names it
    assert untraced_numbers(rendered, recorded) == ["3,189"]


def test_the_docs_follow_the_json_when_a_figure_changes(recorded: dict[str, Any]) -> None:
    # Given the same run with a different relay rate
    changed = copy.deepcopy(recorded)
    figures = changed["sections"]["latency_relay_throughput"]["figures"]
    figures["messages_per_second_median"]["real"] = 1234.0
    figures["messages_per_second_rounds"]["real"] = [1234.0]
    # Then the report says the new rate, and no longer the old one
    markdown = pages.render(changed)["benchmarks.md"]
    row = next(line for line in markdown.splitlines() if line.startswith("| real relay ("))
    assert "| 1,234 |" in row
    old = fmt(
        recorded["sections"]["latency_relay_throughput"]["figures"]["messages_per_second_median"]["real"]
    )
    assert f"| {old} |" not in row


def test_a_failed_section_is_reported_as_not_measured(recorded: dict[str, Any]) -> None:
    broken = copy.deepcopy(recorded)
    broken["sections"]["fan_out"] = {
        "title": "fan-out: not measured",
        "failed": True,
        "error": "RuntimeError: a relay container did not start",
        "figures": {},
        "targets": [],
    }
    markdown = pages.render(broken)["benchmarks.md"]
    assert "## Sections that could not measure" in markdown
    assert "- fan_out: RuntimeError: a relay container did not start" in markdown


def test_the_committed_docs_are_a_render_of_the_committed_json() -> None:
    committed = load_json(DOCS / "benchmarks.json")
    for name, content in pages.render(committed).items():
        assert (DOCS / name).read_text(encoding="utf-8") == content, (
            f"docs/{name}: run python -m bench.render"
        )


def test_the_committed_docs_carry_no_untraced_number() -> None:
    committed = load_json(DOCS / "benchmarks.json")
    for name in ("benchmarks.md", "capacity.md"):
        assert untraced_numbers((DOCS / name).read_text(encoding="utf-8"), committed) == [], name


def test_the_templates_memory_size_comments_carry_no_figure() -> None:
    # The MemorySize values are checked by the cold-start section's targets; their comments point there.
    comments = [
        line.split("#", 1)[1]
        for line in (ROOT / "template.yaml").read_text(encoding="utf-8").splitlines()
        if "MemorySize:" in line and "#" in line
    ]
    assert comments, "the template's MemorySize lines say where their rule is"
    assert all(not re.search(r"\d", c) for c in comments), comments


def test_the_makefiles_bench_note_carries_no_figure() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    note = makefile.split("## Benchmarks", 1)[1].split(".PHONY", 1)[0]
    assert "docs/benchmarks.md" in note
    assert not re.search(r"~\s*\d|\d+\s*min", note), note


def test_deploy_md_lists_the_templates_interface_endpoints() -> None:
    from bench.cost import template_facts

    services = {"sns": "SNS", "sqs": "SQS", "lambda": "Lambda", "secretsmanager": "Secrets Manager"}
    named = [services[s] for s in template_facts()["interface_endpoints"]]
    deploy = (DOCS / "deploy.md").read_text(encoding="utf-8")
    line = next(line for line in deploy.splitlines() if "interface endpoints for" in line)
    said = re.split(r",\s*|\s+and\s+", line.split("interface endpoints for", 1)[1].split(", gateway")[0])
    assert sorted(s.strip() for s in said) == sorted(named), said


def test_the_time_scale_help_says_what_the_default_scale_does() -> None:
    from payment_outbox_dev.checks.template import load_template
    from payment_outbox_dev.cli import build_parser
    from payment_outbox_dev.local.timing import DEFAULT_TIME_SCALE

    commands = next(a for a in build_parser()._actions if a.dest == "command")
    help_text = next(a.help for a in commands.choices["local"]._actions if "--time-scale" in a.option_strings)
    assert help_text is not None
    template = load_template(ROOT / "template.yaml")
    visibility = {r["Properties"].get("VisibilityTimeout") for r in template["Resources"].values()}
    # The examples are the template's own durations...
    shown = re.search(
        r"(\d+) s of visibility become ([\d.]+) s, rate\(1 minute\) ([\d.]+) s, a (\d+) s timeout ([\d.]+) s",
        help_text,
    )
    assert shown is not None, help_text
    seen_visibility, visibility_scaled, minute_scaled, timeout, timeout_scaled = (
        float(g) for g in shown.groups()
    )
    assert seen_visibility in visibility
    assert timeout == template["Globals"]["Function"]["Timeout"]
    # ...each times the default scale
    assert visibility_scaled == pytest.approx(seen_visibility * DEFAULT_TIME_SCALE, rel=1e-3)
    assert minute_scaled == pytest.approx(60 * DEFAULT_TIME_SCALE, rel=1e-3)
    assert timeout_scaled == pytest.approx(timeout * DEFAULT_TIME_SCALE, rel=1e-3)


def _anchor(title: str) -> str:
    """The fragment a Markdown heading gets on GitHub: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def test_the_reconcilers_cost_is_rendered_in_capacity_md(recorded: dict[str, Any]) -> None:
    figures = recorded["sections"]["reconcile_cost"]["figures"]
    capacity = pages.render(recorded)["capacity.md"]
    section = capacity.split("## The reconciler's cost per run", 1)[1].split("\n## ", 1)[0]
    assert f"| {fmt(figures['rows_per_second'])} |" in section
    assert f"{figures['rows_within_the_timeout_at_this_rate']:,} sent rows" in section


def test_operations_md_cites_the_reconcilers_cost_from_the_rendered_table(recorded: dict[str, Any]) -> None:
    reconcile = recorded["sections"]["reconcile_cost"]["figures"]
    title, _ = sections.RENDERERS["reconcile_cost"](reconcile, recorded)
    operations = (DOCS / "operations.md").read_text(encoding="utf-8")
    assert f"(capacity.md#{_anchor(title)})" in operations
    # ...and types no measured rate of its own next to it
    paragraph = next(p for p in operations.split("\n\n") if "bench.reconcile_bench" in p)
    assert not re.search(r"\d[\d,]*\s*rows/s", paragraph), paragraph
