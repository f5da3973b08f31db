"""What the docs-truth tests share: finding the numbers a rendered document says, and tracing each one
to a value of the JSON it was rendered from (within the rounding the document printed it with)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

#: A number as the docs print one: digits with thousands separators and decimals, not part of a
#: word or an identifier (p99, us-east-1, arm64, SigV4), optionally a ratio ("x") or a share ("%").
NUMBER = re.compile(r"(?<![\w.\-/$])(\d[\d,]*(?:\.\d+)?)(?=(x|%)?(?![\w]))")


def load_json(path: Path) -> dict[str, Any]:
    """A recorded report (docs/*.json or a test fixture)."""
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def json_numbers(value: Any) -> list[float]:
    """Every number in the JSON: values, and keys that are numbers (relay counts)."""
    found: list[float] = []
    if isinstance(value, bool) or value is None:
        return found
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, dict):
        for key, item in value.items():
            if re.fullmatch(r"\d+(\.\d+)?", key):
                found.append(float(key))
            found += json_numbers(item)
    elif isinstance(value, list):
        for item in value:
            found += json_numbers(item)
    return found


def traced(token: str, share: bool, values: list[float]) -> bool:
    number = float(token.replace(",", ""))
    decimals = len(token.split(".")[1]) if "." in token else 0
    tolerance = 0.5 * 10**-decimals + 1e-9
    candidates = [v * 100 for v in values] if share else values
    return any(abs(v - number) <= tolerance for v in candidates)


def untraced(text: str, doc: dict[str, Any], verbatim: Iterable[str]) -> list[str]:
    """The numbers in ``text`` that are no value of ``doc``; the ``verbatim`` strings (descriptions the
    document quotes as they are, digits included) are left out first, longest first."""
    for quoted in sorted(verbatim, key=len, reverse=True):
        text = text.replace(quoted, " ")
    values = json_numbers(doc)
    return [
        match.group(0) + (match.group(2) or "")
        for match in NUMBER.finditer(text)
        if not traced(match.group(1), match.group(2) == "%", values)
    ]
