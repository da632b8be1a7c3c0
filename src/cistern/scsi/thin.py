"""Logical block provisioning (SBC-3 4.7): UNMAP (5.28), GET LBA STATUS (5.16), the provisioning fields
of the Block Limits (6.6.4) and Logical Block Provisioning (6.6.5) VPD pages, and the soft threshold.

A thin LU (``LogicalUnit.thin``) reports LBPME/LBPRZ in READ CAPACITY(16), LBPU, LBPWS, LBPWS10 and
LBPRZ with PROVISIONING TYPE 010b (thin) in VPD page 0xB2, and accepts UNMAP and WRITE SAME with UNMAP.
Unmapped blocks read back as zeroes (LBPRZ); whether a block is mapped is the store's answer
(``BackingStore.extents``: the file's holes, the RAM store's page map), reported per logical block.
Anchored blocks are not supported (ANC_SUP 0), so the UNMAP ANCHOR bit is INVALID FIELD IN CDB.

The soft threshold (SBC-3 4.7.3.7) is a percentage of the LU's capacity: when the store's physically
allocated space crosses it upward, every I_T nexus gets THIN PROVISIONING SOFT THRESHOLD REACHED
(38/07) once; falling back below re-arms it.
"""

from __future__ import annotations

import struct

from .lu import MAX_UNMAP_BLOCKS, MAX_UNMAP_DESCRIPTORS, LogicalUnit
from .sense import (
    LBA_OUT_OF_RANGE,
    PARAMETER_LIST_LENGTH_ERROR,
    WRITE_ERROR,
    CheckCondition,
    SenseKey,
    invalid_param,
)
from .task import ScsiResult, ScsiTask

THIN_PROVISIONING_SOFT_THRESHOLD_REACHED = (0x38, 0x07)

PROVISIONING_TYPE_THIN = 0x02
LBPU, LBPWS, LBPWS10, LBPRZ, ANC_SUP = 0x80, 0x40, 0x20, 0x04, 0x02
STATUS_MAPPED, STATUS_DEALLOCATED = 0, 1

MAX_LBA_STATUS_DESCRIPTORS = 512
_UNMAP_HEADER = 8
_UNMAP_DESC = struct.Struct(">QI4x")  # UNMAP block descriptor: LBA, NUMBER OF LOGICAL BLOCKS
_LBA_STATUS_HEADER = struct.Struct(">I4x")  # PARAMETER DATA LENGTH
_LBA_STATUS_DESC = struct.Struct(">QIB3x")  # LBA, NUMBER OF LOGICAL BLOCKS, PROVISIONING STATUS
_MAX_DESC_BLOCKS = 0xFFFFFFFF


def _lba_oob() -> CheckCondition:
    return CheckCondition(SenseKey.ILLEGAL_REQUEST, LBA_OUT_OF_RANGE)


# -- VPD fields ----------------------------------------------------------------------------------


