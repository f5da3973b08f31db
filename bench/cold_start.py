"""Cold start: import time of each handler against importing the third-party code it needs, and
the peak RSS of a process that imports a handler and handles one event."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.env import ROOT, BenchWorld
from bench.prices import LAMBDA_FULL_VCPU_MB
from bench.stats import Section, Target, median, median_ratio

#: The event each function handles in the memory probe, from events/ (the API one writes an order;
#: the relay finds due rows). Functions not listed use the first events/<code dir>_*.json, if any.
PREFERRED_EVENTS = {
    "payment_api": "payment_api_create_order.json",
    "admin_api": "admin_api_stats.json",
    # The invoked-by-hand shape: the custom-resource one would answer CloudFormation over the network.
    "schema_migrator": "schema_migrator_manual.json",
}
CONSUMERS = ("PointsConsumerFunction", "SmsConsumerFunction")
RELAY = "OutboxRelayFunction"
#: Lambda gives a function one full vCPU at this size, and CPU in proportion to memory below it.
FULL_VCPU_MB = LAMBDA_FULL_VCPU_MB
#: The relay's Python work (botocore, PyMySQL, the loop) runs under one interpreter lock, so it uses one
#: vCPU at most: memory above the size that gives one buys it no CPU, and more throughput comes from
#: fan-out (more relays), not memory. The relay CPU rule stops at this size.
ONE_INTERPRETER_MB = -(-FULL_VCPU_MB // 128) * 128
#: The payment callback is answered synchronously, and a provider times its callbacks out: its cold
#: import should take at most this long on Lambda's CPU share.
CALLBACK_IMPORT_BUDGET_MS = 1500.0
LATENCY_SENSITIVE = ("PaymentApiFunction",)
#: The memory rule: twice the peak RSS, in Lambda's steps, never below the floor.
MEMORY_STEP_MB = 128
MEMORY_FLOOR_MB = 256


#: Linux carries the high-water mark of the address space a process replaced at exec into its
#: ru_maxrss, so a probe forked from this (large) process would report at least this process's RSS.
#: A small launcher interpreter in between makes that floor its own few MiB instead.
_LAUNCHER = [sys.executable, "-c", "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"]


def probe(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    completed = subprocess.run(  # noqa: S603 - our own interpreter and module
        [*_LAUNCHER, sys.executable, "-m", "bench.cold_probe", *args],
        cwd=ROOT,
        env=env or dict(os.environ),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"cold probe {args[0]} failed: {completed.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def handlers() -> dict[str, tuple[str, Path | None]]:
    """Every function in template.yaml: logical id -> (handler file, event file or None)."""
    from payment_outbox_dev.checks.template import functions, load_template

    found: dict[str, tuple[str, Path | None]] = {}
    for spec in functions(load_template(ROOT / "template.yaml")):
        module = spec.handler.rpartition(".")[0].replace(".", "/")
        code_dir = Path(spec.code_uri.rstrip("/")).name
        preferred = PREFERRED_EVENTS.get(code_dir)
        candidates = (
            [ROOT / "events" / preferred]
            if preferred
            else sorted((ROOT / "events").glob(f"{code_dir}_*.json"))
        )
        event = next((c for c in candidates if c.exists()), None)
        found[spec.logical_id] = (str(ROOT / spec.code_uri / f"{module}.py"), event)
    return found


def cold_start(
    world: BenchWorld,
    *,
    runs: int,
    progress: Callable[[str], None],
    relay_figures: dict[str, Any] | None = None,
) -> Section:
    from bench.data import due_messages, insert_messages, reset_outbox
    from payment_outbox.adapters.db.engine import make_engine

    functions: dict[str, Any] = {}
    targets = []
    template_memory = _template_memory_sizes()
    baseline = probe("baseline", "-")["maxrss_mib"]
    engine = make_engine(world.database_url)
    for logical_id, (path, event_file) in handlers().items():
        found = probe("modules", path)
        modules = json.dumps(found["modules"])
        handler_s: list[float] = []
        deps_s: list[float] = []
        for _ in range(runs):
            handler_s.append(probe("handler", path)["seconds"] * 1000)
            deps_s.append(probe("deps", path, modules)["seconds"] * 1000)
        if logical_id == RELAY:
            reset_outbox(engine)
            insert_messages(engine, due_messages(50))
        env = {**os.environ, **world.environments.get(logical_id, {})}
        peaks: list[dict[str, Any]] = []
        memory_error = None
        if event_file is not None:
            try:
                peaks = [probe("memory", path, str(event_file), env=env) for _ in range(max(1, runs // 2))]
            except RuntimeError as exc:
                memory_error = str(exc).strip().splitlines()[-1][:200]
        memory = [p["maxrss_mib"] for p in peaks]
        peak = median(memory) if memory else float("nan")
        size, rule = choose_memory_size(logical_id, peak, median(handler_s), relay_figures)
        own_share = median_ratio(handler_s, deps_s)
        functions[logical_id] = {
            "import_ms_median": median(handler_s),
            "third_party_import_ms_median": median(deps_s),
            "handler_over_third_party": own_share,
            "third_party_modules": len(found["modules"]),
            "third_party_top_level": sorted({m.split(".")[0] for m in found["modules"]}),
            "imports_sqlalchemy": found["sqlalchemy"],
            "imports_idempotency": found["idempotency"],
            "event": event_file.name if event_file else None,
            "peak_rss_mib_median": peak if memory else None,
            "peak_vmhwm_mib_median": median([p["vmhwm_mib"] for p in peaks]) if peaks else None,
            "memory_size_mb_from_rule": memory_size_for(peak) if memory else None,
            "memory_probe_error": memory_error,
            "memory_size_mb": size,
            "memory_size_rule": rule,
            "template_memory_size_mb": template_memory[logical_id],
        }
        if size is not None:
            targets.append(
                Target(
                    f"{logical_id}: template MemorySize, MB, at least the rules' figure",
                    template_memory[logical_id],
                    ">=",
                    size,
                )
            )
        progress(f"cold start {logical_id}: import {median(handler_s):.0f} ms, peak {peak:.0f} MiB")
        if logical_id in CONSUMERS:
            targets.append(
                Target(f"{logical_id} imports SQLAlchemy (1 = yes)", int(found["sqlalchemy"]), "<=", 0)
            )
        if logical_id == "PaymentApiFunction":
            targets.append(
                Target(
                    "PaymentApiFunction imports the idempotency layer (1 = yes)",
                    int(found["idempotency"]),
                    "<=",
                    0,
                )
            )
    reset_outbox(engine)
    engine.dispose()
    section = Section("cold_start", "Cold start and memory")
    section.figures = {
        "runs": runs,
        "functions": functions,
        "bare_interpreter_peak_rss_mib": baseline,
        "full_vcpu_mb": FULL_VCPU_MB,
        "one_interpreter_mb": ONE_INTERPRETER_MB,
        "callback_import_budget_ms": CALLBACK_IMPORT_BUDGET_MS,
        "memory_step_mb": MEMORY_STEP_MB,
        "memory_floor_mb": MEMORY_FLOOR_MB,
    }
    section.targets = targets
    return section


def choose_memory_size(
    logical_id: str, peak_rss_mib: float, import_ms: float, relay_figures: dict[str, Any] | None
) -> tuple[int | None, str]:
    if math.isnan(peak_rss_mib):
        return None, "not measured"
    size, rule = memory_size_for(peak_rss_mib), "memory"
    if logical_id in LATENCY_SENSITIVE:
        cold = memory_for_cpu(import_ms, CALLBACK_IMPORT_BUDGET_MS)
        if cold > size:
            size, rule = cold, "cold start"
    if logical_id == RELAY and relay_figures:
        cpu_ms = relay_figures["cpu_ms_per_message_median"]["real"]
        limit_ms = 1000 / relay_figures["messages_per_second_median"]["bare"]
        cpu = min(memory_for_cpu(cpu_ms, limit_ms / 2), ONE_INTERPRETER_MB)
        if cpu > size:
            size, rule = cpu, "relay CPU"
    return size, rule


def memory_for_cpu(cpu_ms: float, budget_ms: float) -> int:
    """The MemorySize (128 MB steps, 128..10,240) at which ``cpu_ms`` of one core's CPU, measured here,
    fits in ``budget_ms`` on Lambda's share of a vCPU."""
    if cpu_ms <= 0 or budget_ms <= 0:
        raise ValueError("CPU time and budget must be positive")
    needed = cpu_ms * FULL_VCPU_MB / budget_ms
    return min(10_240, max(128, math.ceil(needed / 128) * 128))


def memory_size_for(peak_rss_mib: float) -> int:
    """The MemorySize to configure: at least twice the measured peak, in 128 MB steps, never below 256.

    Twice the peak leaves room for larger batches and payloads and for the runtime's own growth; Lambda
    also scales CPU with memory, and 256 MB keeps the cold start of boto3 + Powertools reasonable.
    """
    if math.isnan(peak_rss_mib) or peak_rss_mib <= 0:
        raise ValueError("a measured peak is needed")
    needed = 2 * peak_rss_mib
    steps = -(-int(needed) // MEMORY_STEP_MB)
    return max(MEMORY_FLOOR_MB, steps * MEMORY_STEP_MB)


def _template_memory_sizes() -> dict[str, int]:
    from payment_outbox_dev.checks.template import load_template

    template = load_template(ROOT / "template.yaml")
    default = int(template["Globals"]["Function"]["MemorySize"])
    return {
        name: int(r["Properties"].get("MemorySize") or default)
        for name, r in template["Resources"].items()
        if r["Type"] == "AWS::Serverless::Function"
    }
