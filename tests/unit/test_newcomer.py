"""A newcomer's first hour: README's configuration table is the settings models' variables, `make demo`
installs only what the demo needs, `make test` says in one line when no database server answers,
and the project says under which licence it may be used."""

from __future__ import annotations

import inspect
import re
import socket
import subprocess
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings
from sqlalchemy.engine import make_url

import payment_outbox.settings
from payment_outbox_dev.checks import database_server
from tests.support import ROOT

pytestmark = pytest.mark.unit


def _settings_variables() -> set[str]:
    """Every environment variable a settings model of the runtime reads."""
    module = payment_outbox.settings
    variables = set()
    for _, model in inspect.getmembers(module, inspect.isclass):
        if issubclass(model, BaseSettings) and model.__module__ == module.__name__:
            for name, field in model.model_fields.items():
                alias = field.validation_alias or field.alias
                variables.add((alias if isinstance(alias, str) else name).upper())
    return variables


def _readme_configuration_variables() -> set[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    return {name for first_cell in rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", first_cell)}


def test_readmes_configuration_table_is_every_variable_the_settings_read() -> None:
    read, documented = _settings_variables(), _readme_configuration_variables()
    assert read, "no settings model found"
    assert read - documented == set(), "read by the settings but not in README's table"
    assert documented - read == set(), "in README's table but read by no settings model"


def test_the_project_has_a_licence_and_readme_names_it() -> None:
    licence = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert licence.startswith("MIT License")
    assert "MIT: see `LICENSE`" in (ROOT / "README.md").read_text(encoding="utf-8")


def _make_dry_run(*arguments: str) -> str:
    """What make would run, and nothing else: run under `make test`, a nested make would also print
    "make[1]: Entering directory" lines around it."""
    return subprocess.run(  # noqa: S603
        ["make", "--dry-run", "--no-print-directory", *arguments],  # noqa: S607 - make from PATH
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_make_demo_installs_the_local_extra_and_no_developer_tool(tmp_path: Path) -> None:
    # When make shows what `make demo` runs on a machine without the virtualenv
    shown = _make_dry_run("demo", f"VENV={tmp_path / 'venv'}")

    # Then it installs the project with the local extra only, saying so, and runs the demo
    installs = [line for line in shown.splitlines() if "pip install" in line and "-e" in line]
    assert installs == [f'{tmp_path / "venv"}/bin/python -m pip install --progress-bar on -e ".[local]"']
    assert "installing the runtime and the [local] extra" in shown
    assert ".[dev]" not in shown
    assert shown.rstrip().endswith("-m payment_outbox_dev.demo.embedded")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_make_test_runs_the_server_check_before_pytest() -> None:
    shown = _make_dry_run("test").splitlines()
    check = next(i for i, line in enumerate(shown) if "payment_outbox_dev.checks.database_server" in line)
    assert shown[check + 1].endswith("/pytest")


def test_no_server_is_one_line_naming_it_and_where_to_read_how_to_get_one(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a test database URL whose port nothing listens on
    url = f"mysql+pymysql://root@127.0.0.1:{_closed_port()}/payment_outbox_test"
    monkeypatch.setenv("TEST_DATABASE_URL", url)

    # When make test asks first
    code = database_server.main([])

    # Then it fails with one line naming the server, the variable and README's section
    assert code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"make test needs MySQL/MariaDB at {make_url(url).set(database='')}")
    assert "TEST_DATABASE_URL" in lines[0]
    assert "The database the tests need" in lines[0]
    assert "### The database the tests need" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_default_test_server_is_the_one_readme_states() -> None:
    default = make_url(database_server.DEFAULT_TEST_DATABASE_URL)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert (default.username, default.password, default.host, default.port) == (
        "root",
        None,
        "127.0.0.1",
        3306,
    )
    assert "it uses `root` without a password on `127.0.0.1:3306`" in " ".join(readme.split())
