"""The SAM CLI accepts the template and builds every function and the layer here, with no container."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

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
    # Then each function's handler module and the layer's package are in the build, unnested
    for function in (
        "PaymentApiFunction",
        "OutboxRelayFunction",
        "PointsConsumerFunction",
        "SmsConsumerFunction",
    ):
        assert (build_dir / function / "app.py").is_file(), function
    layer = build_dir / "CommonLayer" / "python"
    assert (layer / "payment_outbox" / "__init__.py").is_file()
    assert not (layer / "python").exists()
    # And the compiled dependencies are built for the functions' architecture (arm64)
    assert list((layer / "pydantic_core").glob("*aarch64*.so"))
