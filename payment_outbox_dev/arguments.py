"""What the commands share in reading their arguments: the project folder, fractions, NAME=VALUE pairs,
and the one-line error a command ends with when what it was given cannot be used.

The types raise what argparse turns into a usage error; ``CommandError`` is what a command raises for
a missing file or setting: ``payment-outbox`` prints it on one line and exits with 2, never a traceback.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The exit code of a command given something it cannot use (argparse's own for a usage error).
USAGE_ERROR = 2


class CommandError(Exception):
    """A file, a setting or a value the command was given cannot be used: said in one line, exit 2."""


def find_root(start: Path) -> Path:
    """The nearest folder holding template.yaml, from ``start`` upwards."""
    for candidate in (start, *start.parents):
        if (candidate / "template.yaml").is_file():
            return candidate
    raise CommandError("template.yaml not found: run payment-outbox from the project folder (or pass --root)")


def root_of(args: argparse.Namespace) -> Path:
    """The project folder: ``--root``, or the nearest folder holding template.yaml."""
    given: Path | None = getattr(args, "root", None)
    return (given or find_root(Path.cwd())).resolve()


def show_fraction(value: float) -> str:
    """``1/15`` for one over a whole number, else the number: how a time scale reads best."""
    return f"1/{1 / value:g}" if 0 < value < 1 and float(1 / value).is_integer() else f"{value:g}"


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


@dataclass(frozen=True)
class Option:
    """An option whose flag names the field of the configuration it sets (``--wave-size``:
    ``wave_size``) and whose help states that configuration's default, so the two never differ."""

    flag: str
    kind: Callable[[str], Any]
    default: Any
    what: str
    shown: Callable[[Any], str] = "{:g}".format

    @property
    def field(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    def add_to(self, group: Any) -> None:
        group.add_argument(
            self.flag,
            type=self.kind,
            default=self.default,
            help=f"{self.what} (default {self.shown(self.default)})",
        )
