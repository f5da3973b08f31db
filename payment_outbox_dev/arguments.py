"""What the commands share in reading their arguments: the project folder, fractions, NAME=VALUE pairs.

Each raises what argparse turns into a one-line usage error (exit code 2), never a traceback.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def find_root(start: Path) -> Path:
    """The nearest folder holding template.yaml, from ``start`` upwards."""
    for candidate in (start, *start.parents):
        if (candidate / "template.yaml").is_file():
            return candidate
    raise SystemExit("template.yaml not found: run payment-outbox from the project folder (or pass --root)")


def parameter(text: str) -> tuple[str, str]:
    """``Name=Value`` (a template parameter)."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected Name=Value, got {text!r}")
    return name, value


def positive_fraction(text: str) -> float:
    """A number, or a fraction such as ``1/30``."""
    try:
        numerator, _, denominator = text.partition("/")
        value = float(numerator) / (float(denominator) if denominator else 1.0)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(
            f"expected a positive number such as 0.05 or 1/30, got {text!r}"
        ) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value
