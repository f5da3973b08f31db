"""The SAM CLI accepts the template and builds every function and the layer here, with no container; the
built layer holds the runtime package and what it imports, and no developer tooling."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from packaging.utils import canonicalize_name

from payment_outbox_dev.checks.template import functions, load_template
from tests.support import ROOT

pytestmark = pytest.mark.sam

SAM = Path(os.environ.get("SAM_CLI", ROOT / ".venv-sam" / "bin" / "sam"))


def _sam_environment() -> dict[str, str]:
    environment = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1", "SAM_CLI_TELEMETRY": "0"}
    # The python3.13 build needs that interpreter on PATH; pyenv provides it when told which one.
    if not _runs("python3.13") and shutil.which("pyenv") is not None:
        versions = subprocess.run(
            ["pyenv", "versions", "--bare"],  # noqa: S607
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        installed = [v for v in versions if v.startswith("3.13.")]
        if installed:
            environment["PYENV_VERSION"] = installed[-1]
    return environment


def _runs(command: str) -> bool:
    try:
        return subprocess.run([command, "--version"], capture_output=True, check=False).returncode == 0  # noqa: S603
    except OSError:
        return False


@pytest.fixture(scope="module")
def sam() -> Path:
    if not SAM.exists():
        message = f"the SAM CLI is not installed at {SAM} (run `make sam-cli`)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return SAM


def test_sam_validate_with_lint_accepts_the_template(sam: Path) -> None:
    result = subprocess.run(  # noqa: S603 - our own tool, fixed arguments
        [str(sam), "validate", "--lint", "--template-file", str(ROOT / "template.yaml")],
        cwd=ROOT,
        env=_sam_environment(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is a valid SAM Template" in result.stdout + result.stderr


@pytest.fixture(scope="module")
def build_dir(sam: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `sam build` for the module's checks (it takes a while)."""
    work = tmp_path_factory.mktemp("sam")
    build = work / "build"
    result = subprocess.run(  # noqa: S603 - our own tool, fixed arguments
        [
            str(sam),
            "build",
            "--template-file",
            str(ROOT / "template.yaml"),
            "--build-dir",
            str(build),
            "--cache-dir",
            str(work / "cache"),
        ],
        cwd=ROOT,
        env=_sam_environment(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return build


def test_sam_build_builds_every_function_and_the_layer_without_a_container(build_dir: Path) -> None:
    # Then each of the template's eight functions has its handler module in the build
    specs = functions(load_template(ROOT / "template.yaml"))
    assert len(specs) == 8
    for spec in specs:
        module = spec.handler.rpartition(".")[0].replace(".", "/")
        assert (build_dir / spec.logical_id / f"{module}.py").is_file(), spec.logical_id
    # And the layer holds the runtime package, every module of it and nothing more, unnested
    layer = build_dir / "CommonLayer" / "python"
    assert not (layer / "python").exists()
    source = ROOT / "layers" / "common" / "payment_outbox"
    assert _modules_under(layer / "payment_outbox") == _modules_under(source)
    # And no developer tooling, tests, benchmarks, moto or PyYAML
    for absent in ("payment_outbox_dev", "tests", "bench", "moto", "yaml"):
        assert not (layer / absent).exists(), absent
    # And every module the runtime imports is in the layer, the standard library, or the Lambda
    # runtime (which ships boto3 and botocore)
    assert _imports_found_nowhere(layer) == set()
    # And the compiled dependencies are built for the functions' architecture (arm64)
    assert list((layer / "pydantic_core").glob("*aarch64*.so"))


def _modules_under(package: Path) -> set[str]:
    return {str(path.relative_to(package)) for path in package.rglob("*.py")}


def _imports_found_nowhere(layer: Path) -> set[str]:
    imported: set[str] = set()
    for path in (layer / "payment_outbox").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    in_runtime = set(sys.stdlib_module_names) | {"__future__", "boto3", "botocore"}
    return {
        name
        for name in imported - in_runtime
        if not (layer / name).is_dir() and not (layer / f"{name}.py").is_file()
    }


def _pinned_distributions() -> set[str]:
    names = set()
    for line in (ROOT / "layers" / "common" / "requirements.txt").read_text().splitlines():
        if "==" in line and not line.startswith((" ", "#")):
            names.add(canonicalize_name(line.split("==", 1)[0].split("[", 1)[0]))
    return names


def test_the_built_layer_holds_only_the_runtime_package_and_its_pinned_requirements(build_dir: Path) -> None:
    # Given the layer as `sam build` made it
    layer = build_dir / "CommonLayer" / "python"
    # When its installed distributions and packages are listed
    installed = {
        canonicalize_name(path.name.removesuffix(".dist-info").rsplit("-", 1)[0])
        for path in layer.glob("*.dist-info")
    }
    # Then they are exactly the pinned requirements: no development dependency came along
    assert installed == _pinned_distributions(), installed ^ _pinned_distributions()
    for development in ("moto", "yaml", "pytest", "payment_outbox_dev", "samtranslator", "cfnlint"):
        assert not (layer / development).exists(), development
    # And the runtime package holds no developer tooling (local stack, CLI, demos)
    package = layer / "payment_outbox"
    assert not (package / "local").exists()
    assert not (package / "cli.py").exists()
    dev_imports = [
        str(path.relative_to(layer))
        for path in package.rglob("*.py")
        if re.search(r"^\s*(import|from)\s+(moto|yaml|payment_outbox_dev)\b", path.read_text(), re.M)
    ]
    assert not dev_imports, dev_imports


def test_every_module_of_the_built_layer_imports_with_only_the_layers_requirements(
    build_dir: Path, tmp_path: Path
) -> None:
    # Given a fresh environment of the template's runtime holding only the layer's pinned requirements
    # (installed for this machine: the built layer's compiled parts are arm64)
    runtime = _template_runtime()
    environment = _sam_environment()
    venv = tmp_path / "venv"
    subprocess.run([runtime, "-m", "venv", str(venv)], env=environment, check=True)  # noqa: S603
    pip = subprocess.run(  # noqa: S603 - fixed arguments
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--require-hashes",
            "--no-deps",
            "-r",
            str(ROOT / "layers" / "common" / "requirements.txt"),
        ],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    # When every module of the built layer's package, and every function's handler, is imported
    # with that environment and the layer's package alone on the path
    package_root = tmp_path / "layer"
    shutil.copytree(build_dir / "CommonLayer" / "python" / "payment_outbox", package_root / "payment_outbox")
    script = IMPORT_EVERYTHING.format(
        functions=[str(build_dir / f) for f in _function_ids() if (build_dir / f / "app.py").is_file()]
    )
    result = subprocess.run(  # noqa: S603 - fixed arguments
        [str(venv / "bin" / "python"), "-I", "-c", script],
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": "",
            "AWS_DEFAULT_REGION": "us-east-1",
            "LAYER": str(package_root),
            "POWERTOOLS_METRICS_NAMESPACE": "PaymentOutbox",
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    # Then each one imports
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "imported" in result.stdout, result.stdout


IMPORT_EVERYTHING = """
import importlib, importlib.util, os, pkgutil, sys
sys.path.insert(0, os.environ["LAYER"])
import payment_outbox
count = 0
for module in pkgutil.walk_packages(payment_outbox.__path__, "payment_outbox."):
    if module.name == "payment_outbox.migrations.env":
        continue  # Alembic's environment script: Alembic runs it, below
    importlib.import_module(module.name)
    count += 1
# The migrations (env.py and every version) rendered as SQL, offline: no database needed.
from alembic import command
from payment_outbox.adapters.db.migration import alembic_config
offline = alembic_config("mysql+pymysql://migrator@db.example.internal/payment_outbox")
command.upgrade(offline, "head", sql=True)
for index, folder in enumerate({functions!r}):
    spec = importlib.util.spec_from_file_location(f"handler_{{index}}", os.path.join(folder, "app.py"))
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    count += 1
print("imported", count)
"""


def _template() -> dict[str, Any]:
    return load_template(ROOT / "template.yaml")


def _template_runtime() -> str:
    """The interpreter of the functions' runtime, e.g. python3.13 for Runtime: python3.13."""
    runtime = str(_template()["Globals"]["Function"]["Runtime"])
    assert runtime.startswith("python"), runtime
    return runtime


def _function_ids() -> list[str]:
    return [i for i, r in _template()["Resources"].items() if r["Type"] == "AWS::Serverless::Function"]
