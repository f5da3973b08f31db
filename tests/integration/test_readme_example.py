"""README's curl example works as pasted: against a live `payment-outbox local`, its lines create an order,
take the orderNo from the answer, and pay it with a signed callback of the current time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_local_stack import start_stack, wait_for
from tests.support import ROOT

pytestmark = pytest.mark.local_stack


def _curl_example() -> str:
    """The lines of README's local-stack example that drive the API with curl (the block's first lines)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Local stack\n", 1)[1]
    blocks = [chunk.split("```", 1)[0] for chunk in section.split("```bash\n")[1:]]
    lines = next(block for block in blocks if "curl" in block).splitlines()
    last = max(i for i, line in enumerate(lines) if "curl" in line)
    return "\n".join(lines[: last + 1])


def test_readmes_curl_example_pays_an_order_as_pasted(tmp_path: Path) -> None:
    stack = start_stack(tmp_path / "data", tmp_path / "stack.log")
    try:
        # Given README's lines, aimed at this stack's port and this interpreter's payment-outbox
        script = _curl_example()
        assert "localhost:3000" in script and ".venv/bin/payment-outbox credentials" in script
        port = stack.api.rsplit(":", 1)[1]
        command = f"{sys.executable} -m payment_outbox_dev.cli --root {ROOT}"
        script = (
            script.replace("localhost:3000", f"localhost:{port}")
            .replace("payment-outbox credentials", f"payment-outbox credentials --data-dir {stack.data_dir}")
            .replace(".venv/bin/payment-outbox", command)
        )

        # When they run in a shell, as pasted
        env = {k: v for k, v in os.environ.items() if k != "WEBHOOK_SECRET"}
        done = subprocess.run(  # noqa: S603
            ["bash", "-euo", "pipefail", "-c", script],  # noqa: S607 - bash from PATH
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=120,
            check=False,
        )

        # Then the callback was accepted and the order is PAID
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout.strip().splitlines()[-1])
        assert answer["status"] == "PAID", answer
        order_no = answer["orderNo"]
        rows = wait_for("the order's outbox rows", lambda: stack.outbox_of(order_no))
        assert {row["topic"] for row in rows} == {"topic.points", "topic.sms"}
    finally:
        stack.stop()