def unmap_granularity(lu: LogicalUnit) -> int:
    """OPTIMAL UNMAP GRANULARITY in logical blocks: the store's allocation unit (a filesystem block, a
    RAM page), below which an unmap zeroes the blocks but frees nothing."""
    return max(1, lu.store.allocation_unit // lu.block_size)


def block_limits_fields(lu: LogicalUnit) -> tuple[int, int, int, int]:
    """(MAXIMUM UNMAP LBA COUNT, MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT, OPTIMAL UNMAP GRANULARITY,
    UGAVALID | UNMAP GRANULARITY ALIGNMENT) of the Block Limits VPD page; zeroes on a thick LU."""
    if not lu.thin:
        return 0, 0, 0, 0
    return MAX_UNMAP_BLOCKS, MAX_UNMAP_DESCRIPTORS, unmap_granularity(lu), 0x80000000  # aligned at LBA 0


def lbp_page_body(lu: LogicalUnit) -> bytes:
    """The Logical Block Provisioning VPD page (0xB2) after its 4-byte header (SBC-3 6.6.5)."""
    return bytes((0, LBPU | LBPWS | LBPWS10 | LBPRZ, PROVISIONING_TYPE_THIN, 0))


# -- soft threshold ------------------------------------------------------------------------------


async def check_soft_threshold(lu: LogicalUnit) -> bool:
    """Compare the store's allocated space with the LU's soft threshold; establish 38/07 for every
    I_T nexus on an upward crossing.  Returns True when the unit attention was established now."""
    percent = lu.soft_threshold
    if not lu.thin or percent is None:
        return False
    used = await lu.store.allocated_bytes()
    if used is None:
        return False
    capacity = lu.num_blocks * lu.block_size
    above = capacity > 0 and used * 100 >= percent * capacity
    if above and not lu.soft_threshold_reached:
        lu.soft_threshold_reached = True
        lu.establish_ua_all(THIN_PROVISIONING_SOFT_THRESHOLD_REACHED)
        return True
    if not above:
        lu.soft_threshold_reached = False  # re-armed (SBC-3 4.7.3.7: an armed increasing threshold)
    return False


# -- UNMAP ---------------------------------------------------------------------------------------


def parse_unmap_parameters(lu: LogicalUnit, data: bytes, length: int) -> list[tuple[int, int]]:
    """Validate an UNMAP parameter list (SBC-3 5.28.2) and return its (LBA, blocks) ranges.

    Every descriptor is checked before any block is touched, so a rejected command changes nothing.
    """
    if length < _UNMAP_HEADER or len(data) < _UNMAP_HEADER:
        raise CheckCondition(SenseKey.ILLEGAL_REQUEST, PARAMETER_LIST_LENGTH_ERROR)
    (bd_len,) = struct.unpack_from(">H", data, 2)
    # A descriptor data length beyond the list, or not a multiple of 16: the incomplete tail is ignored.
    count = min(bd_len, len(data) - _UNMAP_HEADER) // _UNMAP_DESC.size
    if count > MAX_UNMAP_DESCRIPTORS:
        raise invalid_param(2)  # more descriptors than MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT
    ranges: list[tuple[int, int]] = []
    total = 0
    for i in range(count):
        off = _UNMAP_HEADER + i * _UNMAP_DESC.size
        lba, n = _UNMAP_DESC.unpack_from(data, off)
        total += n
        if total > MAX_UNMAP_BLOCKS:
            raise invalid_param(off + 8)  # more blocks than MAXIMUM UNMAP LBA COUNT
        if lba + n > lu.num_blocks:
            raise _lba_oob()
        if n:
            ranges.append((lba, n))
    return ranges


async def unmap(server: object, lu: LogicalUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    """UNMAP (SBC-3 5.28)."""
    lu.check_writable()
    (length,) = struct.unpack_from(">H", cdb, 7)
    if length == 0:  # nothing to transfer and nothing to do: not an error
        return ScsiResult(transfer_length=0)
    raw = task.data_out
    data = bytes(raw[:length]) if raw is not None else b""
    ranges = parse_unmap_parameters(lu, data, length)
    bs = lu.block_size
    try:
        for lba, n in ranges:
            token = await lu.range_lock.shared(lba, lba + n)  # excluded by COMPARE AND WRITE (caw.py)
            try:
                await lu.store.unmap(lba * bs, n * bs)
            finally:
                lu.range_lock.release(token)
    except OSError:
        raise CheckCondition(SenseKey.MEDIUM_ERROR, WRITE_ERROR) from None
    return ScsiResult(transfer_length=length)


# -- GET LBA STATUS ------------------------------------------------------------------------------


async def lba_status(lu: LogicalUnit, lba: int, max_descriptors: int) -> list[tuple[int, int, int]]:
    """(LBA, NUMBER OF LOGICAL BLOCKS, PROVISIONING STATUS) runs from ``lba`` on, at most
    ``max_descriptors`` of them (the last one may stop before the end of the LU)."""
    bs = lu.block_size
    start = lba * bs
    extents = await lu.store.extents(start, lu.num_blocks * bs - start, max_descriptors)
    out: list[tuple[int, int, int]] = []
    blk = lba
    for e in extents:
        # A block that is partly mapped is mapped: mapped extents round outward, holes inward.
        end = -(-e.end // bs) if e.mapped else e.end // bs
        status = STATUS_MAPPED if e.mapped else STATUS_DEALLOCATED
        while end > blk:
            n = min(end - blk, _MAX_DESC_BLOCKS)
            if (
                out
                and out[-1][2] == status
                and out[-1][0] + out[-1][1] == blk
                and out[-1][1] + n <= _MAX_DESC_BLOCKS
            ):
                prev = out.pop()
                out.append((prev[0], prev[1] + n, status))
            else:
                out.append((blk, n, status))
            blk += n
    return out[:max_descriptors]


async def get_lba_status(server: object, lu: LogicalUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    """GET LBA STATUS (SBC-3 5.16): the first descriptor starts at STARTING LOGICAL BLOCK ADDRESS."""
    lba, alloc = struct.unpack_from(">QI", cdb, 2)
    if lba >= lu.num_blocks:
        raise _lba_oob()
    fit = (alloc - _LBA_STATUS_HEADER.size) // _LBA_STATUS_DESC.size
    want = max(1, min(fit, MAX_LBA_STATUS_DESCRIPTORS))
    try:
        runs = await lba_status(lu, lba, want)
    except OSError:
        runs = [(lba, min(lu.num_blocks - lba, _MAX_DESC_BLOCKS), STATUS_MAPPED)]
    body = b"".join(_LBA_STATUS_DESC.pack(*run) for run in runs)
    data = _LBA_STATUS_HEADER.pack(4 + len(body)) + body
    return ScsiResult(data_in=data[:alloc], transfer_length=alloc)
