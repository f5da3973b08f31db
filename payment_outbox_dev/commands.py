"""What each ``payment-outbox`` subcommand does with its parsed arguments (the parser is cli.py's).

Each ``run_*`` returns the exit code; what the user gave that cannot be used (a missing event file,
settings that are not set) is a ``CommandError``, said on one line with exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from dataclasses import fields
from pathlib import Path
from typing import Any

from payment_outbox_dev.arguments import CommandError, root_of


def run_local(args: argparse.Namespace) -> int:
    from payment_outbox_dev.local.stack import LocalStack, StackConfig

    # Each option sets the StackConfig field of its name; the rest are read here.
    named = {field.name for field in fields(StackConfig)} - {"root", "parameters", "allowed_hosts"}
    config = StackConfig(
        **{name: getattr(args, name) for name in named},
        root=root_of(args),
        parameters=dict(args.parameter_overrides),
        allowed_hosts=tuple(args.allow_host),
    )
    return LocalStack(config).run()


def read_event(source: str | None) -> Any:
    """The event of ``invoke --event``: a JSON file, ``-`` for stdin, none for ``{}``."""
    if source is None:
        return {}
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise CommandError(f"cannot read the event {source}: {exc.strerror or exc}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CommandError(f"the event {source} is not JSON: {exc}") from None


def run_invoke(args: argparse.Namespace) -> int:
    from payment_outbox_dev.local.invoke import invoke

    root, event = root_of(args), read_event(args.event)
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
        raise CommandError(str(exc).strip("'\"")) from None
    except Exception:
        print(traceback.format_exc(), file=sys.stderr)
        return 1
    print(f"{logical_id} returned:", file=sys.stderr)
    print(json.dumps(response, indent=2, default=str))
    if isinstance(response, dict) and response.get("statusCode") == 404 and args.database_url:
        print("invoke: 404: the event names a row the given database does not hold", file=sys.stderr)
    return 0


def run_migrate(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from payment_outbox.adapters.aws import AwsClients
    from payment_outbox.adapters.db.migration import AlembicSchemaMigrations
    from payment_outbox.composition.database import connect_database
    from payment_outbox.services.migration import migrate_schema
    from payment_outbox.settings import DatabaseSettings

    try:
        settings = DatabaseSettings()
    except ValidationError as exc:
        reasons = "; ".join(str(error["msg"]).removeprefix("Value error, ") for error in exc.errors())
        raise CommandError(f"no database configured: {reasons}") from None
    database = connect_database(settings, AwsClients())
    try:
        revision = migrate_schema(AlembicSchemaMigrations(database.engine))
        print(f"schema is at {revision} on {database.engine.url.render_as_string()}")
    finally:
        database.engine.dispose()
    return 0


def run_sign(args: argparse.Namespace) -> int:
    from payment_outbox.domain.signature import sign

    body = args.body.encode() if args.body is not None else sys.stdin.buffer.read()
    value = sign(body, args.secret, int(time.time()) if args.timestamp is None else args.timestamp)
    print(value if args.value_only else f"X-Signature: {value}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from payment_outbox_dev.demo.stack import run_demo as demo

    return demo(args.api_url, args.secret, timeout=args.timeout, data_dir=args.data_dir)


def run_token(args: argparse.Namespace) -> int:
    from payment_outbox_dev.local.auth import LocalCredentials

    print(LocalCredentials.load_or_create(args.data_dir).token(args.user, seconds=args.seconds))
    return 0


def run_credentials(args: argparse.Namespace) -> int:
    from payment_outbox_dev.local.auth import LocalCredentials

    credentials = LocalCredentials.load_or_create(args.data_dir)
    print(f"{credentials.access_key_id}:{credentials.secret_access_key}")
    return 0
