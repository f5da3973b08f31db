"""payment-outbox: the system on one machine, no Docker, no AWS account.

    payment-outbox local            the whole system live: API on :3000, emulator on :5000 (alias: up)
    payment-outbox invoke FUNCTION --event events/x.json      one handler, like `sam local invoke`
    payment-outbox sign --body '{...}'                        the X-Signature header for a callback
    payment-outbox demo                                       a narrated scenario against `local`
    payment-outbox migrate                                    the configured database to the newest schema
    payment-outbox chaos [--kill]                             the chaos runs (docs/reliability.md)
    payment-outbox preflight --config-env prod                before sam deploy: what would hang, fail
                                                              or stay silent with your parameters

Run it from the project folder (the one holding template.yaml), or pass --root.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from payment_outbox_dev.arguments import find_root, positive_fraction
from payment_outbox_dev.arguments import parameter as _parameter
from payment_outbox_dev.chaos import runner as chaos_runner
from payment_outbox_dev.local.stack import LOCAL_WEBHOOK_SECRET
from payment_outbox_dev.local.timing import DEFAULT_TIME_SCALE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="payment-outbox", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, default=None, help="project folder holding template.yaml")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    local = commands.add_parser(
        "local",
        aliases=["up"],
        help="run the whole system: API, emulator, relay schedule, queue pollers",
        description="Run the whole system locally from template.yaml (see docs/local-stack.md).",
    )
    local.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1); another than loopback needs --expose",
    )
    local.add_argument(
        "--expose",
        action="store_true",
        help="allow a non-loopback --host (then a --webhook-secret of your own is required too: "
        "/admin/* has no IAM locally and /_local/state shows phone numbers)",
    )
    local.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a Host header name to answer besides loopback and --host (repeatable); "
        "any other Host is refused (DNS rebinding)",
    )
    local.add_argument("--api-port", type=int, default=3000, help="HTTP API port (default 3000)")
    local.add_argument("--emulator-port", type=int, default=5000, help="AWS emulator port (default 5000)")
    local.add_argument(
        "--emulator-url",
        default=None,
        help="use an AWS emulator that is already running instead of starting one (its state is its own)",
    )
    local.add_argument(
        "--data-dir", type=Path, default=Path(".local-stack"), help="SQLite file and saved emulator state"
    )
    local.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="MySQL instead of SQLite, e.g. mysql+pymysql://user:pass@host:3306/db (default $DATABASE_URL)",
    )
    local.add_argument(
        "--poll-interval", type=float, default=1.0, help="seconds between empty queue polls (1)"
    )
    local.add_argument(
        "--time-scale",
        type=positive_fraction,
        default=DEFAULT_TIME_SCALE,
        help="one factor for every duration the stack shortens: visibility timeouts, schedules, "
        f"function timeouts, the relay's lease (default 1/{1 / DEFAULT_TIME_SCALE:g}: 180 s of visibility "
        f"become {180 * DEFAULT_TIME_SCALE:g} s, rate(1 minute) {60 * DEFAULT_TIME_SCALE:g} s, a 30 s "
        f"timeout {30 * DEFAULT_TIME_SCALE:g} s)",
    )
    local.add_argument(
        "--workers",
        type=int,
        default=2,
        help="worker processes per function, each like a Lambda container (default 2)",
    )
    local.add_argument(
        "--webhook-secret",
        default=os.environ.get("WEBHOOK_SECRET", LOCAL_WEBHOOK_SECRET),
        help="secret callbacks are signed with (default $WEBHOOK_SECRET or the local one)",
    )
    local.add_argument(
        "--parameter-overrides",
        nargs="*",
        type=_parameter,
        default=[],
        metavar="NAME=VALUE",
        help="template parameters, e.g. OutboxMaxAttempts=3",
    )
    local.add_argument("--verbose", action="store_true", help="show the handlers' JSON logs and metrics too")

    invoke = commands.add_parser(
        "invoke",
        help="invoke one function with an event, like `sam local invoke`",
        description="Invoke one function in-process: its handler and environment from template.yaml, "
        "an in-process AWS emulator, a fresh SQLite database (or --database-url). "
        "The response goes to stdout, the handler's logs to stderr.",
    )
    invoke.add_argument("function", help="logical id (PaymentApiFunction) or short form (payment_api)")
    invoke.add_argument("--event", "-e", default=None, help="event JSON file, or - for stdin (default {})")
    invoke.add_argument("--database-url", default=None, help="a database instead of a fresh SQLite file")
    invoke.add_argument(
        "--webhook-secret",
        default=os.environ.get("WEBHOOK_SECRET", LOCAL_WEBHOOK_SECRET),
        help="secret the payment API verifies callbacks with (and invoke signs them with)",
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

    sign = commands.add_parser(
        "sign",
        help="print the X-Signature header for a payment callback body",
        description="Print 'X-Signature: t=<now>,v1=<hmac>' for the exact bytes of the body "
        "(--body, or stdin: mind the trailing newline echo adds; use printf).",
    )
    sign.add_argument("--body", default=None, help="the callback body (default: read stdin)")
    sign.add_argument(
        "--secret",
        default=os.environ.get("WEBHOOK_SECRET", LOCAL_WEBHOOK_SECRET),
        help="signing secret (default $WEBHOOK_SECRET or the local stack's)",
    )
    sign.add_argument("--timestamp", type=int, default=None, help="unix seconds (default now)")
    sign.add_argument("--value-only", action="store_true", help="print only the header value")

    demo = commands.add_parser(
        "demo",
        help="a narrated scenario against a running `payment-outbox local`",
        description="Drive a running local stack over HTTP and the emulator's AWS API: a paid order, "
        "a duplicate callback and delivery, an SNS outage and recovery, a message driven to FAILED.",
    )
    demo.add_argument("--api-url", default="http://127.0.0.1:3000", help="the stack's API")
    demo.add_argument(
        "--secret",
        default=os.environ.get("WEBHOOK_SECRET", LOCAL_WEBHOOK_SECRET),
        help="the stack's webhook secret",
    )
    demo.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each outcome (60)")

    chaos = commands.add_parser(
        "chaos",
        help="the chaos runs: faults in one process (make chaos), or --kill: SIGKILLs against a live stack",
        description=chaos_runner.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    chaos_runner.add_arguments(chaos)

    commands.add_parser(
        "migrate",
        help="bring the configured database to the newest schema",
        description="Run the migrations the SchemaMigrator function runs on deploy, against the database "
        "at DATABASE_URL (or DB_HOST, DB_PORT, DB_NAME and DB_SECRET_ARN).",
    )
    commands.add_parser(
        "preflight",
        add_help=False,
        help="before sam deploy: what would hang, fail or stay silent with your parameters",
        description="Run the deploy proofs against samconfig.toml's parameters (docs/deploy.md).",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args, extra = build_parser().parse_known_args(argv)
    if args.command == "preflight":
        # preflight's options are its own (payment_outbox_dev.checks.preflight).
        from payment_outbox_dev.checks import preflight

        root = (args.root or find_root(Path.cwd())).resolve()
        files = [
            "--config-file",
            str(root / "samconfig.toml"),
            "--template-file",
            str(root / "template.yaml"),
        ]
        return preflight.main([*files, *extra])
    if extra:
        build_parser().error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "chaos":
        return chaos_runner.main(args)
    if args.command == "sign":
        return _sign(args)
    if args.command == "demo":
        from payment_outbox_dev.demo.stack import run_demo

        return run_demo(args.api_url, args.secret, timeout=args.timeout)
    if args.command == "migrate":
        return _migrate()
    root = (args.root or find_root(Path.cwd())).resolve()
    if args.command == "invoke":
        return _invoke(root, args)
    return _local(root, args)


def _local(root: Path, args: argparse.Namespace) -> int:
    from payment_outbox_dev.local.stack import LocalStack, StackConfig

    config = StackConfig(
        root=root,
        host=args.host,
        api_port=args.api_port,
        emulator_port=args.emulator_port,
        emulator_url=args.emulator_url,
        data_dir=args.data_dir,
        database_url=args.database_url,
        poll_interval=args.poll_interval,
        time_scale=args.time_scale,
        workers=args.workers,
        webhook_secret=args.webhook_secret,
        parameters=dict(args.parameter_overrides),
        verbose=args.verbose,
        expose=args.expose,
        allowed_hosts=tuple(args.allow_host),
    )
    return LocalStack(config).run()


def _invoke(root: Path, args: argparse.Namespace) -> int:
    from payment_outbox_dev.local.invoke import invoke

    if args.event is None:
        event: Any = {}
    elif args.event == "-":
        event = json.load(sys.stdin)
    else:
        event = json.loads(Path(args.event).read_text())
    try:
        logical_id, response = invoke(
            root,
            args.function,
            event,
            log_stream=sys.stderr,
            database_url=args.database_url,
            webhook_secret=args.webhook_secret,
            sign=args.sign,
            seed=args.seed,
        )
    except LookupError as exc:
        print(str(exc).strip("'\""), file=sys.stderr)
        return 2
    except Exception:
        print(traceback.format_exc(), file=sys.stderr)
        return 1
    print(f"{logical_id} returned:", file=sys.stderr)
    print(json.dumps(response, indent=2, default=str))
    if isinstance(response, dict) and response.get("statusCode") == 404 and args.database_url:
        print("invoke: 404: the event names a row the given database does not hold", file=sys.stderr)
    return 0


def _migrate() -> int:
    from payment_outbox.adapters.aws import AwsClients
    from payment_outbox.adapters.db.migration import AlembicSchemaMigrations
    from payment_outbox.composition.database import connect_database
    from payment_outbox.services.migration import migrate_schema
    from payment_outbox.settings import DatabaseSettings

    database = connect_database(DatabaseSettings(), AwsClients())
    try:
        revision = migrate_schema(AlembicSchemaMigrations(database.engine))
        print(f"schema is at {revision} on {database.engine.url.render_as_string()}")
    finally:
        database.engine.dispose()
    return 0


def _sign(args: argparse.Namespace) -> int:
    from payment_outbox.domain.signature import sign

    body = args.body.encode() if args.body is not None else sys.stdin.buffer.read()
    value = sign(body, args.secret, int(time.time()) if args.timestamp is None else args.timestamp)
    print(value if args.value_only else f"X-Signature: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
