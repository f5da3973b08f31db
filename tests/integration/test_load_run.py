"""``make load``, small: the real load path (a stack of its own on MariaDB, locust headless against it)
pays orders with no failed request, records them, and renders docs/load.md's figures from the record."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from payment_outbox_dev.chaos.load import CREATE, NOTIFY, problems
from payment_outbox_dev.chaos.load_figures import figures_section, render_into
from tests.support import ROOT

pytestmark = pytest.mark.integration


def test_a_short_load_run_pays_orders_without_a_failure_and_renders_its_record(
    mariadb_url: str, tmp_path: Path
) -> None:
    # Given the committed load.md in a folder of the run's own, and the test server
    shutil.copy(ROOT / "docs" / "load.md", tmp_path / "load.md")
    server = make_url(mariadb_url).set(database="").render_as_string(hide_password=False)

    # When make load runs one worker per function, two clients, a few seconds
    command = [
        sys.executable, "-m", "payment_outbox_dev.chaos.load",
        "--workers", "1", "--users", "2", "--seconds", "4",
        "--out", str(tmp_path), "--server-url", server,
    ]  # fmt: skip
    done = subprocess.run(  # noqa: S603 - this interpreter, our own module
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )

    # Then it succeeded: orders were paid, no request failed
    assert done.returncode == 0, done.stderr[-4000:]
    doc = json.loads((tmp_path / "load.json").read_text(encoding="utf-8"))
    (run,) = doc["runs"]
    assert run["error"] is None and problems(doc) == []
    assert run["paid_orders"] > 0 and run["failed_requests"] == 0 and run["errors"] == []
    assert run["paid_orders"] == run["requests"][NOTIFY]["count"]
    assert run["requests"][CREATE]["count"] >= run["paid_orders"]
    # And the record says what was run, where and under what load
    assert doc["inputs"]["users"] == 2 and doc["inputs"]["seconds"] == 4 and doc["inputs"]["workers"] == [1]
    assert doc["inputs"]["database"]["version"] == server_version(server)
    assert doc["machine"]["cpus"] >= 1 and run["load"]["during"]["samples"] >= 1
    # And load.md's figures, and what it printed, are a render of that record
    original = (ROOT / "docs" / "load.md").read_text(encoding="utf-8")
    assert (tmp_path / "load.md").read_text(encoding="utf-8") == render_into(original, doc)
    assert done.stdout.strip() == figures_section(doc)
    # (progress went to stderr)
    assert "load (1 worker(s)): " in done.stderr and "load (1 worker(s)): " not in done.stdout


def server_version(server_url: str) -> str:
    engine = create_engine(server_url)
    try:
        with engine.connect() as conn:
            return str(conn.execute(text("SELECT VERSION()")).scalar_one())
    finally:
        engine.dispose()
