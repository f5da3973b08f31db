"""``make lint``: refuse a migration that would break the release still running while it is applied.

A deploy migrates the schema first and updates the functions after, and a rollback runs the older
code on the newer schema: so every migration must keep the previous release working — it may only
*expand* (add tables, nullable or defaulted columns, indexes). Dropping or renaming a column or a
table is a *contract* step: it ships a release after the code stopped using what it removes, and says
so with a module-level ``CONTRACT_STEP = "<why it is safe now>"``. This check reads each migration's
``upgrade()`` (``downgrade()`` may drop what its upgrade added) and fails on any drop or rename
without that marker.

    python -m payment_outbox_dev.checks.migration_safety [VERSIONS_DIR]
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

VERSIONS_DIR = (
    Path(__file__).resolve().parents[2] / "layers" / "common" / "payment_outbox" / "migrations" / "versions"
)
#: Alembic operations that remove or rename a column or a table (``op.`` or a batch operation).
CONTRACTING_OPERATIONS = frozenset({"drop_column", "drop_table", "rename_table"})
#: The same in raw SQL (MySQL's CHANGE [COLUMN] old new renames a column).
CONTRACTING_SQL = re.compile(
    r"\b(DROP\s+(COLUMN|TABLE)|RENAME\s+(COLUMN|TABLE|TO|AS)|CHANGE\s+(COLUMN\s+)?`?\w+`?\s+`?\w+`?)\b",
    re.IGNORECASE,
)
MARKER = "CONTRACT_STEP"


@dataclass(frozen=True)
class Finding:
    path: Path
    line: int
    what: str

    def __str__(self) -> str:
        return (
            f"{self.path.name}:{self.line}: {self.what} in upgrade() — a contract step: it must come a "
            f'release after the code stopped using it, marked {MARKER} = "<why it is safe now>"'
        )


def contracting_steps(source: str, path: Path) -> list[Finding]:
    """The drops and renames in the migration's ``upgrade()``, unless the module is a marked contract step."""
    tree = ast.parse(source, filename=str(path))
    if _marked(tree):
        return []
    findings: list[Finding] = []
    for function in tree.body:
        if not (isinstance(function, ast.FunctionDef) and function.name == "upgrade"):
            continue
        for node in ast.walk(function):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            name = node.func.attr
            if name in CONTRACTING_OPERATIONS:
                findings.append(Finding(path, node.lineno, name))
            elif name == "alter_column" and any(k.arg == "new_column_name" for k in node.keywords):
                findings.append(Finding(path, node.lineno, "alter_column(new_column_name=...)"))
            elif name in ("execute", "exec_driver_sql"):
                for argument in node.args:
                    for constant in ast.walk(argument):
                        if isinstance(constant, ast.Constant) and isinstance(constant.value, str):
                            found = CONTRACTING_SQL.search(constant.value)
                            if found:
                                findings.append(Finding(path, node.lineno, f"SQL {found.group(0)!r}"))
    return findings


def _marked(tree: ast.Module) -> bool:
    for statement in tree.body:
        if isinstance(statement, ast.Assign):
            targets, value = statement.targets, statement.value
        elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
            targets, value = [statement.target], statement.value
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == MARKER for t in targets):
            text = value.value if isinstance(value, ast.Constant) else None
            return isinstance(text, str) and bool(text.strip())
    return False


def check(versions: Path) -> list[Finding]:
    findings: list[Finding] = []
    for path in sorted(versions.glob("*.py")):
        findings.extend(contracting_steps(path.read_text(), path))
    return findings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m payment_outbox_dev.checks.migration_safety",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "versions",
        nargs="?",
        type=Path,
        default=VERSIONS_DIR,
        help="the folder of migration modules (default: the project's migrations/versions)",
    )
    versions = parser.parse_args(argv).versions
    if not versions.is_dir():
        parser.error(f"{versions} is not a folder of migrations")
    findings = check(versions)
    for finding in findings:
        print(finding, file=sys.stderr)
    if not findings:
        checked = len(list(versions.glob("*.py")))
        print(f"migrations: {checked} checked, each only expands or is a marked contract step")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
