"""Runs in a fresh interpreter for the cold-start figures (``python -m bench.cold_probe MODE ...``).

Modes print one JSON line:
- ``modules HANDLER``: the third-party modules the handler's import brings in, and two flags.
- ``handler HANDLER``: seconds to import the handler module.
- ``deps HANDLER MODULES_JSON``: seconds to import only those third-party modules.
- ``memory HANDLER EVENT``: peak RSS after importing the handler and handling one event.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import resource
import sys
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

_OURS = ("payment_outbox", "bench", "handler_under_test")


def _load(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location("handler_under_test", path)
    if spec is None or spec.loader is None:
        raise ImportError(path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["handler_under_test"] = module
    spec.loader.exec_module(module)
    return module


def _third_party(names: list[str]) -> list[str]:
    return [
        name
        for name in names
        if name.split(".")[0] not in sys.stdlib_module_names
        and name.split(".")[0] not in _OURS
        and not name.startswith("_")
    ]


class _Context:
    """The Lambda context fields the handlers and Powertools read."""

    def __init__(self, name: str, timeout_seconds: float = 30.0) -> None:
        self.function_name = name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = 256
        self.aws_request_id = str(uuid.uuid4())
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{name}"
        self.log_group_name = ""
        self.log_stream_name = ""
        self._deadline = time.monotonic() + timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def _peak() -> dict[str, float]:
    """getrusage's maxrss, and the kernel's high-water mark of this address space as a cross-check."""
    peak = {"maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    with open("/proc/self/status", encoding="utf-8") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                peak["vmhwm_mib"] = int(line.split()[1]) / 1024
    return peak


def main(argv: list[str]) -> dict[str, Any]:
    mode, path = argv[0], argv[1] if len(argv) > 1 else "-"
    if mode == "modules":
        before = set(sys.modules)
        _load(path)
        added = [name for name in sys.modules if name not in before]
        return {
            "modules": _third_party(added),
            "sqlalchemy": "sqlalchemy" in sys.modules,
            "idempotency": any(
                name.startswith("aws_lambda_powertools.utilities.idempotency")
                or name == "payment_outbox.adapters.idempotent_record_handler"
                for name in sys.modules
            ),
        }
    if mode == "handler":
        started = time.perf_counter()
        _load(path)
        return {"seconds": time.perf_counter() - started}
    if mode == "deps":
        modules = json.loads(argv[2])
        started = time.perf_counter()
        for name in modules:
            if name in sys.modules:
                continue
            try:
                importlib.import_module(name)
            except Exception:  # noqa: S112 - a few entries are aliases that only exist as their parents set them up
                continue
        return {"seconds": time.perf_counter() - started}
    if mode == "memory":
        handler: Any = _load(path).lambda_handler
        event = json.loads(Path(argv[2]).read_text(encoding="utf-8"))
        result = handler(event, _Context(Path(path).parent.name))
        return {**_peak(), "result": str(result)[:200]}
    if mode == "baseline":
        return _peak()
    raise SystemExit(f"unknown mode {mode}")


def parse_args(argv: list[str] | None = None) -> list[str]:
    """The mode and its arguments, refused with a usage line when they do not fit the mode."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.cold_probe",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "mode", choices=("modules", "handler", "deps", "memory", "baseline"), help="what to measure"
    )
    parser.add_argument("handler", nargs="?", help="the handler file (every mode but baseline)")
    parser.add_argument("extra", nargs="?", help="deps: the modules as a JSON list; memory: the event file")
    args = parser.parse_args(argv)
    if args.mode != "baseline" and args.handler is None:
        parser.error(f"{args.mode} needs the handler file")
    if args.mode in ("deps", "memory") and args.extra is None:
        parser.error(
            f"{args.mode} needs {'the modules as JSON' if args.mode == 'deps' else 'the event file'}"
        )
    return [a for a in (args.mode, args.handler, args.extra) if a is not None]


if __name__ == "__main__":
    print(json.dumps(main(parse_args())))
