"""Pure domain: order rules, the message envelope, backoff, points and SMS rules. No I/O here."""
