"""ORWRITE(16) (SBC-3 5.8): OR the Data-Out buffer into the logical blocks on the medium.

The read, the OR and the write happen under an exclusive hold of the LBA range (:mod:`.rangelock`), so
two ORWRITEs (or an ORWRITE and a WRITE) to the same blocks cannot lose each other's bits.  ORPROTECT
is not supported (no protection information): a non-zero value is rejected by the CDB usage mask.
"""

from __future__ import annotations

import struct

from .lu import LogicalUnit
from .sense import (
    INVALID_FIELD_IN_COMMAND_IU,
    LBA_OUT_OF_RANGE,
    UNRECOVERED_READ_ERROR,
    CheckCondition,
    SenseKey,
    invalid_field,
)
from .task import ScsiResult, ScsiTask

_ORW16 = struct.Struct(">BQI")  # from byte 1: flags, LBA, TRANSFER LENGTH
_FUA = 0x08


async def orwrite16(server: object, lu: LogicalUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    flags, lba, n = _ORW16.unpack_from(cdb, 1)
    lu.check_writable()
    if lba + n > lu.num_blocks:
        raise CheckCondition(SenseKey.ILLEGAL_REQUEST, LBA_OUT_OF_RANGE)
    if n > lu.max_transfer_blocks:
        raise invalid_field(10)
    bs = lu.block_size
    nbytes = n * bs
    if nbytes == 0:
        return ScsiResult(transfer_length=0)
    data = task.data_out
    if data is None or len(data) < nbytes:
        raise CheckCondition(SenseKey.ILLEGAL_REQUEST, INVALID_FIELD_IN_COMMAND_IU)
    mask = int.from_bytes(memoryview(data)[:nbytes], "big")
    medium = memoryview(bytearray(nbytes))
    lock = lu.range_lock
    token = await lock.exclusive(lba, lba + n)
    try:
        try:
            await lu.store.read_into(lba * bs, medium)
        except OSError:
            raise CheckCondition(SenseKey.MEDIUM_ERROR, UNRECOVERED_READ_ERROR, information=lba) from None
        merged = (int.from_bytes(medium, "big") | mask).to_bytes(nbytes, "big")
        await lu.write_blocks(lba, merged, bool(flags & _FUA))
    finally:
        lock.release(token)
    return ScsiResult(transfer_length=nbytes)
