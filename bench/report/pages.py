"""The documents: docs/benchmarks.md and docs/capacity.md assembled from the sections, and every
document written from the JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.report.figure import capacity_svg
from bench.report.sections import ORDER, RENDERERS
from payment_outbox_dev.measurement import fmt


def _ordered(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    sections = doc["sections"]
    known = [k for k in ORDER if k in sections]
    return [(k, sections[k]) for k in known + [k for k in sections if k not in ORDER]]


def _load_line(load: dict[str, Any]) -> str:
    during = load["during"]
    return (
        f"load average (1, 5, 15 min) at the start {', '.join(fmt(v) for v in load['at_start'])}, at the end "
        f"{', '.join(fmt(v) for v in load['at_end'])}; the one-minute load sampled every "
        f"{fmt(during['every_seconds'])} s while measuring: mean {fmt(during['mean'])}, max "
        f"{fmt(during['max'])}, on {load['cpus']} CPUs"
    )


def benchmarks_md(doc: dict[str, Any]) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python -m bench`), rendered from docs/benchmarks.json by bench/render.py; "
        "do not edit by hand.",
        "",
    ]
    targets = [t for _k, s in _ordered(doc) for t in s.get("targets", [])]
    failed = [(k, s) for k, s in _ordered(doc) if s.get("failed")]
    if failed:
        lines += ["## Sections that could not measure", ""]
        lines += [f"- {k}: {s['error']}" for k, s in failed]
        lines.append("")
    if targets:
        lines += ["## Targets", "", "| Target | Measured | Bound | Met |", "|---|---|---|---|"]
        lines += [
            f"| {t['description']} | {fmt(t['value'])} | {t['op']} {fmt(t['bound'])} | "
            f"{'yes' if t['met'] else '**no**'} |"
            for t in targets
        ]
        lines.append("")
    lines += ["## Machine", ""]
    lines += [f"- {name}: {value}" for name, value in doc["machine"].items()]
    lines += [f"- {_load_line(doc['load'])}", f"- wall time: {fmt(doc['wall_seconds'])} s", ""]
    lines += ["## Settings", ""]
    lines += [f"- {name}: {_setting(value)}" for name, value in doc["settings"].items()]
    lines += ["", "## Method", ""]
    lines += [f"- {item}" for item in METHOD]
    for key, section in _ordered(doc):
        if section.get("failed"):
            lines += ["", f"## {section['title']}", "", f"Not measured: {section['error']}"]
            continue
        title, body = RENDERERS[key](section["figures"], doc)
        lines += ["", f"## {title}", "", *body]
    lines += [
        "",
        "## Load on the local stack",
        "",
        "`make load` drives create + signed callback with locust against a local stack on MariaDB: its "
        "figures and how they are taken are in [docs/load.md](load.md), apart from the figures above.",
    ]
    return "\n".join(lines).rstrip() + "\n"


def _setting(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_setting(v) for v in value)
    return fmt(value) if isinstance(value, int | float) and not isinstance(value, bool) else str(value)


METHOD = [
    "The relay's figures are measured against the latency SNS (bench/latency_sns.py): an asyncio HTTP "
    "endpoint in its own process that speaks the SNS query protocol for Publish and PublishBatch, answers "
    "every call after a fixed delay (the settings' delay; calls wait concurrently), refuses what SNS "
    "refuses with SNS's error codes, records the round trip it gave each call, and fails on demand "
    "(outage, throttling, failed entries); botocore reaches it through AWS_ENDPOINT_URL_SNS.",
    "Fan-out runs the relay's real handler in separate processes, started by the relay's own launcher "
    "through a stand-in Lambda Invoke endpoint (AWS_ENDPOINT_URL_LAMBDA).",
    "The consumers and the cold-start probes use moto (`ThreadedMotoServer` in a child process on a free "
    "loopback port), provisioned from template.yaml; their durations describe the emulator as much as "
    "our code, their call and capacity-unit counts do not.",
    "MariaDB in a database of the benchmark's own, named uniquely per run, migrated with the project's "
    "Alembic migrations and dropped at the end.",
    "Every headline figure is a ratio of two things measured in the same run, in alternating or rotating "
    "order, or a median over repeated rounds. A section that cannot measure, or a missed target, makes "
    "`make bench` exit non-zero.",
    "Every figure in this report, in docs/capacity.md and in the capacity figure is rendered from "
    "docs/benchmarks.json (bench/render.py); `python -m bench.render` renders them again from it.",
]


CHANGES = [
    "- **SMS sending** (usually the first limit with default quotas): raise the SMS spend limit and the "
    "sending rate for the destination countries. `SmsMaximumConcurrency` (the SMS event source's "
    "`ScalingConfig.MaximumConcurrency`) paces the consumer at the quota instead of failing into the "
    "DLQ; the rest of the pipeline (points, the order, the outbox) is unaffected.",
    "- **The relay, while the after-commit publish fails**: normally the callback publishes its own "
    "messages and the relay idles; during an outage every message waits for it. A run that finds more "
    "due rows than it can drain before its deadline starts up to `MaxRelayConcurrency - 1` more (the "
    "fan-out section above); if the backlog still grows (`OldestDueMessageAgeSeconds`, "
    "`RelaysStarted`), raise `MaxRelayConcurrency`. Each relay adds two short transactions per claim on "
    "the database.",
    "- **SNS publish**: request a quota increase; both paths already use PublishBatch.",
    "- **API Gateway**: request a quota increase, or create orders elsewhere so that only the callback "
    "passes through this API.",
    "- **Lambda concurrency**: reserve concurrency for PaymentApi, cap the consumers with their "
    "event sources' `MaximumConcurrency`, raise the account quota; a consumer scaling out can starve "
    "the payment API otherwise.",
    "- **DynamoDB**: request a table quota increase; keys are random message ids or one balance item "
    "per user, so a partition's limit is reached only by one very busy user.",
    "- **The database**: each order is a few short write transactions and each concurrent API instance "
    "holds one connection. Commit latency and the writer's CPU decide the ceiling, which this benchmark "
    "(a local MariaDB on a shared disk) cannot say for Aurora: use the RDS Proxy (`CreateDatabase=true` "
    "puts one in front), raise the cluster's `MaxCapacity` (its ServerlessV2ScalingConfiguration in "
    "template.yaml) when `DatabaseCapacityAlarm` fires, and load "
    "test in the account.",
]


def capacity_md(doc: dict[str, Any]) -> str:
    sections = doc["sections"]
    lines = [
        "# Capacity: what one paid order costs, where each stage meets its quota, and an outage",
        "",
        "Rendered by `make bench` from docs/benchmarks.json (bench/render.py); do not edit by hand. The "
        "durations and counts are the ones measured in that run (docs/benchmarks.md: the machine, its load "
        "and the method); prices and quotas are the named inputs of bench/prices.py, AWS's published "
        "defaults on the date they state. Check each against the account's Service Quotas and the price "
        "pages before relying on a figure here: accounts and Regions differ, and both change.",
    ]
    for key in (
        "cost",
        "capacity_simulation",
        "fan_out",
        "latency_relay_throughput",
        "fallback_latency",
        "reconcile_cost",
    ):
        section = sections.get(key)
        if section is None:
            continue
        if section.get("failed"):
            lines += ["", f"## {section['title']}", "", f"Not measured: {section['error']}"]
            continue
        title, body = RENDERERS[key](section["figures"], doc)
        lines += ["", f"## {title}", "", *body]
    lines += ["", "## What to change at each limit", "", *CHANGES]
    lines += [
        "",
        "## With ordered delivery (`OrderedDelivery=true`)",
        "",
        "The same stages, on FIFO topics and queues (message-group throughput scope, high-throughput "
        "queues, as the template sets them), whose quotas apply per message group. A stream's rate is "
        "bounded by one publish plus one consumer invocation per message, since the relay claims only a "
        "stream's head and a FIFO queue delivers a group's next message once the previous one is done; "
        "every order is its own streams, so this limits a busy business key, not the number of orders. "
        "The claim's cost with waiting streams is measured in docs/architecture.md (*Per-stream order*).",
    ]
    return "\n".join(lines).rstrip() + "\n"


def render(doc: dict[str, Any]) -> dict[str, str]:
    """Every document, by file name, from the JSON alone."""
    return {
        "benchmarks.md": benchmarks_md(doc),
        "capacity.md": capacity_md(doc),
        "capacity-drain.svg": capacity_svg(doc),
    }


def write(doc: dict[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in render(doc).items():
        path = out / name
        path.write_text(content, encoding="utf-8")
        written.append(path)
    return written
