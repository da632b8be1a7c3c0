"""Block commands (SBC-3): READ/WRITE 6/10/12/16, VERIFY, WRITE AND VERIFY, PRE-FETCH,
SYNCHRONIZE CACHE, READ CAPACITY 10/16, START STOP UNIT, PREVENT ALLOW MEDIUM REMOVAL and WRITE SAME 10/16
(UNMAP and GET LBA STATUS live in thin.py).

The READ/WRITE path is the hot path: one precompiled ``struct`` decode, one range check, one exactly
sized ``bytearray`` per read filled in place by the store, a ``memoryview`` slice of the data-out buffer
per write.  No protection information is supported, so RDPROTECT/WRPROTECT/VRPROTECT are rejected by the
CDB usage masks (INVALID FIELD IN CDB).
"""

from __future__ import annotations

import struct
from collections.abc import Coroutine
from typing import Any, Final

from .lu import MAX_WRITE_SAME_BLOCKS, LogicalUnit
from .rangelock import Token
from .sense import (
    INVALID_FIELD_IN_COMMAND_IU,
    LBA_OUT_OF_RANGE,
    MEDIUM_REMOVAL_PREVENTED,
    MISCOMPARE_DURING_VERIFY,
    UNRECOVERED_READ_ERROR,
    WRITE_ERROR,
    CheckCondition,
    SenseKey,
    invalid_field,
)
from .task import ScsiResult, ScsiTask

# bound unpack_from methods: compiled, a method called by name is looked up on every call
_UNPACK_RW6: Final = struct.Struct(">BHB").unpack_from  # from byte 1: LBA(20..16), LBA(15..0), LENGTH
_UNPACK_RW10: Final = struct.Struct(">BIxH").unpack_from  # from byte 1: flags, LBA, (group), TRANSFER LENGTH
_UNPACK_RW12: Final = struct.Struct(">BII").unpack_from  # from byte 1: flags, LBA, TRANSFER LENGTH
_UNPACK_RW16: Final = struct.Struct(">BQI").unpack_from  # from byte 1: flags, LBA, TRANSFER LENGTH
_RC10: Final = struct.Struct(">II")
_RC16: Final = struct.Struct(">QIBB")

_FUA: Final = 0x08
_GOOD = ScsiResult  # alias for readability


def _lba_oob() -> CheckCondition:
    return CheckCondition(SenseKey.ILLEGAL_REQUEST, LBA_OUT_OF_RANGE)


def _check_range(lu: LogicalUnit, lba: int, n: int, len_byte: int) -> None:
    if lba + n > lu.num_blocks:
        raise _lba_oob()
    if n > lu.max_transfer_blocks:
        raise invalid_field(len_byte)


# -- READ --------------------------------------------------------------------------------------
# READ(n) decodes its CDB and answers at once when the store has the bytes at hand (the file store's inline
# and page-cache reads): no coroutine is made for such a read.  Otherwise it hands back the coroutine that waits for the store.


def _read(lu: LogicalUnit, lba: int, n: int, len_byte: int) -> ScsiResult | Coroutine[Any, Any, ScsiResult]:
    _check_range(lu, lba, n, len_byte)
    bs = lu.block_size
    nbytes = n * bs
    if nbytes:
        try:
            # a fresh buffer the transport sends from, when the store has the bytes at hand
            data = lu.store.read_now(lba * bs, nbytes)
        except OSError:
            raise CheckCondition(SenseKey.MEDIUM_ERROR, UNRECOVERED_READ_ERROR, information=lba) from None
        if data is not None:
            return ScsiResult(data_in=data, transfer_length=nbytes)
    return _read_waiting(lu, lba, nbytes)


async def _read_waiting(lu: LogicalUnit, lba: int, nbytes: int) -> ScsiResult:
    """A read the store serves from its threads (a page-cache miss, a store without inline reads)."""
    try:
        data = await lu.store.read(lba * lu.block_size, nbytes)
    except OSError:
        raise CheckCondition(SenseKey.MEDIUM_ERROR, UNRECOVERED_READ_ERROR, information=lba) from None
    return ScsiResult(data_in=data, transfer_length=nbytes)


def read6(
    server: object, lu: LogicalUnit, task: ScsiTask, cdb: bytes
) -> ScsiResult | Coroutine[Any, Any, ScsiResult]:
    hi, lo, n = _UNPACK_RW6(cdb, 1)
    return _read(lu, (hi & 0x1F) << 16 | lo, n or 256, 4)


def read10(
    server: object, lu: LogicalUnit, task: ScsiTask, cdb: bytes
) -> ScsiResult | Coroutine[Any, Any, ScsiResult]:
    _, lba, n = _UNPACK_RW10(cdb, 1)
    return _read(lu, lba, n, 7)


