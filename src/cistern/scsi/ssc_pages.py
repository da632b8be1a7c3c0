"""The tape drive's mode pages (SSC-3 8.3) and log pages (SSC-3 8.2).

Mode pages: 0x00 (no page: header and block descriptor only, what Linux st reads), 0x0A control (shared), 0x0F data compression (DCC=1, DCE changeable: ``mt compression``
works; with DCE set, blocks are stored DEFLATE-compressed when that makes them smaller), 0x10 device configuration (EEG/SEW set, nothing changeable),
0x11 medium partition (one partition of the cartridge's capacity, nothing changeable).
Log pages: 0x0C sequential-access device (byte counters since power on, native capacities in MiB),
0x2E TapeAlert (64 flags, all clear), 0x31 tape capacity (remaining / maximum, partition 0, MiB).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from .log import parameter
from .mode import PC_CHANGEABLE, control_page

if TYPE_CHECKING:
    from .tape import TapeUnit

MIB = 1 << 20
COMPRESSION_ALGORITHM = 0x000000FF  # page 0x0F: unregistered algorithm (DEFLATE / zlib, SSC-3 8.3.2)


def _compression(lu: TapeUnit, pc: int) -> bytes:
    page = bytearray(16)
    page[0], page[1] = 0x0F, 14
    if pc == PC_CHANGEABLE:
        page[2] = 0x80  # DCE
        return bytes(page)
    page[2] = 0x40 | (0x80 if lu.dce else 0)  # DCC: data compression capable
    page[3] = 0x80  # DDE: decompression enabled
    struct.pack_into(">II", page, 4, COMPRESSION_ALGORITHM, COMPRESSION_ALGORITHM)
    return bytes(page)


def _device_configuration(lu: TapeUnit, pc: int) -> bytes:
    page = bytearray(16)
    page[0], page[1] = 0x10, 14
    if pc == PC_CHANGEABLE:
        return bytes(page)
    page[8] = 0x40  # LOIS: logical object identifiers supported
    page[10] = 0x18  # EEG (EOD generation), SEW (synchronize at early warning)
    page[14] = 0x01  # SELECT DATA COMPRESSION ALGORITHM: default
    return bytes(page)


def _medium_partition(lu: TapeUnit, pc: int) -> bytes:
    page = bytearray(10)
    page[0], page[1] = 0x11, 8
    if pc == PC_CHANGEABLE:
        return bytes(page)
    page[4] = 0x10  # PSUM 10b: partition size in megabytes (units of MiB here)
    page[5] = 0x03  # MEDIUM FORMAT RECOGNITION: format and partition
    cart = lu.cartridge
    size = min(cart.capacity // MIB, 0xFFFF) if cart is not None else 0
    struct.pack_into(">H", page, 8, size)
    return bytes(page)


def _no_page(lu: TapeUnit, pc: int) -> bytes:
    return b""  # page 00h: header and block descriptor only (Linux st asks for this at open)


TAPE_MODE_PAGES = {
    0x00: _no_page,
    0x0A: control_page,
    0x0F: _compression,
    0x10: _device_configuration,
    0x11: _medium_partition,
}


def _u64(value: int) -> bytes:
    return struct.pack(">Q", max(0, value))


def _u32(value: int) -> bytes:
    return struct.pack(">I", max(0, min(value, 0xFFFFFFFF)))


def _sequential_access(lu: TapeUnit) -> bytes:
    cart = lu.cartridge if lu.loaded else None
    cap = cart.capacity if cart is not None else 0
    used = cart.data_end if cart is not None else 0
    ew = lu.early_warning(cap) if cart is not None else 0
    return b"".join(
        (
            parameter(0x0000, _u64(lu.bytes_from_host), 0x00),
            parameter(0x0001, _u64(lu.bytes_written), 0x00),
            parameter(0x0002, _u64(lu.bytes_read), 0x00),
            parameter(0x0003, _u64(lu.bytes_to_host), 0x00),
            parameter(0x0004, _u32(used // MIB), 0x00),  # native capacity BOP to EOD
            parameter(0x0005, _u32(ew // MIB), 0x00),  # native capacity BOP to early warning
            parameter(0x0006, _u32((cap - ew) // MIB), 0x00),  # early warning to EOP
            parameter(0x0007, _u32(used // MIB), 0x00),  # BOP to current position (upper bound)
            parameter(0x0008, _u32(0), 0x00),  # native capacity in the object buffer
            parameter(0x0100, _u64(0), 0x00),  # cleaning required: no
        )
    )


def _tape_alert(lu: TapeUnit) -> bytes:
    return b"".join(parameter(code, b"\x00") for code in range(1, 0x41))


def _tape_capacity(lu: TapeUnit) -> bytes:
    cart = lu.cartridge if lu.loaded else None
    cap = cart.capacity if cart is not None else 0
    used = cart.data_end if cart is not None else 0
    return b"".join(
        (
            parameter(0x0001, _u32((cap - used) // MIB)),  # remaining capacity, partition 0
            parameter(0x0002, _u32(0)),  # remaining capacity, partition 1
            parameter(0x0003, _u32(cap // MIB)),  # maximum capacity, partition 0
            parameter(0x0004, _u32(0)),  # maximum capacity, partition 1
        )
    )


TAPE_LOG_PAGES = {0x0C: _sequential_access, 0x2E: _tape_alert, 0x31: _tape_capacity}
