"""WRITE ATOMIC(16) (SBC-4 5.48, 4.29 atomic writes) and its Block Limits VPD limits.

An atomic write is all-or-nothing towards every other command: it holds its LBA range exclusively
(:mod:`.rangelock`) and goes to the store as one write call, so no reader or writer of the LU can see or
make a mix of old and new blocks.  Limits reported in VPD 0xB0 (SBC-4 6.6.4): MAXIMUM ATOMIC TRANSFER
LENGTH (:func:`max_atomic_blocks`), ATOMIC ALIGNMENT 0 and ATOMIC TRANSFER LENGTH GRANULARITY 0 (no
requirement), no atomic boundaries (so the ATOMIC BOUNDARY field must be zero: the CDB usage mask rejects
anything else).  What is not promised: atomicity across a power loss in the middle of the store's write.
"""

from __future__ import annotations

import struct

from .lu import LogicalUnit
from .sense import (
    INVALID_FIELD_IN_COMMAND_IU,
    LBA_OUT_OF_RANGE,
    CheckCondition,
    SenseKey,
    invalid_field,
)
from .task import ScsiResult, ScsiTask

MAX_ATOMIC_TRANSFER_BYTES = 4 * 1024 * 1024
ATOMIC_ALIGNMENT = 0
ATOMIC_TRANSFER_LENGTH_GRANULARITY = 0

_WA16 = struct.Struct(">BQ2xH")  # from byte 1: flags, LBA, (ATOMIC BOUNDARY), TRANSFER LENGTH
_FUA = 0x08


def max_atomic_blocks(lu: LogicalUnit) -> int:
    """MAXIMUM ATOMIC TRANSFER LENGTH in blocks (never above MAXIMUM TRANSFER LENGTH)."""
    return min(lu.max_transfer_blocks, max(1, MAX_ATOMIC_TRANSFER_BYTES // lu.block_size))


async def write_atomic16(server: object, lu: LogicalUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    flags, lba, n = _WA16.unpack_from(cdb, 1)
    lu.check_writable()
    if lba + n > lu.num_blocks:
        raise CheckCondition(SenseKey.ILLEGAL_REQUEST, LBA_OUT_OF_RANGE)
    if n > max_atomic_blocks(lu):
        raise invalid_field(12)
    bs = lu.block_size
    nbytes = n * bs
    if nbytes == 0:
        return ScsiResult(transfer_length=0)
    data = task.data_out
    if data is None or len(data) < nbytes:  # a partial atomic write is not an atomic write
        raise CheckCondition(SenseKey.ILLEGAL_REQUEST, INVALID_FIELD_IN_COMMAND_IU)
    mv = memoryview(data)[:nbytes]
    lock = lu.range_lock
    token = await lock.exclusive(lba, lba + n)
    try:
        await lu.write_blocks(lba, mv, bool(flags & _FUA))
    finally:
        lock.release(token)
    return ScsiResult(transfer_length=nbytes)
