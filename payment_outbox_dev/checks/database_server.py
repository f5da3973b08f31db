"""``make test`` asks first whether the MySQL/MariaDB server the tests need answers, and says so in one
line when none does (README.md, "The database the tests need", says how to get one).

    python -m payment_outbox_dev.checks.database_server        # exit 0 silently, or 1 with one line
"""

from __future__ import annotations

import argparse
import os
import sys

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url

#: The server and database name the tests use unless ``TEST_DATABASE_URL`` says otherwise.
DEFAULT_TEST_DATABASE_URL = "mysql+pymysql://root@127.0.0.1:3306/payment_outbox_test?charset=utf8mb4"
#: How long the question may take: a server that answers does so at once.
CONNECT_TIMEOUT_SECONDS = 3


def configured_test_url() -> URL:
    return make_url(os.environ.get("TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL))


def unanswered(url: URL, timeout: int = CONNECT_TIMEOUT_SECONDS) -> str | None:
    """None when the server at ``url`` answers; else one line saying which server and what to do."""
    server = url.set(database="")
    engine = create_engine(server, connect_args={"connect_timeout": timeout})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # the driver's own error for a refused, unknown or denied server
        reason = str(getattr(exc, "orig", exc)).splitlines()[0]
        return (
            f"make test needs MySQL/MariaDB at {server.render_as_string()} (TEST_DATABASE_URL): "
            f"none answers ({reason}); README.md, 'The database the tests need', says how to get one"
        )
    finally:
        engine.dispose()
    return None


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="python -m payment_outbox_dev.checks.database_server",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="TEST_DATABASE_URL names the server (default: root on 127.0.0.1:3306).",
    ).parse_args(argv)
    problem = unanswered(configured_test_url())
    if problem is None:
        return 0
    print(problem, file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
