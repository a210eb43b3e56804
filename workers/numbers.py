"""Numbers read from a request (a query parameter, a header): ASCII digits only.

``str.isdigit`` is true for superscripts and other Unicode digits (``'²'``) that ``int``
refuses, and ``int`` itself accepts signs, spaces, underscores and Arabic-Indic digits: neither
is the grammar of a number hookline wrote itself. One rule here, used wherever a worker reads
one back, so a forged or mangled value falls back to the default instead of raising.
"""

from __future__ import annotations

import re
from typing import Final

_ASCII_DIGITS: Final = re.compile(r"[0-9]+")


def ascii_int(value: object, *, default: int, max_digits: int = 9) -> int:
    """``value`` (str, bytes or int) as a non-negative int when it is 1 to ``max_digits``
    ASCII digits, else ``default``."""
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value if value >= 0 else default
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str) or len(value) > max_digits or not _ASCII_DIGITS.fullmatch(value):
        return default
    return int(value)
