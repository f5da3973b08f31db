"""``payment-outbox invoke``: what ``sam local invoke`` does, in this process and without a container.

The template's handler runs with its own environment, resolved against the template's resources
provisioned in an in-process AWS emulator (moto), on a fresh SQLite database migrated to head (or the
database at ``database_url``). The handler's logs go to ``log_stream``; the response is returned.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from payment_outbox_dev.template import find_function, load_template


@contextlib.contextmanager
def _scoped_environment() -> Iterator[None]:
    """Whatever the invocation sets in ``os.environ`` is undone afterwards."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def invoke(
    root: Path,
    function: str,
    event: dict[str, Any],
    *,
    log_stream: TextIO,
    database_url: str | None = None,
    webhook_secret: str,
) -> tuple[str, Any]:
    """Invoke ``function`` (logical id or short form) with ``event``; returns (logical id, response)."""
    from moto import mock_aws

    from payment_outbox.adapters.db.engine import make_engine
    from payment_outbox.migrations.runner import upgrade
    from payment_outbox_dev.harness import REGION, LocalFunctions
    from payment_outbox_dev.provision import provision

    template = load_template(root / "template.yaml")
    logical_id = find_function(template, function).logical_id
    with _scoped_environment(), tempfile.TemporaryDirectory(prefix="payment-outbox-invoke-") as scratch:
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL"):
            os.environ.pop(name, None)
        os.environ.update(
            {
                "AWS_ACCESS_KEY_ID": "local",  # emulator credentials  # nosec B105
                "AWS_SECRET_ACCESS_KEY": "local",  # nosec B105
                "AWS_DEFAULT_REGION": REGION,
                "AWS_REGION": REGION,
                "POWERTOOLS_TRACE_DISABLED": "true",
            }
        )
        url = database_url or f"sqlite:///{Path(scratch) / 'payment_outbox.db'}"
        with mock_aws():
            resources = provision(template, region=REGION)
            engine = make_engine(url)
            upgrade(engine)
            engine.dispose()
            overrides = {
                "DATABASE_URL": url,
                "WEBHOOK_SECRET": webhook_secret,
                "POWERTOOLS_TRACE_DISABLED": "true",
            }
            functions = LocalFunctions(root, template, resources.environments(template, overrides))
            # Handlers log to stdout (Powertools binds the stream when the handler is loaded).
            with contextlib.redirect_stdout(log_stream), warnings.catch_warnings():
                # A handler that emits no metric of its own makes Powertools warn; nothing is wrong.
                warnings.filterwarnings("ignore", message="No application metrics to publish")
                response = functions.invoke(logical_id, event)
    return logical_id, response
