"""The SAM CLI accepts the template and builds every function and the layer here, with no container; the
built layer holds the runtime package and what it imports, and no developer tooling."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from payment_outbox_dev.template import functions, load_template
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


def test_sam_build_builds_every_function_and_the_layer_without_a_container(sam: Path, tmp_path: Path) -> None:
    build_dir = tmp_path / "build"
    result = subprocess.run(  # noqa: S603 - our own tool, fixed arguments
        [
            str(sam),
            "build",
            "--template-file",
            str(ROOT / "template.yaml"),
            "--build-dir",
            str(build_dir),
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
        cwd=ROOT,
        env=_sam_environment(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
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
