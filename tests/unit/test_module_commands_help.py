"""Every module run as a command (`python -m ...`: what the Makefile and the docs run, and the helper
processes the benchmarks start) explains itself: `--help` answers with exit code 0, under the name it is
run by, with a help text for every option and argument, and does nothing else. `payment-outbox` itself
is tests/unit/test_cli_help.py."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.unit

#: The console script's module, whose subcommands test_cli_help.py covers one by one.
CONSOLE_SCRIPT = "payment_outbox_dev.cli"


def _runnable_modules() -> list[str]:
    """Modules of the tooling with an ``if __name__ == "__main__":`` block (and packages with a
    ``__main__.py``), as ``python -m`` names them."""
    found = []
    for folder in ("bench", "payment_outbox_dev"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            runs_as_main = path.name == "__main__.py" or any(
                isinstance(node, ast.If) and "__main__" in ast.unparse(node.test) for node in tree.body
            )
            if runs_as_main:
                parts = path.relative_to(ROOT).with_suffix("").parts
                found.append(".".join(parts[:-1] if parts[-1] == "__main__" else parts))
    return [name for name in found if name != CONSOLE_SCRIPT]


MODULES = _runnable_modules()


def test_the_commands_found_include_what_the_makefile_runs() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    run_by_make = set(re.findall(r"-m ((?:bench|payment_outbox_dev)(?:\.\w+)*)", makefile))
    assert run_by_make, "the Makefile runs no tooling module"
    assert run_by_make <= set(MODULES)


def _undocumented_options(help_text: str) -> list[str]:
    """Options and arguments listed without a help text: argparse lists each at the start of a line,
    its help after two or more spaces on that line or indented on the next."""
    lines = help_text.splitlines()
    bare = []
    listing = False
    for i, line in enumerate(lines):
        if re.match(r"^(options|optional arguments|positional arguments):$", line):
            listing = True
            continue
        if listing and not line.strip():
            listing = False
        if not listing or not re.match(r"^  \S", line):
            continue
        name_and_help = re.split(r"\s{2,}", line.strip(), maxsplit=1)
        following = lines[i + 1] if i + 1 < len(lines) else ""
        has_help = len(name_and_help) == 2 or re.match(r"^\s{6,}\S", following) is not None
        if not has_help:
            bare.append(name_and_help[0])
    return bare


@pytest.mark.parametrize("module", MODULES)
def test_every_tooling_command_answers_help_under_its_own_name(module: str, tmp_path: Path) -> None:
    # When `python -m MODULE --help` is run (in an empty folder: it must write nothing)
    done = subprocess.run(  # noqa: S603 - this interpreter, our own module
        [sys.executable, "-m", module, "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "COLUMNS": "120"},
        check=False,
    )

    # Then it answers with its usage under the name it is run by, every option with a help text
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: python -m {module} "), done.stdout[:200]
    assert _undocumented_options(done.stdout) == []
    assert list(tmp_path.iterdir()) == []


def test_the_option_check_finds_an_option_without_help() -> None:
    listed = (
        "usage: x\n\noptions:\n  -h, --help  show this help message and exit\n  --rows ROWS\n  --ok  fine\n"
    )
    assert _undocumented_options(listed) == ["--rows ROWS"]
