"""COMPARE AND WRITE (SBC-3 5.2): the atomic test-and-set VMware calls ATS.

The Data-Out buffer holds 2 x NUMBER OF LOGICAL BLOCKS blocks: the verify instance, then the write
instance.  Under an exclusive hold of the LBA range (:mod:`.rangelock`) the blocks are read and compared
with the verify instance; on the first differing byte the command ends with MISCOMPARE / MISCOMPARE
DURING VERIFY OPERATION (1D/00) and the INFORMATION field (VALID=1) set to that byte's offset from the
start of the Data-Out buffer, and nothing is written.  Otherwise the write instance is written before the
range is released, so no other writer to those blocks can come between the compare and the write.
NUMBER OF LOGICAL BLOCKS above MAXIMUM COMPARE AND WRITE LENGTH (VPD 0xB0) is INVALID FIELD IN CDB.
"""

from __future__ import annotations

import struct

from .lu import LogicalUnit
from .sense import (
    LBA_OUT_OF_RANGE,
    MISCOMPARE_DURING_VERIFY,
    UNRECOVERED_READ_ERROR,
    CheckCondition,
    SenseKey,
    invalid_field,
)
from .task import ScsiResult, ScsiTask

MAX_COMPARE_AND_WRITE_BLOCKS = 255  # VPD 0xB0 MAXIMUM COMPARE AND WRITE LENGTH (a one-byte field)

_CAW = struct.Struct(">BQ3xB")  # from byte 1: flags, LBA, (reserved), NUMBER OF LOGICAL BLOCKS
_FUA = 0x08


def first_difference(a: memoryview, b: memoryview) -> int:
    """Offset of the first byte where ``a`` and ``b`` (same length) differ, or -1."""
    if a == b:
        return -1
    lo, hi = 0, len(a)
    while hi - lo > 64:  # bisect on slice equality (C speed), then scan the last few bytes
        mid = (lo + hi) // 2
        if a[lo:mid] != b[lo:mid]:
            hi = mid
        else:
            lo = mid
    for i in range(lo, hi):
        if a[i] != b[i]:
            return i
    return -1


async def compare_and_write(server: object, lu: LogicalUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    flags, lba, n = _CAW.unpack_from(cdb, 1)
    lu.check_writable()
    bs = lu.block_size
    nbytes = 2 * n * bs
    data = task.data_out
    received = 0 if data is None else len(data)
    if lba + n > lu.num_blocks:
        raise CheckCondition(SenseKey.ILLEGAL_REQUEST, LBA_OUT_OF_RANGE)
    if n > MAX_COMPARE_AND_WRITE_BLOCKS or received != nbytes:
        # Too many blocks, or a Data-Out buffer that is not exactly 2 x N blocks (the CDB and the
        # transport's expected length disagree): nothing is compared or written.
        raise invalid_field(13)
    if n == 0:
        return ScsiResult(transfer_length=0)
    assert data is not None
    mv = data if isinstance(data, memoryview) else memoryview(data)
    verify, write = mv[: n * bs], mv[n * bs : nbytes]
    medium = memoryview(bytearray(n * bs))
    lock = lu.range_lock
    token = await lock.exclusive(lba, lba + n)
    try:
        try:
            await lu.store.read_into(lba * bs, medium)
        except OSError:
            raise CheckCondition(SenseKey.MEDIUM_ERROR, UNRECOVERED_READ_ERROR, information=lba) from None
        offset = first_difference(medium, verify)
        if offset >= 0:
            raise CheckCondition(SenseKey.MISCOMPARE, MISCOMPARE_DURING_VERIFY, information=offset)
        await lu.write_blocks(lba, write, bool(flags & _FUA))
    finally:
        lock.release(token)
    return ScsiResult(transfer_length=nbytes)
