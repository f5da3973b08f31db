"""Payment callback signatures.

Header: ``X-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from payment_outbox.errors import SignatureRejected

DEFAULT_TOLERANCE_SECONDS = 300
#: The widest tolerance a deployment may configure: the window in which a captured callback replays.
MAX_TOLERANCE_SECONDS = 900
#: The shortest webhook secret accepted: 32 characters (a random 32-byte secret in hex or base64 has more).
MIN_SECRET_LENGTH = 32
_MAX_TIMESTAMP_DIGITS = 15


def sign(raw_body: bytes, secret: str, timestamp: int) -> str:
    """The header value a provider sends for ``raw_body`` at ``timestamp``."""
    return f"t={timestamp},v1={_digest(raw_body, secret, str(timestamp))}"


def verify(
    header: str | None,
    raw_body: bytes,
    secrets: Sequence[str],
    *,
    now: float,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
) -> None:
    """Raise ``SignatureRejected`` unless ``header`` signs ``raw_body`` within the tolerance window.

    ``secrets`` holds the current secret and, during a rotation, the previous one.
    """
    if not header:
        raise SignatureRejected("missing X-Signature header")
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            raise SignatureRejected("malformed X-Signature header")
        fields.setdefault(key, []).append(value)
    timestamps = fields.get("t", [])
    # isascii: str.isdigit() also accepts digits such as "²" that int() cannot parse; the length bound
    # keeps int() below Python's digit limit (unix seconds have 10 digits).
    if len(timestamps) != 1 or not (
        timestamps[0].isascii() and timestamps[0].isdigit() and len(timestamps[0]) <= _MAX_TIMESTAMP_DIGITS
    ):
        raise SignatureRejected("malformed X-Signature timestamp")
    if abs(now - int(timestamps[0])) > tolerance_seconds:
        raise SignatureRejected("X-Signature timestamp outside the tolerance window")
    # A hex digest is ASCII; hmac.compare_digest raises TypeError on non-ASCII str, so drop those here.
    candidates = [value for value in fields.get("v1", []) if value.isascii()]
    expected = [_digest(raw_body, secret, timestamps[0]) for secret in secrets if secret]
    # Compare every pair in constant time; several v1 values let a provider sign with two secrets.
    if not any(hmac.compare_digest(e, c) for e in expected for c in candidates):
        raise SignatureRejected("X-Signature does not match")


def _digest(raw_body: bytes, secret: str, timestamp: str) -> str:
    return hmac.new(secret.encode(), timestamp.encode() + b"." + raw_body, hashlib.sha256).hexdigest()
