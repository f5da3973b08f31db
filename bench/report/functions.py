"""The functions' sections: what a consumer costs per record, cold start and memory."""

from __future__ import annotations

from typing import Any

from bench.report.format import Figures, or_missing, times
from payment_outbox_dev.measurement import fmt, table


def consumer_cost(f: Figures, _doc: dict[str, Any]) -> tuple[str, list[str]]:
    consumers = {k: v for k, v in f.items() if isinstance(v, dict)}
    lines = [
        f"Each consumer handler invoked in-process with SQS batch events of {f['batch']} records really "
        "received from its queue (published by SNS from real envelopes, moto), then the same event again "
        "(a duplicate delivery). DynamoDB calls and capacity units are counted with a "
        "`before-call.dynamodb` hook on the consumers' own client (units by the item-size rule for items "
        f"under a kilobyte), not timed. {f['batches']} batches per round, {f['rounds']} rounds after a "
        "warm-up round. Durations are against moto's DynamoDB: emulator-bound.",
        "",
        *table(
            [
                "Consumer",
                "calls / first delivery",
                "by operation",
                "calls / duplicate",
                "write units / record",
                "read units / record",
                "ms / record (first)",
                "records/s (duplicate)",
            ],
            [
                [
                    name,
                    c["dynamodb_calls_per_first_delivery"],
                    ", ".join(f"{op} {fmt(v)}" for op, v in c["first_delivery_calls_by_operation"].items()),
                    c["dynamodb_calls_per_duplicate"],
                    c["write_units_per_record"],
                    c["read_units_per_record"],
                    c["ms_per_record_median"],
                    c["duplicate_records_per_second_median"],
                ]
                for name, c in consumers.items()
            ],
        ),
    ]
    return "Consumer cost", lines


def cold_start(f: Figures, _doc: dict[str, Any]) -> tuple[str, list[str]]:
    functions = {k: v for k, v in f["functions"].items()}
    lines = [
        f"Each figure from fresh interpreters ({f['runs']} per handler, medians): the time to import the "
        "handler module (`functions/<name>/app.py`, which builds its Powertools Logger/Tracer/Metrics and "
        "resolver at import) against the time to import only the third-party modules that import brings in, "
        "and the peak RSS (`getrusage` maxrss) of a process that imports the handler and handles one event "
        "from `events/` against MariaDB and moto. Tracing is disabled, but the X-Ray SDK is still imported.",
        "",
        *table(
            [
                "Function",
                "import ms",
                "third-party only ms",
                "handler / third-party",
                "imports SQLAlchemy",
                "peak RSS MiB",
                "memory rule MB",
                "rules' MemorySize MB",
                "deciding rule",
                "template MemorySize MB",
            ],
            [
                [
                    name,
                    c["import_ms_median"],
                    c["third_party_import_ms_median"],
                    times(c["handler_over_third_party"]),
                    "yes" if c["imports_sqlalchemy"] else "no",
                    or_missing(c["peak_rss_mib_median"]),
                    or_missing(c["memory_size_mb_from_rule"]),
                    or_missing(c["memory_size_mb"]),
                    c["memory_size_rule"],
                    c["template_memory_size_mb"],
                ]
                for name, c in functions.items()
            ],
        ),
        "",
        f"A bare interpreter peaks at {fmt(f['bare_interpreter_peak_rss_mib'])} MiB RSS.",
        "",
        "MemorySize is the largest of three rules, each from the figures above: **memory** — twice the peak "
        f"RSS in steps of {f['memory_step_mb']} MB, at least {f['memory_floor_mb']} MB; **cold start** (the "
        f"payment callback only) — Lambda gives one vCPU at {f['full_vcpu_mb']} MB and CPU in proportion "
        "below, so the import measured here on one core takes `import ms x "
        f"{f['full_vcpu_mb']} / MemorySize` there; keep it within {fmt(f['callback_import_budget_ms'])} ms; "
        "**relay CPU** — the relay's CPU per message (relay throughput above) within half of the time SNS "
        "takes per message at the bare PublishBatch loop's rate, so that a batch is not CPU-bound on "
        "Lambda's share, up to one vCPU "
        f"({f['one_interpreter_mb']} MB): the relay's Python work runs under one "
        "interpreter lock and cannot use more, so memory past it buys no CPU; more throughput then "
        "comes from fan-out. The template's MemorySize must be at least the rules' (a target).",
    ]
    return "Cold start and memory", lines
