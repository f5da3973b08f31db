"""An SNS outage for the kill chaos run: the emulator (a process of its own, outliving the stack's
deaths) answers every publish to the topic 503 while it lasts; what the outbox rows look like."""

from __future__ import annotations

import json
import urllib.request

from sqlalchemy import Engine, text


def set_sns_fault(emulator_url: str, mode: str | None) -> None:
    """``"outage"`` (every publish to a topic answered 503), ``"reject"``, or None (healthy)."""
    request = urllib.request.Request(  # noqa: S310 - the emulator's loopback URL
        f"{emulator_url}/_emulator/faults",
        data=json.dumps({"sns": mode}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310  # nosec B310
        if json.loads(response.read()) != {"sns": mode}:
            raise RuntimeError(f"the emulator did not take the SNS fault {mode!r}")


def row_states(engine: Engine) -> str:
    """The outbox rows by status, with the most attempts any of them was charged."""
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT status, COUNT(*), MAX(retry_count) FROM message_record GROUP BY status")
        ).all()
    names = {0: "pending", 1: "sent", 2: "FAILED"}
    return (
        ", ".join(f"{n} {names.get(s, s)} (max attempts charged {m})" for s, n, m in sorted(rows)) or "none"
    )
