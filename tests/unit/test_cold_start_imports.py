"""What each handler drags in at import time: consumers stay clear of SQLAlchemy, the payment API of
the idempotency layer. Each check imports the handler in a fresh interpreter, as a cold start does."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.unit


_PROBE = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("handler_under_test", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print(json.dumps(sorted(sys.modules)))
"""


def modules_after_importing(function_dir: str) -> set[str]:
    env = {
        **os.environ,
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }
    completed = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", _PROBE, str(ROOT / "functions" / function_dir / "app.py")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return set(json.loads(completed.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("function_dir", ["points_consumer", "sms_consumer"])
def test_a_consumer_handler_does_not_import_sqlalchemy(function_dir: str) -> None:
    # Given a fresh interpreter / When the consumer's handler module is imported
    modules = modules_after_importing(function_dir)
    # Then the handler really loaded its composition root, and SQLAlchemy is nowhere in sys.modules
    assert "payment_outbox.composition.consumers" in modules
    assert not any(name == "sqlalchemy" or name.startswith("sqlalchemy.") for name in modules)


def test_the_payment_api_handler_does_not_import_the_idempotency_layer() -> None:
    # Given a fresh interpreter / When the payment API's handler module is imported
    modules = modules_after_importing("payment_api")
    # Then its own composition root is loaded, but neither our idempotency adapter nor Powertools'
    # idempotency utility is
    assert "payment_outbox.composition.payment_api" in modules
    assert "payment_outbox.adapters.idempotent_record_handler" not in modules
    assert not any(name.startswith("aws_lambda_powertools.utilities.idempotency") for name in modules)
