"""The layer's requirements are pinned, hashed and generated from pyproject.toml by `make requirements`
(`make lint` re-resolves them and fails on drift; this test catches the common drift offline)."""

from __future__ import annotations

import re
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support import ROOT

pytestmark = pytest.mark.unit

REQUIREMENTS = ROOT / "layers" / "common" / "requirements.txt"


def _pins() -> dict[str, tuple[str, int]]:
    """name -> (pinned version, number of hashes)."""
    pins: dict[str, tuple[str, int]] = {}
    current = None
    for line in REQUIREMENTS.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s\\]+)", line)
        if match:
            current = canonicalize_name(match.group(1).split("[", 1)[0])
            pins[current] = (match.group(2), 0)
        elif line.strip().startswith("--hash=sha256:") and current is not None:
            version, hashes = pins[current]
            pins[current] = (version, hashes + 1)
    return pins


def test_the_requirements_say_which_command_writes_them() -> None:
    header = REQUIREMENTS.read_text(encoding="utf-8").splitlines()[:2]
    assert header[1].strip("# ").strip() == "make requirements", header


def test_every_runtime_dependency_is_pinned_within_pyproject_and_hashed() -> None:
    # Given pyproject's runtime dependencies (what the layer ships)
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    pins = _pins()
    assert pins
    # Then each one is pinned to a version its specifier allows
    for text in declared:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, (
            f"{name} is in pyproject.toml but not in {REQUIREMENTS.name}: run make requirements"
        )
        assert requirement.specifier.contains(pins[name][0], prereleases=True), (name, pins[name])
    # And every pin, direct or not, carries hashes (pip then refuses anything else)
    assert all(hashes > 0 for _, hashes in pins.values()), pins


def test_boto3_and_botocore_are_pinned_as_a_matched_pair() -> None:
    # The X-Ray SDK pulls botocore into the layer, where it shadows the runtime's: boto3 comes too.
    pins = _pins()
    boto3, botocore = pins["boto3"][0], pins["botocore"][0]
    assert boto3.split(".")[:2] == botocore.split(".")[:2], (boto3, botocore)


def test_the_layer_ships_no_development_dependency() -> None:
    pins = _pins()
    for name in ("moto", "pyyaml", "pytest", "checkov", "uv", "cfn-lint", "aws-sam-translator"):
        assert canonicalize_name(name) not in pins, name
