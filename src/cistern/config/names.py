"""iSCSI names (RFC 7143 section 4.2.7): ``iqn.``, ``eui.`` and ``naa.`` formats, checked and normalized.

- ``iqn.YYYY-MM.reversed.domain[:anything]`` (4.2.7.4). Names are case-insensitive: RFC 3722's stringprep
  profile folds case, so we store them lowercased. Only ``a-z 0-9 - . :`` and non-ASCII letters are allowed.
- ``eui.`` + 16 hex digits, an EUI-64 (4.2.7.5); ``naa.`` + 16 or 32 hex digits (4.2.7.6). Hex digits
  are stored uppercase, as the RFC's examples write them.
- At most 223 bytes of UTF-8 (4.2.7.1).

Targets should compare names (ACL entries, InitiatorName) in this normalized form.
"""

from __future__ import annotations

import re
import unicodedata

MAX_NAME_BYTES = 223
_IQN_RE = re.compile(r"^iqn\.(\d{4})-(\d{2})\.([^:]+)(?::(.*))?$", re.DOTALL)
_LABEL_RE = re.compile(r"^[a-z0-9\u0080-\U0010ffff]([a-z0-9\u0080-\U0010ffff-]*[a-z0-9\u0080-\U0010ffff])?$")
_HEX = frozenset("0123456789abcdefABCDEF")


def _bad_char(name: str) -> str | None:
    for ch in name:
        if ch.isascii():
            if not (ch.islower() or ch.isdigit() or ch in "-.:"):
                return ch
        elif unicodedata.category(ch)[0] in "CZ":  # control, format, separators
            return ch
    return None


def normalize_iscsi_name(name: str) -> str:
    """The normalized form of ``name``; raises ``ValueError`` naming what is wrong."""
    if not isinstance(name, str):
        raise ValueError(f"{name!r} is not an iSCSI name (expected a string)")
    prefix = f"{name!r} is not an iSCSI name"
    lowered = name.lower()
    if lowered.startswith(("eui.", "naa.")):
        kind, digits = lowered[:3], name[4:]
        lengths = (16,) if kind == "eui" else (16, 32)
        if len(digits) not in lengths or not set(digits) <= _HEX:
            want = " or ".join(str(n) for n in lengths)
            raise ValueError(f"{prefix}: '{kind}.' must be followed by {want} hex digits")
        return f"{kind}.{digits.upper()}"
    if not lowered.startswith("iqn."):
        raise ValueError(f"{prefix}: it must start with 'iqn.', 'eui.' or 'naa.' (RFC 7143 section 4.2.7)")
    if len(lowered.encode("utf-8")) > MAX_NAME_BYTES:
        raise ValueError(f"{prefix}: longer than {MAX_NAME_BYTES} bytes")
    bad = _bad_char(lowered)
    if bad is not None:
        raise ValueError(f"{prefix}: character {bad!r} is not allowed (use a-z 0-9 - . :)")
    match = _IQN_RE.match(lowered)
    if match is None:
        raise ValueError(f"{prefix}: expected iqn.YYYY-MM.reversed.domain[:identifier]")
    _year, month, domain, _rest = match.groups()
    if not 1 <= int(month) <= 12:
        raise ValueError(f"{prefix}: month {month} in the date is not 01..12")
    if not all(_LABEL_RE.fullmatch(label) for label in domain.split(".")):
        raise ValueError(f"{prefix}: {domain!r} is not a reversed domain name")
    return lowered