def read12(
    server: object, lu: LogicalUnit, task: ScsiTask, cdb: bytes
) -> ScsiResult | Coroutine[Any, Any, ScsiResult]:
    _, lba, n = _UNPACK_RW12(cdb, 1)
    return _read(lu, lba, n, 6)


def read16(
    server: object, lu: LogicalUnit, task: ScsiTask, cdb: bytes
) -> ScsiResult | Coroutine[Any, Any, ScsiResult]:
    _, lba, n = _UNPACK_RW16(cdb, 1)
    return _read(lu, lba, n, 10)


# -- WRITE -------------------------------------------------------------------------------------


def _data_out(task: ScsiTask, nbytes: int) -> memoryview:
    data = task.data_out
    if data is None or len(data) < nbytes:
        # The initiator sent less than the CDB asks for (SPDTL > EDTL): transfer nothing.
        raise CheckCondition(SenseKey.ILLEGAL_REQUEST, INVALID_FIELD_IN_COMMAND_IU)
    mv = data if isinstance(data, memoryview) else memoryview(data)
    return mv if len(mv) == nbytes else mv[:nbytes]


def _received(task: ScsiTask, nbytes: int) -> bytes | bytearray | memoryview:
    """The data-out bytes to write: at most ``nbytes`` (the buffer as it is, or a view of its start).

    When the initiator sent less than the CDB asks for (SPDTL > EDTL, an iSCSI residual overflow) only
    what arrived is written and the command completes normally (FCP-4 / RFC 7143 11.4.5.2 option a);
    the transport reports the overflow from ``transfer_length``.
    """
    data = task.data_out
    if data is None:
        return b""
    if len(data) <= nbytes:
        return data
    return (data if isinstance(data, memoryview) else memoryview(data))[:nbytes]


def _write(
    lu: LogicalUnit, task: ScsiTask, lba: int, n: int, fua: bool, len_byte: int
) -> ScsiResult | Coroutine[Any, Any, ScsiResult]:
    """WRITE(n): answered at once when the range is free and the store takes the bytes without waiting
    (the file store's inline and page-cache writes), else the coroutine that waits for the range and the store."""
    lu.check_writable()
    _check_range(lu, lba, n, len_byte)
    nbytes = n * lu.block_size
    if not nbytes:
        return ScsiResult(transfer_length=0)
    mv = _received(task, nbytes)
    lock = lu.range_lock  # shared: only COMPARE AND WRITE and friends exclude (rangelock.py)
    token = lock.try_shared(lba, lba + n)
    if token is None:
        return _write_waiting(lu, lba, n, mv, fua, None)
    handed_on = False
    try:
        if not lu.write_blocks_now(lba, mv, fua):
            handed_on = True  # the coroutine releases the range
            return _write_waiting(lu, lba, n, mv, fua, token)
    finally:
        if not handed_on:
            lock.release(token)
    return ScsiResult(transfer_length=nbytes)


async def _write_waiting(
    lu: LogicalUnit, lba: int, n: int, mv: bytes | bytearray | memoryview, fua: bool, token: Token | None
) -> ScsiResult:
    """A write that waits: for its range (``token`` None: not taken yet) or for the store's threads."""
    lock = lu.range_lock
    if token is None:
        token = await lock.shared(lba, lba + n)
    try:
        await lu.write_blocks(lba, mv, fua)
    finally:
        lock.release(token)
    return ScsiResult(transfer_length=n * lu.block_size)


def write6(
    server: object, lu: LogicalUnit, task: ScsiTask, cdb: bytes
) -> ScsiResult | Coroutine[Any, Any, ScsiResult]:
    hi, lo, n = _UNPACK_RW6(cdb, 1)
    return _write(lu, task, (hi & 0x1F) << 16 | lo, n or 256, False, 4)


def write10(
    server: object, lu: LogicalUnit, task: ScsiTask, cdb: bytes
) -> ScsiResult | Coroutine[Any, Any, ScsiResult]:
    flags, lba, n = _UNPACK_RW10(cdb, 1)
    return _write(lu, task, lba, n, bool(flags & _FUA), 7)


def write12(
    server: object, lu: LogicalUnit, task: ScsiTask, cdb: bytes
) -> ScsiResult | Coroutine[Any, Any, ScsiResult]:
    flags, lba, n = _UNPACK_RW12(cdb, 1)
    return _write(lu, task, lba, n, bool(flags & _FUA), 6)


