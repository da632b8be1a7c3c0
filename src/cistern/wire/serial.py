"""32-bit serial number arithmetic for CmdSN, StatSN, DataSN, R2TSN (RFC 7143 section 4.2.2.1, RFC 1982)."""

from __future__ import annotations

MASK = 0xFFFFFFFF
_HALF = 1 << 31


def sn_add(a: int, n: int) -> int:
    return (a + n) & MASK


def sn_lt(a: int, b: int) -> bool:
    """a < b in serial arithmetic (undefined when the distance is exactly 2**31: treated as False)."""
    return a != b and ((b - a) & MASK) < _HALF


def sn_le(a: int, b: int) -> bool:
    return a == b or sn_lt(a, b)


def sn_gt(a: int, b: int) -> bool:
    return sn_lt(b, a)


def sn_in_window(sn: int, low: int, high: int) -> bool:
    """low <= sn <= high in serial arithmetic (the CmdSN window ExpCmdSN..MaxCmdSN)."""
    return sn_le(low, sn) and sn_le(sn, high)
