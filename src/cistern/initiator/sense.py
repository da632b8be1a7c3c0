"""Decoding sense data received from a target: fixed and descriptor formats (SPC-4 section 4.5).

Sense bytes come from the network, so :func:`decode_sense` accepts anything: truncated or nonsense
input gives a :class:`Sense` with whatever could be read and ``valid=False``, never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass

SENSE_KEY_NAMES = {
    0x0: "NO SENSE",
    0x1: "RECOVERED ERROR",
    0x2: "NOT READY",
    0x3: "MEDIUM ERROR",
    0x4: "HARDWARE ERROR",
    0x5: "ILLEGAL REQUEST",
    0x6: "UNIT ATTENTION",
    0x7: "DATA PROTECT",
    0x8: "BLANK CHECK",
    0x9: "VENDOR SPECIFIC",
    0xA: "COPY ABORTED",
    0xB: "ABORTED COMMAND",
    0xD: "VOLUME OVERFLOW",
    0xE: "MISCOMPARE",
}

UNIT_ATTENTION = 0x6
MISCOMPARE = 0xE
ILLEGAL_REQUEST = 0x5


@dataclass(frozen=True, slots=True)
class Sense:
    key: int
    asc: int
    ascq: int
    information: int | None = None
    descriptor_format: bool = False
    valid: bool = True
    raw: bytes = b""

    @property
    def key_name(self) -> str:
        return SENSE_KEY_NAMES.get(self.key, f"0x{self.key:x}")

    def __str__(self) -> str:
        text = f"{self.key_name} ASC/ASCQ 0x{self.asc:02x}/0x{self.ascq:02x}"
        if self.information is not None:
            text += f" information 0x{self.information:x}"
        return text


def decode_sense(raw: bytes) -> Sense:
    """Decode sense data (response codes 0x70/0x71 fixed, 0x72/0x73 descriptor)."""
    if len(raw) < 2:
        return Sense(0, 0, 0, valid=False, raw=raw)
    code = raw[0] & 0x7F
    if code in (0x72, 0x73):
        key = raw[1] & 0x0F
        asc = raw[2] if len(raw) > 2 else 0
        ascq = raw[3] if len(raw) > 3 else 0
        info = None
        pos = 8
        end = min(len(raw), 8 + (raw[7] if len(raw) > 7 else 0))
        while pos + 2 <= end:
            dtype, dlen = raw[pos], raw[pos + 1]
            if dtype == 0x00 and dlen >= 10 and pos + 12 <= len(raw):
                info = int.from_bytes(raw[pos + 4 : pos + 12], "big")
            pos += 2 + dlen
        return Sense(key, asc, ascq, info, True, len(raw) >= 4, raw)
    if code in (0x70, 0x71):
        key = raw[2] & 0x0F if len(raw) > 2 else 0
        info = int.from_bytes(raw[3:7], "big") if (raw[0] & 0x80 and len(raw) >= 7) else None
        asc = raw[12] if len(raw) > 12 else 0
        ascq = raw[13] if len(raw) > 13 else 0
        return Sense(key, asc, ascq, info, False, len(raw) >= 14, raw)
    return Sense(0, 0, 0, valid=False, raw=raw)
