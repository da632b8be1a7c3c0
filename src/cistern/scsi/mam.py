"""Medium auxiliary memory: READ ATTRIBUTE and WRITE ATTRIBUTE (SPC-4 6.16, 6.40, 7.4) of the loaded
cartridge.

Medium attributes (read only): 0000h remaining capacity and 0001h maximum capacity in the partition
(MiB), 0003h load count, 0400h medium manufacturer, 0401h medium serial number (the barcode), 0408h
medium type (00h data, 80h WORM).  Host attributes (writable, kept in the cartridge's meta.json):
0800h application vendor, 0801h application name, 0802h application version, 0803h user medium text
label, 0804h date and time last written, 0806h barcode (defaults to the cartridge's barcode).
One logical volume, one partition (both numbered 0).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from .sense import (
    PARAMETER_LIST_LENGTH_ERROR,
    WRITE_ERROR,
    WRITE_PROTECTED,
    CheckCondition,
    SenseKey,
    invalid_field,
    invalid_param,
)
from .task import ScsiResult, ScsiTask

if TYPE_CHECKING:
    from ..storage.tape.cartridge import Cartridge
    from .tape import TapeUnit

BINARY, ASCII, TEXT = 0x00, 0x01, 0x02
MIB = 1 << 20
# id: (format, length) of the writable host attributes (SPC-4 table 7.4.2.4)
HOST_ATTRIBUTES = {
    0x0800: (ASCII, 8),
    0x0801: (ASCII, 32),
    0x0802: (ASCII, 8),
    0x0803: (TEXT, 160),
    0x0804: (ASCII, 12),
    0x0806: (ASCII, 32),
}
MEDIUM_ATTRIBUTES = (0x0000, 0x0001, 0x0003, 0x0400, 0x0401, 0x0408)


def _attr(ident: int, fmt: int, value: bytes, read_only: bool) -> bytes:
    return struct.pack(">HBH", ident, (0x80 if read_only else 0) | fmt, len(value)) + value


def _ascii(text: str, width: int) -> bytes:
    return text.encode("ascii", "replace")[:width].ljust(width, b" ")


def attributes(cart: Cartridge) -> dict[int, bytes]:
    """Every attribute of ``cart`` as encoded attribute bytes, by identifier."""
    used = cart.data_end
    out = {
        0x0000: _attr(0x0000, BINARY, struct.pack(">Q", (cart.capacity - used) // MIB), True),
        0x0001: _attr(0x0001, BINARY, struct.pack(">Q", cart.capacity // MIB), True),
        0x0003: _attr(0x0003, BINARY, struct.pack(">Q", cart.load_count), True),
        0x0400: _attr(0x0400, ASCII, _ascii("CISTERN", 8), True),
        0x0401: _attr(0x0401, ASCII, _ascii(cart.barcode, 32), True),
        0x0408: _attr(0x0408, BINARY, bytes((0x80 if cart.worm else 0x00,)), True),
    }
    stored = cart.meta.get("attributes")
    host = stored if isinstance(stored, dict) else {}
    for ident, (fmt, width) in HOST_ATTRIBUTES.items():
        raw = host.get(f"{ident:04x}")
        if isinstance(raw, str):
            out[ident] = _attr(ident, fmt, bytes.fromhex(raw), False)
        elif ident == 0x0806:
            out[ident] = _attr(ident, fmt, _ascii(cart.barcode, width), False)
    return dict(sorted(out.items()))


async def read_attribute(server: object, lu: TapeUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    """READ ATTRIBUTE: service actions 00h values, 01h list, 02h volume list, 03h partition list,
    05h supported attributes."""
    sa = cdb[1] & 0x1F
    volume, partition = cdb[5], cdb[7]
    (first,) = struct.unpack_from(">H", cdb, 8)
    (alloc,) = struct.unpack_from(">I", cdb, 10)
    if volume:
        raise invalid_field(5)
    if partition:
        raise invalid_field(7)
    cart = lu.cart()
    if sa == 0x00:
        body = b"".join(v for k, v in attributes(cart).items() if k >= first)
        data = struct.pack(">I", len(body)) + body
    elif sa in (0x01, 0x05):
        ids = list(attributes(cart)) if sa == 0x01 else sorted((*MEDIUM_ATTRIBUTES, *HOST_ATTRIBUTES))
        body = b"".join(struct.pack(">H", i) for i in ids if i >= first)
        data = struct.pack(">I", len(body)) + body
    elif sa in (0x02, 0x03):
        data = struct.pack(">HBB", 2, 0, 1)  # first volume/partition 0, one of them
    else:
        raise invalid_field(1, 4)
    return ScsiResult(data_in=data[:alloc], transfer_length=alloc)


async def write_attribute(server: object, lu: TapeUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    """WRITE ATTRIBUTE: host attributes only; all or nothing; length 0 deletes an attribute."""
    from .tape import run_io

    volume, partition = cdb[5], cdb[7]
    (length,) = struct.unpack_from(">I", cdb, 10)
    if volume:
        raise invalid_field(5)
    if partition:
        raise invalid_field(7)
    cart = lu.cart()
    if length == 0:
        return ScsiResult(transfer_length=0)
    if length > 4096:
        raise invalid_field(10)
    data = bytes(task.data_out or b"")[:length]
    if len(data) < length or length < 4:
        raise CheckCondition(SenseKey.ILLEGAL_REQUEST, PARAMETER_LIST_LENGTH_ERROR)
    (plen,) = struct.unpack_from(">I", data)
    if plen + 4 > len(data):
        raise CheckCondition(SenseKey.ILLEGAL_REQUEST, PARAMETER_LIST_LENGTH_ERROR)
    updates: dict[str, str | None] = {}
    pos = 4
    while pos < 4 + plen:
        if pos + 5 > 4 + plen:
            raise CheckCondition(SenseKey.ILLEGAL_REQUEST, PARAMETER_LIST_LENGTH_ERROR)
        ident, fmt, alen = struct.unpack_from(">HBH", data, pos)
        spec = HOST_ATTRIBUTES.get(ident)
        if spec is None:
            raise invalid_param(pos)  # read-only or unsupported attribute
        if fmt & 0x03 != spec[0]:
            raise invalid_param(pos + 2)
        if alen > spec[1] or pos + 5 + alen > 4 + plen:
            raise invalid_param(pos + 3)
        value = data[pos + 5 : pos + 5 + alen]
        updates[f"{ident:04x}"] = (
            value.ljust(spec[1], b" " if spec[0] != BINARY else b"\0").hex() if alen else None
        )
        pos += 5 + alen
    if cart.write_protect:
        raise CheckCondition(SenseKey.DATA_PROTECT, WRITE_PROTECTED)
    stored = cart.meta.get("attributes")
    host: dict[str, object] = dict(stored) if isinstance(stored, dict) else {}
    for key, val in updates.items():
        if val is None:
            host.pop(key, None)
        else:
            host[key] = val
    cart.meta["attributes"] = host
    try:
        await run_io(cart.save_meta)
    except OSError:
        raise CheckCondition(SenseKey.MEDIUM_ERROR, WRITE_ERROR) from None
    return ScsiResult(transfer_length=length)
