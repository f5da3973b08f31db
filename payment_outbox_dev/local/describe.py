"""One line saying why something failed: the error's class and message, phone numbers masked.

Every retry, dead-letter and failure line of the local tooling goes through ``describe``, so an
operator reading it knows the cause without a traceback, and no full phone number reaches a log.
"""

from __future__ import annotations

import re

from payment_outbox.domain.sms import mask_phone

#: An E.164 number anywhere in a text (the domain's own pattern, unanchored).
_PHONE = re.compile(r"\+[1-9]\d{6,14}")


def mask_phones(text: str) -> str:
    """``text`` with each phone number masked the way delivery records mask it."""
    return _PHONE.sub(lambda found: mask_phone(found.group(0)), text)


def describe(exc: BaseException) -> str:
    """``ClassName: first line of the message`` (just the class when there is no message)."""
    lines = str(exc).strip().splitlines()
    message = lines[0] if lines else ""
    return mask_phones(f"{type(exc).__name__}: {message}" if message else type(exc).__name__)
