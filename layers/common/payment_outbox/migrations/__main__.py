"""``python -m payment_outbox.migrations``: migrate the configured database to the newest schema."""

from __future__ import annotations

import logging

from payment_outbox.bootstrap.database import engine as configured_engine
from payment_outbox.migrations.runner import upgrade


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    engine = configured_engine()
    upgrade(engine)
    logging.getLogger(__name__).info("schema is at head on %s", engine.url.render_as_string())


if __name__ == "__main__":
    main()
