"""Answering a CloudFormation custom resource request (a PUT of the outcome to its pre-signed URL)."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

#: CloudFormation waits up to an hour for an answer it never gets; never let a send hang that long.
SEND_TIMEOUT_SECONDS = 10


def send(
    event: dict[str, Any],
    *,
    success: bool,
    reason: str,
    physical_resource_id: str,
    data: dict[str, str] | None = None,
    log_stream_name: str = "",
) -> None:
    body = json.dumps(
        {
            "Status": "SUCCESS" if success else "FAILED",
            "Reason": f"{reason} (log stream {log_stream_name})" if log_stream_name else reason,
            "PhysicalResourceId": physical_resource_id,
            "StackId": event["StackId"],
            "RequestId": event["RequestId"],
            "LogicalResourceId": event["LogicalResourceId"],
            "NoEcho": False,
            "Data": data or {},
        }
    ).encode()
    url = event["ResponseURL"]
    if not url.startswith(("https://", "http://127.0.0.1", "http://localhost")):
        raise ValueError("ResponseURL must be an https URL")
    request = urllib.request.Request(  # noqa: S310 - scheme checked above  # nosec B310
        url, data=body, method="PUT", headers={"Content-Type": "", "Content-Length": str(len(body))}
    )
    with urllib.request.urlopen(request, timeout=SEND_TIMEOUT_SECONDS):  # noqa: S310 - scheme checked  # nosec B310
        pass
