"""iSCSI TransportIDs (SPC-4 7.6.4.6): how PERSISTENT RESERVE names an initiator port on the wire.

PROTOCOL IDENTIFIER 5 (iSCSI).  FORMAT CODE 00b carries the iSCSI name of an initiator *device*
(every initiator port with that name); FORMAT CODE 01b carries an initiator *port*:
``<iSCSI name>,i,0x<ISID in hex>``.  The name field is NUL terminated and padded with NULs so that the
ADDITIONAL LENGTH is a multiple of four and at least 20.

Used by READ FULL STATUS (encode), and by REGISTER with SPEC_I_PT and REGISTER AND MOVE (decode:
hostile input, every error is a :class:`TransportIdError` carrying the byte offset to point at).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

PROTOCOL_ISCSI = 0x5
FORMAT_DEVICE = 0b00
FORMAT_PORT = 0b01
MAX_NAME_BYTES = 223  # RFC 7143 4.2.7.1
ISID_BYTES = 6
_SEPARATOR = ",i,0x"


class TransportIdError(ValueError):
    """A malformed TransportID; ``offset`` is the byte (in the parameter list) to report."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


@dataclass(frozen=True, slots=True)
class TransportId:
    """An iSCSI initiator device (``isid`` None, format 00b) or initiator port (format 01b)."""

    name: str
    isid: bytes | None = None

    def matches(self, initiator_name: str, isid: bytes) -> bool:
        """True when an I_T nexus from ``initiator_name``/``isid`` is named by this TransportID."""
        if self.name.casefold() != initiator_name.casefold():
            return False
        return self.isid is None or self.isid == isid

    def encode(self) -> bytes:
        text = self.name if self.isid is None else f"{self.name}{_SEPARATOR}{self.isid.hex()}"
        body = text.encode("utf-8") + b"\0"
        additional = max(20, (len(body) + 3) & ~3)
        fmt = FORMAT_DEVICE if self.isid is None else FORMAT_PORT
        return struct.pack(">BxH", (fmt << 6) | PROTOCOL_ISCSI, additional) + body.ljust(additional, b"\0")


def decode(buf: bytes, offset: int = 0) -> tuple[TransportId, int]:
    """Decode one TransportID at ``offset``; returns it and the offset just after it."""
    if len(buf) - offset < 4:
        raise TransportIdError("TransportID header truncated", offset)
    b0 = buf[offset]
    if b0 & 0x0F != PROTOCOL_ISCSI:
        raise TransportIdError("TransportID PROTOCOL IDENTIFIER is not iSCSI", offset)
    fmt = b0 >> 6
    if fmt not in (FORMAT_DEVICE, FORMAT_PORT) or b0 & 0x30:
        raise TransportIdError("TransportID FORMAT CODE not supported", offset)
    (additional,) = struct.unpack_from(">H", buf, offset + 2)
    end = offset + 4 + additional
    if additional < 4 or additional % 4 or end > len(buf):
        raise TransportIdError("TransportID ADDITIONAL LENGTH invalid", offset + 2)
    field = buf[offset + 4 : end]
    nul = field.find(b"\0")
    if nul <= 0:
        raise TransportIdError("TransportID iSCSI NAME empty or not NUL terminated", offset + 4)
    try:
        text = field[:nul].decode("utf-8")
    except UnicodeDecodeError:
        raise TransportIdError("TransportID iSCSI NAME is not UTF-8", offset + 4) from None
    isid: bytes | None = None
    if fmt == FORMAT_PORT:
        cut = text.casefold().find(_SEPARATOR)
        hex_isid = text[cut + len(_SEPARATOR) :] if cut > 0 else ""
        if len(hex_isid) != 2 * ISID_BYTES:
            raise TransportIdError("TransportID initiator port without a valid ISID", offset + 4)
        try:
            isid = bytes.fromhex(hex_isid)
        except ValueError:
            raise TransportIdError("TransportID ISID is not hexadecimal", offset + 4) from None
        text = text[:cut]
    if not text or len(text.encode("utf-8")) > MAX_NAME_BYTES or any(c in text for c in " ,"):
        raise TransportIdError("TransportID iSCSI NAME invalid", offset + 4)
    return TransportId(text, isid), end


def decode_list(buf: bytes, offset: int, length: int) -> list[TransportId]:
    """Decode the TransportIDs filling ``buf[offset:offset + length]`` exactly."""
    end = offset + length
    if end > len(buf):
        raise TransportIdError("TransportID list runs past the parameter list", offset)
    out: list[TransportId] = []
    view = buf[:end]
    while offset < end:
        tid, offset = decode(view, offset)
        out.append(tid)
    return out
