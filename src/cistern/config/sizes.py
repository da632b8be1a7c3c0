"""Sizes in bytes, written the way people write them: ``4096``, ``"512M"``, ``"1GiB"``, ``"1.5T"``.

Every suffix is a binary multiple (K = 1024), with or without a trailing ``B``/``iB``.
"""

from __future__ import annotations

import re
from fractions import Fraction

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:([KMGTP])(?:I?B)?|B)?\s*$", re.IGNORECASE)


def size_error(value: object) -> str:
    return f"{value!r} is not a size (use bytes or K/M/G/T suffixes)"


def parse_size(value: int | str) -> int:
    """Bytes from an int or a string such as ``"1G"``; raises ``ValueError`` with a readable message."""
    if isinstance(value, bool):
        raise ValueError(size_error(value))
    if isinstance(value, int):
        if value < 0:
            raise ValueError(size_error(value))
        return value
    if not isinstance(value, str):
        raise ValueError(size_error(value))
    match = _SIZE_RE.match(value)
    if match is None:
        raise ValueError(size_error(value))
    number, unit = match.group(1), (match.group(2) or "").upper()
    total = Fraction(number) * _UNITS[unit]
    if total.denominator != 1:
        raise ValueError(f"{value!r} is not a whole number of bytes")
    return int(total)


def format_size(nbytes: int) -> str:
    """The shortest exact spelling: ``1073741824`` -> ``"1G"``, ``1000`` -> ``"1000"``."""
    for unit in ("P", "T", "G", "M", "K"):
        factor = _UNITS[unit]
        if nbytes and nbytes % factor == 0:
            return f"{nbytes // factor}{unit}"
    return str(nbytes)


def human_size(nbytes: int) -> str:
    """For display: ``1073741824`` -> ``"1.0 GiB"``, ``512`` -> ``"512 B"``."""
    if nbytes < 1024:
        return f"{nbytes} B"
    value = float(nbytes)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024
        if value < 1024 or unit == "PiB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")
