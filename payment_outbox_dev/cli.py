"""payment-outbox: the system on one machine, no Docker, no AWS account.

    payment-outbox local            the whole system live: API on :3000, emulator on :5000 (alias: up)
    payment-outbox invoke FUNCTION --event events/x.json      one handler, like `sam local invoke`
    payment-outbox sign --body '{...}'                        the X-Signature header for a callback
    payment-outbox token --user 42                            a user's token (local --caller-identity cognito)
    payment-outbox credentials                                the local SigV4 key, as curl --user takes it
    payment-outbox demo                                       a narrated scenario against `local`
    payment-outbox migrate                                    the configured database to the newest schema
    payment-outbox chaos [--kill]                             the chaos runs (docs/reliability.md)
    payment-outbox trace PO…                                  one order's journey on the local stack
    payment-outbox failures [requeue|resolve FINGERPRINT]     failure triage (admin API; --apply acts)
    payment-outbox dlq [redrive NAME]                         dead-letter queues (admin API; --apply acts)
    payment-outbox preflight --config-env prod                before sam deploy: what would hang, fail
                                                              or stay silent with your parameters

Run it from the project folder (the one holding template.yaml), or pass --root. Every command has
--help; `payment-outbox --version` tells the installed version. A file or a setting a command cannot
use is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from payment_outbox_dev import commands
from payment_outbox_dev.arguments import (
    USAGE_ERROR,
    CommandError,
    Option,
    parameter,
    positive_fraction,
    show_fraction,
)
from payment_outbox_dev.local.auth import DEFAULT_TOKEN_SECONDS
from payment_outbox_dev.local.stack import LOCAL_WEBHOOK_SECRET, StackConfig
from payment_outbox_dev.local.timing import DEFAULT_TIME_SCALE

#: The local stack's options that set a StackConfig field of the same name, with its default.
LOCAL_OPTIONS = (
    Option("--api-port", int, StackConfig.api_port, "HTTP API port", str),
    Option("--emulator-port", int, StackConfig.emulator_port, "AWS emulator port", str),
    Option("--data-dir", Path, StackConfig.data_dir, "SQLite file and saved emulator state", str),
    Option("--poll-interval", float, StackConfig.poll_interval, "seconds between empty queue polls"),
    Option(
        "--workers", int, StackConfig.workers, "worker processes per function, each like a Lambda container"
    ),
)
#: Other names a command answers to.
ALIASES = {"local": ["up"]}
Runner = Callable[[argparse.Namespace], int]
DEMO_API_URL = f"http://127.0.0.1:{StackConfig.api_port}"
DEMO_TIMEOUT_SECONDS = 60.0


def _version() -> str:
    try:
        return version("payment-outbox")
    except PackageNotFoundError:  # a source tree run without installing
        return "unknown (not installed)"


def _time_scale_help() -> str:
    scale = DEFAULT_TIME_SCALE
    return (
        "one factor for every duration the stack shortens: visibility timeouts, schedules, function "
        f"timeouts, the relay's lease (default {show_fraction(scale)}: 180 s of visibility become "
        f"{180 * scale:g} s, rate(1 minute) {60 * scale:g} s, a 30 s timeout {30 * scale:g} s)"
    )


def _secret(parser: argparse.ArgumentParser, flag: str, what: str) -> None:
    parser.add_argument(
        flag,
        default=os.environ.get("WEBHOOK_SECRET", LOCAL_WEBHOOK_SECRET),
        help=f"{what} (default $WEBHOOK_SECRET, else the local stack's published one)",
    )


def _local_options(local: argparse.ArgumentParser) -> None:
    local.add_argument(
        "--host",
        default=StackConfig.host,
        help=f"address to bind (default {StackConfig.host}); another than loopback needs --expose",
    )
    local.add_argument(
        "--expose",
        action="store_true",
        help="allow a non-loopback --host (then a --webhook-secret of your own is required too: "
        "/_local/state shows phone numbers)",
    )
    local.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a Host header name to answer besides loopback and --host (repeatable); "
        "any other Host is refused (DNS rebinding)",
    )
    for option in LOCAL_OPTIONS:
        option.add_to(local)
    local.add_argument(
        "--emulator-url",
        default=None,
        help="use an AWS emulator that is already running instead of starting one (its state is its own)",
    )
    local.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="MySQL instead of SQLite, e.g. mysql+pymysql://user:pass@host:3306/db (default $DATABASE_URL)",
    )
    local.add_argument(
        "--time-scale", type=positive_fraction, default=DEFAULT_TIME_SCALE, help=_time_scale_help()
    )
    _secret(local, "--webhook-secret", "secret callbacks are signed with")
    local.add_argument(
        "--parameter-overrides",
        nargs="*",
        type=parameter,
        default=[],
        metavar="NAME=VALUE",
        help="template parameters, e.g. OutboxMaxAttempts=3",
    )
    local.add_argument(
        "--caller-identity",
        choices=("iam", "cognito"),
        default=StackConfig.caller_identity,
        help="how the order routes know their caller, as the template's CallerIdentity: iam (SigV4 with "
        "the local credentials printed at start) or cognito (a token from `payment-outbox token`); "
        f"the admin routes always take SigV4 (default {StackConfig.caller_identity})",
    )
    local.add_argument("--verbose", action="store_true", help="show the handlers' JSON logs and metrics too")


def _invoke_options(invoke: argparse.ArgumentParser) -> None:
    invoke.add_argument("function", help="logical id (PaymentApiFunction) or short form (payment_api)")
    invoke.add_argument("--event", "-e", default=None, help="event JSON file, or - for stdin (default {})")
    invoke.add_argument("--database-url", default=None, help="a database instead of a fresh SQLite file")
    _secret(
        invoke,
        "--webhook-secret",
        "secret the payment API verifies callbacks with (and invoke signs them with)",
    )
    invoke.add_argument(
        "--no-sign",
        dest="sign",
        action="store_false",
        help="keep a callback event's own X-Signature and paidAt (default: signed now, paidAt in the window)",
    )
    invoke.add_argument(
        "--no-seed",
        dest="seed",
        action="store_false",
        help="start API events on an empty database (default: the fresh database holds the sample order 1)",
    )


def _sign_options(sign: argparse.ArgumentParser) -> None:
    sign.add_argument("--body", default=None, help="the callback body (default: read stdin)")
    _secret(sign, "--secret", "signing secret")
    sign.add_argument("--timestamp", type=int, default=None, help="unix seconds (default now)")
    sign.add_argument("--value-only", action="store_true", help="print only the header value")


def _demo_options(demo: argparse.ArgumentParser) -> None:
    demo.add_argument("--api-url", default=DEMO_API_URL, help=f"the stack's API (default {DEMO_API_URL})")
    _secret(demo, "--secret", "the stack's webhook secret")
    demo.add_argument(
        "--timeout",
        type=float,
        default=DEMO_TIMEOUT_SECONDS,
        help=f"seconds to wait for each outcome (default {DEMO_TIMEOUT_SECONDS:g})",
    )
    _data_dir(demo, "the stack's data folder, whose local credentials sign the order and admin requests")


def _token_options(token: argparse.ArgumentParser) -> None:
    token.add_argument("--user", required=True, help="the user id the token's subject names")
    _data_dir(token, "the stack's data folder, which keeps its signing key")
    token.add_argument(
        "--seconds",
        type=int,
        default=DEFAULT_TOKEN_SECONDS,
        help=f"lifetime (default {DEFAULT_TOKEN_SECONDS})",
    )


def _credentials_options(credentials: argparse.ArgumentParser) -> None:
    _data_dir(credentials, "the stack's data folder, which keeps its credentials")


def _data_dir(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--data-dir", type=Path, default=StackConfig.data_dir, help=f"{what} (default {StackConfig.data_dir})"
    )


def _no_options(parser: argparse.ArgumentParser) -> None:
    """The command takes none of its own."""


def build_parser() -> argparse.ArgumentParser:
    # Imported here, not at the top: the local stack's worker processes import this module as their
    # __main__, and the chaos runs and the deploy proofs are no worker's business.
    from payment_outbox_dev import operator
    from payment_outbox_dev.chaos import runner as chaos_runner
    from payment_outbox_dev.checks import preflight

    parser = argparse.ArgumentParser(
        prog="payment-outbox", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, default=None, help="project folder holding template.yaml")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands_ = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    table: tuple[tuple[str, Runner, str, str, Callable[[argparse.ArgumentParser], None]], ...] = (
        (
            "local",
            commands.run_local,
            "run the whole system: API, emulator, relay schedule, queue pollers",
            "Run the whole system locally from template.yaml (see docs/local-stack.md).",
            _local_options,
        ),
        (
            "invoke",
            commands.run_invoke,
            "invoke one function with an event, like `sam local invoke`",
            "Invoke one function in-process: its handler and environment from template.yaml, an in-process "
            "AWS emulator, a fresh SQLite database (or --database-url). The response goes to stdout, the "
            "handler's logs to stderr.",
            _invoke_options,
        ),
        (
            "sign",
            commands.run_sign,
            "print the X-Signature header for a payment callback body",
            "Print 'X-Signature: t=<now>,v1=<hmac>' for the exact bytes of the body "
            "(--body, or stdin: mind the trailing newline echo adds; use printf).",
            _sign_options,
        ),
        (
            "token",
            commands.run_token,
            "print a user's token for a local stack run with --caller-identity cognito",
            "Print an ID token for --user, signed by the local stack's key (kept in its data folder; the "
            "stack publishes it at /_local/jwks.json). Send it as the Authorization header of the order "
            "routes.",
            _token_options,
        ),
        (
            "credentials",
            commands.run_credentials,
            "print the local stack's SigV4 credentials as ACCESS_KEY:SECRET, for curl --user",
            "Print the access key and secret the local stack checks SigV4 requests against (its order routes "
            "under --caller-identity iam, and its admin routes), as curl's --user takes them with "
            '--aws-sigv4 "aws:amz:us-east-1:execute-api". Made on first use, kept in the data folder.',
            _credentials_options,
        ),
        (
            "demo",
            commands.run_demo,
            "a narrated scenario against a running `payment-outbox local`",
            "Drive a running local stack over HTTP and the emulator's AWS API: a paid order, a duplicate "
            "callback and delivery, an SNS outage and recovery, a message driven to FAILED.",
            _demo_options,
        ),
        (
            "chaos",
            chaos_runner.main,
            "the chaos runs: faults in one process (make chaos), or --kill: SIGKILLs against a live stack",
            chaos_runner.__doc__ or "",
            chaos_runner.add_arguments,
        ),
        (
            "migrate",
            commands.run_migrate,
            "bring the configured database to the newest schema",
            "Run the migrations the SchemaMigrator function runs on deploy, against the database at "
            "DATABASE_URL (or DB_HOST, DB_PORT, DB_NAME and DB_SECRET_ARN).",
            _no_options,
        ),
        (
            "trace",
            operator.run_trace,
            "one order's journey on the local stack: its rows, effects and log lines, in time order",
            "Every log line of the order across functions (by the callback's correlation id and the "
            "order's message ids), its outbox rows written and sent, and its points and SMS effects.",
            operator.add_trace_arguments,
        ),
        (
            "failures",
            operator.run_failures,
            "failure triage: failed and retrying messages grouped by error fingerprint; requeue or resolve",
            operator.__doc__ or "",
            operator.add_failures_arguments,
        ),
        (
            "dlq",
            operator.run_dlq,
            "dead-letter queues: depth and oldest message; redrive to their queue",
            operator.__doc__ or "",
            operator.add_dlq_arguments,
        ),
        (
            "preflight",
            preflight.run,
            "before sam deploy: what would hang, fail or stay silent with your parameters",
            preflight.DESCRIPTION,
            preflight.add_arguments,
        ),
    )
    for name, run, summary, description, add_options in table:
        command = commands_.add_parser(
            name,
            aliases=ALIASES.get(name, []),
            help=summary,
            description=description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.set_defaults(run=run)
        add_options(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except CommandError as exc:
        print(f"payment-outbox {args.command}: {exc}", file=sys.stderr)
        return USAGE_ERROR
    return code


if __name__ == "__main__":
    sys.exit(main())
