"""The operator's commands: ``trace`` (one order's journey on the local stack), ``failures`` (failure
triage) and ``dlq`` (dead-letter queues), over the admin API — the local stack's by default, or a
deployed stage with ``--api``, signed with SigV4 from your AWS credentials (``--region``).

Group actions and redrives are dry runs unless ``--apply`` is given.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from payment_outbox_dev.arguments import CommandError
from payment_outbox_dev.local.auth import AUTH_FILE, LocalCredentials

DEFAULT_API = "http://127.0.0.1:3000"


def _api_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api", default=DEFAULT_API, help=f"the API's base URL (default {DEFAULT_API})")
    parser.add_argument(
        "--region",
        default=None,
        help="sign each request with SigV4 for execute-api in this Region (a deployed stage's admin routes)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(".local-stack"),
        help="without --region: the local stack's data folder, whose local credentials sign each request "
        "(default .local-stack)",
    )


def add_trace_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("order_no", metavar="ORDER_NO", help="the order number (PO…)")
    parser.add_argument("--api", default=DEFAULT_API, help=f"the local stack (default {DEFAULT_API})")
    parser.add_argument("--json", action="store_true", help="print the journey as JSON")


def add_failures_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        nargs="?",
        choices=["list", "requeue", "resolve"],
        default="list",
        help="list the groups (default), or requeue / resolve one group's FAILED messages",
    )
    parser.add_argument("fingerprint", nargs="?", help="the group (for requeue and resolve)")
    parser.add_argument("--reason", help="why (3-500 characters; required for requeue and resolve)")
    parser.add_argument("--reset-attempts", action="store_true", help="requeue with a fresh attempt budget")
    parser.add_argument("--apply", action="store_true", help="do it (without: a dry run)")
    _api_options(parser)


def add_dlq_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        nargs="?",
        choices=["list", "redrive"],
        default="list",
        help="list the DLQs (default), or redrive one back to its queue",
    )
    parser.add_argument("name", nargs="?", help="the DLQ (for redrive), as `payment-outbox dlq` names it")
    parser.add_argument("--reason", help="why (3-500 characters; required for redrive)")
    parser.add_argument("--max", type=int, default=None, help="move at most this many messages (1-1000)")
    parser.add_argument("--apply", action="store_true", help="do it (without: a dry run)")
    _api_options(parser)


def run_trace(args: argparse.Namespace) -> int:
    query = urllib.parse.urlencode({"orderNo": args.order_no})
    journey = _call(args.api, "GET", f"/_local/trace?{query}", region=None)
    if args.json:
        print(json.dumps(journey, indent=2))
        return 0
    print(f"order {journey['orderNo']}: correlation id(s) {', '.join(journey['correlationIds']) or '-'}")
    for event in journey["events"]:
        if event["kind"] == "log":
            who = event.get("function", "?")
            text = f"{event.get('level', '')} {event.get('message', '')}"
            keys = " ".join(
                f"{k}={event[k]}" for k in ("message_id", "correlation_id", "result", "error") if event.get(k)
            )
            print(f"{event['at']}  log     {who}: {text}  {keys}".rstrip())
        else:
            print(f"{event['at']}  {event['kind']:<7} {event['what']}")
    return 0


def run_failures(args: argparse.Namespace) -> int:
    if args.action == "list":
        return _print_answer(args, "GET", "/admin/failures")
    if not args.fingerprint or not args.reason:
        raise CommandError(f"failures {args.action} needs FINGERPRINT and --reason")
    extra = {"resetAttempts": args.reset_attempts} if args.action == "requeue" else {}
    path = f"/admin/failures/{urllib.parse.quote(args.fingerprint)}/{args.action}"
    return _print_answer(args, "POST", path, body={"dryRun": not args.apply, "reason": args.reason, **extra})


def run_dlq(args: argparse.Namespace) -> int:
    if args.action == "list":
        return _print_answer(args, "GET", "/admin/dlqs")
    if not args.name or not args.reason:
        raise CommandError("dlq redrive needs NAME and --reason")
    extra = {} if args.max is None else {"maxMessages": args.max}
    path = f"/admin/dlqs/{urllib.parse.quote(args.name)}/redrive"
    return _print_answer(args, "POST", path, body={"dryRun": not args.apply, "reason": args.reason, **extra})


def _print_answer(args: argparse.Namespace, method: str, path: str, body: Any = None) -> int:
    """Calls the admin API where the command's --api, --region and --data-dir say, and prints its
    JSON answer."""
    answer = _call(args.api, method, path, body=body, region=args.region, data_dir=args.data_dir)
    print(json.dumps(answer, indent=2))
    return 0


def _call(
    api: str,
    method: str,
    path: str,
    *,
    region: str | None,
    body: Any = None,
    data_dir: Path | None = None,
) -> Any:
    url = api.rstrip("/") + path
    if not url.startswith(("http://", "https://")):
        raise CommandError(f"--api must be an http(s) URL, got {api!r}")
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data is not None else {}
    if region:
        headers = _signed(method, url, data, headers, region)
    elif data_dir is not None and (data_dir / AUTH_FILE).exists():
        # The local stack checks SigV4 as API Gateway does, against its own local credentials.
        headers = LocalCredentials.load_or_create(data_dir).sign(method, url, data or b"", headers)
    request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310  # nosec B310 - http(s) checked above
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        detail = error.read().decode(errors="replace")
        print(detail, file=sys.stderr)
        raise CommandError(f"{method} {path} answered {error.code}") from None
    except urllib.error.URLError as error:
        raise CommandError(
            f"cannot reach {api}: {error.reason} (is `payment-outbox local` running?)"
        ) from None


def _signed(
    method: str, url: str, data: bytes | None, headers: dict[str, str], region: str
) -> dict[str, str]:
    """The headers with a SigV4 signature for execute-api, from the default AWS credentials."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.session import Session

    credentials = Session().get_credentials()
    if credentials is None:
        raise CommandError("--region signs with your AWS credentials, and none were found")
    request = AWSRequest(method=method, url=url, data=data, headers=headers)
    SigV4Auth(credentials, "execute-api", region).add_auth(request)
    return dict(request.headers.items())