def write16(
    server: object, lu: LogicalUnit, task: ScsiTask, cdb: bytes
) -> ScsiResult | Coroutine[Any, Any, ScsiResult]:
    flags, lba, n = _UNPACK_RW16(cdb, 1)
    return _write(lu, task, lba, n, bool(flags & _FUA), 10)


# -- WRITE AND VERIFY --------------------------------------------------------------------------


def write_verify10(
    server: object, lu: LogicalUnit, task: ScsiTask, cdb: bytes
) -> ScsiResult | Coroutine[Any, Any, ScsiResult]:
    _, lba, n = _UNPACK_RW10(cdb, 1)
    return _write(lu, task, lba, n, True, 7)


def write_verify12(
    server: object, lu: LogicalUnit, task: ScsiTask, cdb: bytes
) -> ScsiResult | Coroutine[Any, Any, ScsiResult]:
    _, lba, n = _UNPACK_RW12(cdb, 1)
    return _write(lu, task, lba, n, True, 6)


def write_verify16(
    server: object, lu: LogicalUnit, task: ScsiTask, cdb: bytes
) -> ScsiResult | Coroutine[Any, Any, ScsiResult]:
    _, lba, n = _UNPACK_RW16(cdb, 1)
    return _write(lu, task, lba, n, True, 10)


# -- VERIFY ------------------------------------------------------------------------------------


def _first_difference(a: memoryview, b: memoryview) -> int:
    step = 4096
    for off in range(0, len(a), step):
        if a[off : off + step] != b[off : off + step]:
            for i in range(off, min(off + step, len(a))):
                if a[i] != b[i]:
                    return i
    return -1


async def _verify(lu: LogicalUnit, task: ScsiTask, flags: int, lba: int, n: int, len_byte: int) -> ScsiResult:
    bytchk = (flags >> 1) & 0x03
    if bytchk == 0x02:
        raise invalid_field(1, 2)
    _check_range(lu, lba, n, len_byte)
    bs = lu.block_size
    if bytchk == 0 or n == 0:
        return ScsiResult(transfer_length=0 if bytchk == 0 else n * bs)
    expected_len = n * bs if bytchk == 0x01 else bs
    expected = _data_out(task, expected_len)
    medium = memoryview(bytearray(n * bs))
    try:
        await lu.store.read_into(lba * bs, medium)
    except OSError:
        raise CheckCondition(SenseKey.MEDIUM_ERROR, UNRECOVERED_READ_ERROR, information=lba) from None
    if bytchk == 0x01:
        offset = _first_difference(medium, expected)
    else:  # 11b: the single data-out block is compared with every block
        offset = -1
        for i in range(n):
            rel = _first_difference(medium[i * bs : (i + 1) * bs], expected)
            if rel >= 0:
                offset = i * bs + rel
                break
    if offset >= 0:
        raise CheckCondition(SenseKey.MISCOMPARE, MISCOMPARE_DURING_VERIFY, information=offset)
    return ScsiResult(transfer_length=expected_len)


