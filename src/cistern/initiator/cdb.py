"""CDB builders for the commands the initiator's helpers issue (SPC-4, SBC-3).

Each function returns the CDB bytes; the READ/WRITE builders pick the 6-, 10- or 16-byte form from the
LBA and the transfer length, the smallest one that can express them (SBC-3 5.x: READ(6) covers LBAs below
2**21 and 1..256 blocks, READ(10) LBAs below 2**32 and up to 65535 blocks).
"""

from __future__ import annotations

import struct

# Operation codes
TEST_UNIT_READY = 0x00
READ_6 = 0x08
WRITE_6 = 0x0A
INQUIRY = 0x12
READ_CAPACITY_10 = 0x25
READ_10 = 0x28
WRITE_10 = 0x2A
VERIFY_10 = 0x2F
SYNCHRONIZE_CACHE_10 = 0x35
WRITE_SAME_10 = 0x41
UNMAP = 0x42
PERSISTENT_RESERVE_IN = 0x5E
PERSISTENT_RESERVE_OUT = 0x5F
READ_16 = 0x88
COMPARE_AND_WRITE = 0x89
WRITE_16 = 0x8A
VERIFY_16 = 0x8F
SYNCHRONIZE_CACHE_16 = 0x91
WRITE_SAME_16 = 0x93
SERVICE_ACTION_IN_16 = 0x9E
READ_CAPACITY_16_SA = 0x10
GET_LBA_STATUS_SA = 0x12
REPORT_LUNS = 0xA0

_U16 = 0xFFFF
_U32 = 0xFFFFFFFF


def test_unit_ready() -> bytes:
    return bytes(6)


def inquiry(vpd_page: int | None = None, allocation_length: int = 255) -> bytes:
    evpd = 1 if vpd_page is not None else 0
    return struct.pack(">BBBHB", INQUIRY, evpd, vpd_page or 0, allocation_length, 0)


def report_luns(allocation_length: int = 4096, select_report: int = 0) -> bytes:
    return struct.pack(">BxBxxxIxx", REPORT_LUNS, select_report, allocation_length)


def read_capacity_10() -> bytes:
    return bytes([READ_CAPACITY_10]) + bytes(9)


def read_capacity_16(allocation_length: int = 32) -> bytes:
    return struct.pack(">BBQIxx", SERVICE_ACTION_IN_16, READ_CAPACITY_16_SA, 0, allocation_length)


def get_lba_status(lba: int, allocation_length: int = 4096) -> bytes:
    """GET LBA STATUS (SBC-3 5.16): provisioning status of the extents starting at ``lba``."""
    return struct.pack(">BBQIxx", SERVICE_ACTION_IN_16, GET_LBA_STATUS_SA, lba, allocation_length)


def _rw(op6: int, op10: int, op16: int, lba: int, blocks: int, fua: bool) -> bytes:
    if lba < 0 or blocks < 0:
        raise ValueError("negative LBA or block count")
    if not fua and 0 < blocks <= 256 and lba < (1 << 21):
        return struct.pack(">BBHBB", op6, lba >> 16, lba & 0xFFFF, blocks & 0xFF, 0)
    flags = 0x08 if fua else 0
    if lba <= _U32 and blocks <= _U16:
        return struct.pack(">BBIxHx", op10, flags, lba, blocks)
    if blocks > _U32:
        raise ValueError(f"transfer of {blocks} blocks does not fit READ/WRITE(16)")
    return struct.pack(">BBQIxx", op16, flags, lba, blocks)


def read(lba: int, blocks: int, *, fua: bool = False) -> bytes:
    """READ(6), READ(10) or READ(16), the smallest that expresses ``lba`` and ``blocks``."""
    return _rw(READ_6, READ_10, READ_16, lba, blocks, fua)


def write(lba: int, blocks: int, *, fua: bool = False) -> bytes:
    """WRITE(6), WRITE(10) or WRITE(16), the smallest that expresses ``lba`` and ``blocks``."""
    return _rw(WRITE_6, WRITE_10, WRITE_16, lba, blocks, fua)


def verify(lba: int, blocks: int, *, bytchk: bool = False) -> bytes:
    flags = 0x02 if bytchk else 0
    if lba <= _U32 and blocks <= _U16:
        return struct.pack(">BBIxHx", VERIFY_10, flags, lba, blocks)
    return struct.pack(">BBQIxx", VERIFY_16, flags, lba, blocks)


def synchronize_cache(lba: int = 0, blocks: int = 0, *, immed: bool = False) -> bytes:
    flags = 0x02 if immed else 0
    if lba <= _U32 and blocks <= _U16:
        return struct.pack(">BBIxHx", SYNCHRONIZE_CACHE_10, flags, lba, blocks)
    return struct.pack(">BBQIxx", SYNCHRONIZE_CACHE_16, flags, lba, blocks)


def unmap(parameter_list_length: int) -> bytes:
    return struct.pack(">BxxxxxxHx", UNMAP, parameter_list_length)


def unmap_parameters(extents: list[tuple[int, int]]) -> bytes:
    """UNMAP parameter list (SBC-3 5.28.2): header + one 16-byte block descriptor per (lba, blocks)."""
    descriptors = b"".join(struct.pack(">QIxxxx", lba, blocks) for lba, blocks in extents)
    return struct.pack(">HHxxxx", 6 + len(descriptors), len(descriptors)) + descriptors


def write_same(lba: int, blocks: int, *, unmap: bool = False, ndob: bool = False) -> bytes:
    flags = (0x08 if unmap else 0) | (0x01 if ndob else 0)
    if not ndob and lba <= _U32 and blocks <= _U16:
        return struct.pack(">BBIxHx", WRITE_SAME_10, flags, lba, blocks)
    return struct.pack(">BBQIxx", WRITE_SAME_16, flags, lba, blocks)


def compare_and_write(lba: int, blocks: int, *, fua: bool = False) -> bytes:
    if not 0 < blocks <= 255:
        raise ValueError("COMPARE AND WRITE handles 1..255 blocks")
    return struct.pack(">BBQxxxBxx", COMPARE_AND_WRITE, 0x08 if fua else 0, lba, blocks)


def persistent_reserve_in(service_action: int, allocation_length: int = 4096) -> bytes:
    return struct.pack(">BB5xHx", PERSISTENT_RESERVE_IN, service_action & 0x1F, allocation_length)


def persistent_reserve_out(service_action: int, pr_type: int = 0, parameter_length: int = 24) -> bytes:
    return struct.pack(
        ">BBBxxIx", PERSISTENT_RESERVE_OUT, service_action & 0x1F, pr_type & 0x0F, parameter_length
    )


def persistent_reserve_out_parameters(
    key: int = 0, service_action_key: int = 0, *, aptpl: bool = False, all_tg_pt: bool = False
) -> bytes:
    """The basic 24-byte PERSISTENT RESERVE OUT parameter list (SPC-4 6.15.3)."""
    flags = (0x04 if all_tg_pt else 0) | (0x01 if aptpl else 0)
    return struct.pack(">QQ4xBxxx", key, service_action_key, flags)
