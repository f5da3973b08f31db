"""The runtime and the tooling stay houses one can find one's way in: no module imports, at module
level, a module that imports it back (directly or round a longer circle), and no module grows past
500 lines. ``make lint`` runs these checks too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.unit

#: The longest a module may be before it holds more than one job.
MAX_MODULE_LINES = 500
#: Each package, with the folder its import names start from.
PACKAGES = {
    "payment_outbox_dev": ROOT,
    "bench": ROOT,
    "payment_outbox": ROOT / "layers" / "common",
}


def _modules(package: str) -> dict[str, Path]:
    base = PACKAGES[package]
    found = {}
    for path in sorted((base / package).rglob("*.py")):
        parts = path.relative_to(base).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level_imports(name: str, path: Path) -> set[str]:
    """What a module imports when it is imported: its top-level statements (inside top-level ``if``
    and ``try`` too), not ``if TYPE_CHECKING:`` blocks, not the bodies of functions."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    imported: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If):
                if not _is_type_checking(node.test):
                    visit(node.body)
                    visit(node.orelse)
            elif isinstance(node, ast.Try):
                for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                    visit(block)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, *([base] if base else [])])
                imported.add(base)
                imported.update(f"{base}.{alias.name}" for alias in node.names)

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    return imported


def _circles(package: str) -> list[list[str]]:
    modules = _modules(package)
    graph = {
        name: sorted(m for m in _module_level_imports(name, path) if m in modules and m != name)
        for name, path in modules.items()
    }
    circles: list[list[str]] = []
    trail: list[str] = []
    # 0: not seen yet; 1: on the trail being walked; 2: done, no circle through it left to find.
    state = dict.fromkeys(graph, 0)

    def walk(name: str) -> None:
        state[name] = 1
        trail.append(name)
        for target in graph[name]:
            if state[target] == 1:
                circles.append([*trail[trail.index(target) :], target])
            elif state[target] == 0:
                walk(target)
        trail.pop()
        state[name] = 2

    for name in graph:
        if state[name] == 0:
            walk(name)
    return circles


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_module_level_import_circle(package: str) -> None:
    assert _circles(package) == []


def test_the_circle_finder_finds_a_circle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a package whose two modules import each other at module level (a third only in a function)
    package = tmp_path / "circular"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from circular import b\n")
    (package / "b.py").write_text("from circular.a import thing\n")
    (package / "c.py").write_text("def f():\n    from circular import a\n")
    monkeypatch.setitem(PACKAGES, "circular", tmp_path)

    # Then the finder names the circle, and only it
    assert _circles("circular") == [["circular.a", "circular.b", "circular.a"]]


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_module_is_longer_than_the_limit(package: str) -> None:
    long = {
        str(path.relative_to(ROOT)): lines
        for path in _modules(package).values()
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}