async def verify10(server: object, lu: LogicalUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    flags, lba, n = _UNPACK_RW10(cdb, 1)
    return await _verify(lu, task, flags, lba, n, 7)


async def verify12(server: object, lu: LogicalUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    flags, lba, n = _UNPACK_RW12(cdb, 1)
    return await _verify(lu, task, flags, lba, n, 6)


async def verify16(server: object, lu: LogicalUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    flags, lba, n = _UNPACK_RW16(cdb, 1)
    return await _verify(lu, task, flags, lba, n, 10)


# -- PRE-FETCH / SYNCHRONIZE CACHE -------------------------------------------------------------


async def prefetch10(server: object, lu: LogicalUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    _, lba, n = _UNPACK_RW10(cdb, 1)
    if lba + n > lu.num_blocks:
        raise _lba_oob()
    # There is no cache to load the blocks into, so GOOD (not CONDITION MET), SBC-3 5.9.
    return ScsiResult(transfer_length=0)


async def prefetch16(server: object, lu: LogicalUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    _, lba, n = _UNPACK_RW16(cdb, 1)
    if lba + n > lu.num_blocks:
        raise _lba_oob()
    return ScsiResult(transfer_length=0)


async def _sync(lu: LogicalUnit, lba: int, n: int) -> ScsiResult:
    if lba + n > lu.num_blocks:
        raise _lba_oob()
    try:
        await lu.store.flush()
    except OSError:
        raise CheckCondition(SenseKey.MEDIUM_ERROR, WRITE_ERROR) from None
    return ScsiResult(transfer_length=0)


async def sync_cache10(server: object, lu: LogicalUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    _, lba, n = _UNPACK_RW10(cdb, 1)
    return await _sync(lu, lba, n)


async def sync_cache16(server: object, lu: LogicalUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    _, lba, n = _UNPACK_RW16(cdb, 1)
    return await _sync(lu, lba, n)


# -- READ CAPACITY -----------------------------------------------------------------------------


async def read_capacity10(server: object, lu: LogicalUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    (lba,) = struct.unpack_from(">I", cdb, 2)
    if lba and not cdb[8] & 0x01:
        raise invalid_field(2)
    last = lu.num_blocks - 1
    data = _RC10.pack(last if last < 0xFFFFFFFF else 0xFFFFFFFF, lu.block_size)
    return ScsiResult(data_in=data, transfer_length=8)


async def read_capacity16(server: object, lu: LogicalUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    (lba, alloc) = struct.unpack_from(">QI", cdb, 2)
    if lba and not cdb[14] & 0x01:
        raise invalid_field(2)
    lbp = (0x80 | 0x40) if lu.thin else 0  # LBPME, LBPRZ
    data = _RC16.pack(max(lu.num_blocks - 1, 0), lu.block_size, 0, 0) + bytes((lbp, 0)) + bytes(16)
    return ScsiResult(data_in=data[:alloc], transfer_length=alloc)


# -- START STOP UNIT / PREVENT ALLOW MEDIUM REMOVAL -------------------------------------------


async def start_stop_unit(server: object, lu: LogicalUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    power_condition = cdb[4] >> 4
    no_flush, loej, start = cdb[4] & 0x04, cdb[4] & 0x02, cdb[4] & 0x01
    if power_condition:
        # A power condition transition: START and LOEJ are ignored (SBC-3 5.25); we have no power
        # states to change, so nothing happens.
        return ScsiResult(transfer_length=0)
    if not start and not no_flush and lu.medium_present:
        try:
            await lu.store.flush()
        except OSError:
            raise CheckCondition(SenseKey.MEDIUM_ERROR, WRITE_ERROR) from None
    if loej and lu.removable:
        if lu.prevent:  # neither eject nor load while PREVENT ALLOW MEDIUM REMOVAL holds it
            raise CheckCondition(SenseKey.ILLEGAL_REQUEST, MEDIUM_REMOVAL_PREVENTED)
        lu.medium_present = bool(start)
    return ScsiResult(transfer_length=0)


# -- WRITE SAME / UNMAP / GET LBA STATUS -------------------------------------------------------


async def _write_same(
    lu: LogicalUnit, task: ScsiTask, flags: int, lba: int, n: int, len_byte: int, ndob: bool
) -> ScsiResult:
    lu.check_writable()
    if lba > lu.num_blocks:
        raise _lba_oob()
    if n == 0:  # WSNZ=0 in the Block Limits page: zero blocks means up to the end of the medium
        n = lu.num_blocks - lba
    if lba + n > lu.num_blocks:
        raise _lba_oob()
    if n > MAX_WRITE_SAME_BLOCKS:
        raise invalid_field(len_byte)
    bs = lu.block_size
    if ndob:
        block = bytes(bs)
        transfer = 0
    else:
        if task.data_out is not None and len(task.data_out) > bs:  # exactly one block of Data-Out
            raise invalid_field(len_byte)
        block = bytes(_data_out(task, bs))
        transfer = bs
    unmap = bool(flags & 0x08)
    if unmap and not lu.thin:  # LBPWS/LBPWS10 are not set on a fully provisioned LU
        raise invalid_field(1, 3)
    lock = lu.range_lock
    token = lock.try_shared(lba, lba + n)
    if token is None:
        token = await lock.shared(lba, lba + n)
    try:
        if unmap and lu.thin:  # the device server unmaps; LBPRZ=1: the blocks read back as zero
            await lu.store.unmap(lba * bs, n * bs)
        else:
            per_chunk = max(1, (1 << 20) // bs)
            chunk = block * min(per_chunk, n)
            done = 0
            while done < n:
                count = min(per_chunk, n - done)
                await lu.store.write((lba + done) * bs, memoryview(chunk)[: count * bs])
                done += count
        if not lu.wce:
            await lu.store.flush()
    except OSError:
        raise CheckCondition(SenseKey.MEDIUM_ERROR, WRITE_ERROR, information=lba) from None
    finally:
        lock.release(token)
    return ScsiResult(transfer_length=transfer)


async def write_same10(server: object, lu: LogicalUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    flags, lba, n = _UNPACK_RW10(cdb, 1)
    return await _write_same(lu, task, flags, lba, n, 7, False)


async def write_same16(server: object, lu: LogicalUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    flags, lba, n = _UNPACK_RW16(cdb, 1)
    return await _write_same(lu, task, flags, lba, n, 10, bool(flags & 0x01))
