"""Failure triage: the fingerprint of an error, so that rows failing for one cause form one group.

The fingerprint is the error text with what differs from row to row taken out — timestamps, ids
(UUIDs, long hex strings, tokens that mix letters and digits, such as order numbers or request ids)
and numbers — and whitespace collapsed. Its id is a short digest of that text: stable across runs,
safe in a URL path. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import re

#: Ordered: the wider patterns first, so a timestamp is not read as numbers and a UUID not as hex runs.
_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(
            r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?",
            re.IGNORECASE,
        ),
        "<ts>",
    ),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.IGNORECASE), "<id>"),
    (re.compile(r"\b(?=[0-9a-f]*\d)[0-9a-f]{12,}\b", re.IGNORECASE), "<id>"),
    # A token of letters and digits with at least one of each and several digits: an id.
    (re.compile(r"\b(?=[A-Za-z0-9_-]*[A-Za-z])(?=(?:[A-Za-z_-]*\d){4})[A-Za-z0-9_-]+\b"), "<id>"),
    (re.compile(r"\b\d+(?:\.\d+)?\b"), "<n>"),
    (re.compile(r"\s+"), " "),
)
#: The normalised text kept (and shown) per group.
PATTERN_MAX = 300
#: Hex digits of the fingerprint id.
ID_LENGTH = 16
#: What an id looks like (a path segment that is not one names no group).
FINGERPRINT_PATTERN = f"^[0-9a-f]{{{ID_LENGTH}}}$"


def normalise(error: str | None) -> str:
    text = error or ""
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text.strip()[:PATTERN_MAX] or "(no error recorded)"


def fingerprint(error: str | None) -> tuple[str, str]:
    """``(id, pattern)``: the group an error belongs to, and its normalised text."""
    pattern = normalise(error)
    return hashlib.sha256(pattern.encode()).hexdigest()[:ID_LENGTH], pattern
