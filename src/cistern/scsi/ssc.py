"""Tape commands (SSC-3 / SSC-4) and the tape drive's command table.

Positions are logical object identifiers (blocks and filemarks both count, SSC-3 4.2.3); the cartridge
index makes every position lookup O(1) and SPACE over filemarks a binary search.  Sense for the stream
edges (SSC-3 4.2.7, 5.x):

- READ across a filemark: NO SENSE, FILEMARK, 00/01, INFORMATION = residue; position after it.
- READ/SPACE at end of data: BLANK CHECK, 00/05 END-OF-DATA DETECTED, INFORMATION = residue, at once.
- READ of a block shorter than asked (variable): NO SENSE, ILI, INFORMATION = residue (positive) unless
  SILI; longer: ILI with a negative residue and the data truncated.  Fixed mode: a block of another
  length ends the transfer with ILI; fixed mode with block length 0 is ILLEGAL REQUEST.
- SPACE backwards reaching BOP: NO SENSE, EOM, 00/04; over a filemark: FILEMARK, 00/01.
- WRITE past early warning: written, then NO SENSE, EOM, 00/02; beyond the medium: VOLUME OVERFLOW,
  EOM, 00/02, nothing written, INFORMATION = residue.
- LOCATE beyond end of data: BLANK CHECK 00/05, positioned at end of data.
- Writes to a write-protected cartridge: DATA PROTECT 27/00; overwriting on a WORM cartridge: DATA
  PROTECT 30/0C.  No cartridge (or unloaded): NOT READY 3A/00.
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from typing import TYPE_CHECKING

from ..storage.tape.cartridge import Cartridge, CorruptBlock, Record
from . import spc
from .mam import read_attribute, write_attribute
from .sense import (
    BEGINNING_OF_PARTITION_MEDIUM_DETECTED,
    END_OF_DATA_DETECTED,
    END_OF_PARTITION_MEDIUM_DETECTED,
    EOM,
    FILEMARK,
    FILEMARK_DETECTED,
    ILI,
    INVALID_FIELD_IN_COMMAND_IU,
    MEDIUM_REMOVAL_PREVENTED,
    NO_ADDITIONAL_SENSE,
    UNRECOVERED_READ_ERROR,
    WORM_OVERWRITE_ATTEMPTED,
    WRITE_ERROR,
    CheckCondition,
    SenseKey,
    build_sense,
    invalid_field,
)
from .spc_commands import LOG_SENSE, reservations, spc_core
from .table import CommandSpec, CommandTable
from .tape import DENSITY_CODE, MAX_BLOCK_LENGTH, MAX_FIXED_TRANSFER, run_io
from .task import ScsiResult, ScsiTask, Status

if TYPE_CHECKING:
    from .tape import TapeUnit

MAX_FILEMARKS = 1 << 16  # per WRITE FILEMARKS: bounded index write per command


def _len24(cdb: bytes, at: int) -> int:
    return int.from_bytes(cdb[at : at + 3], "big")


def _signed24(cdb: bytes, at: int) -> int:
    v = _len24(cdb, at)
    return v - (1 << 24) if v & 0x800000 else v


def _stream_result(
    lu: TapeUnit,
    key: int,
    asc: tuple[int, int],
    stream: int,
    information: int | None,
    data: bytes | bytearray | None = None,
    transfer_length: int | None = None,
) -> ScsiResult:
    sense = build_sense(key, asc, descriptor=lu.d_sense, information=information, stream=stream)
    return ScsiResult(Status.CHECK_CONDITION, sense=sense, data_in=data, transfer_length=transfer_length)


# -- READ(6) -------------------------------------------------------------------------------------


async def read6(server: object, lu: TapeUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    """READ(6) (SSC-3 6.4): variable (FIXED=0, length in bytes) or fixed (length in blocks)."""
    sili, fixed = bool(cdb[1] & 0x02), bool(cdb[1] & 0x01)
    length = _len24(cdb, 2)
    async with lu.lock:
        cart = lu.cart()
        if fixed:
            if sili:
                raise invalid_field(1, 1)
            if lu.block_length == 0:
                raise invalid_field(1, 0)
            if length * lu.block_length > MAX_FIXED_TRANSFER:
                raise invalid_field(2)
        elif length > MAX_BLOCK_LENGTH:
            raise invalid_field(2)
        if length == 0:
            return ScsiResult(transfer_length=0)
        await lu.sync()  # reading after writing: what was written is the end of data
        if fixed:
            return await _read_fixed(lu, cart, length)
        return await _read_variable(lu, cart, length, sili)


def _read_objects(
    cart: Cartridge, pos: int, count: int, block_length: int
) -> tuple[list[bytes], Record | None]:
    """Up to ``count`` blocks from ``pos`` while they are data blocks of ``block_length`` (0: any);
    returns the blocks and the first object that stopped the run (None: count reached or EOD)."""
    out: list[bytes] = []
    while len(out) < count and pos < cart.records:
        rec = cart.record(pos)
        if rec.is_filemark or (block_length and rec.length != block_length):
            return out, rec
        out.append(cart.read_block(rec))
        pos += 1
    return out, None


async def _read_variable(lu: TapeUnit, cart: Cartridge, length: int, sili: bool) -> ScsiResult:
    pos = lu.position
    if pos >= cart.records:
        return _stream_result(lu, SenseKey.BLANK_CHECK, END_OF_DATA_DETECTED, 0, length, None, length)
    try:
        rec = await run_io(cart.record, pos)
    except (CorruptBlock, OSError):
        raise CheckCondition(SenseKey.MEDIUM_ERROR, UNRECOVERED_READ_ERROR, information=length) from None
    if rec.is_filemark:
        lu.position = pos + 1
        return _stream_result(lu, SenseKey.NO_SENSE, FILEMARK_DETECTED, FILEMARK, length, None, length)
    try:
        data = await run_io(cart.read_block, rec, length)
    except (CorruptBlock, OSError):
        lu.position = pos + 1  # past the bad block, as a drive that gave up on it
        raise CheckCondition(SenseKey.MEDIUM_ERROR, UNRECOVERED_READ_ERROR, information=length) from None
    lu.position = pos + 1
    lu.bytes_read += rec.length
    lu.bytes_to_host += len(data)
    if rec.length == length or (sili and rec.length < length):
        return ScsiResult(data_in=data, transfer_length=length)
    residue = length - rec.length  # negative: the block was longer than asked
    return _stream_result(lu, SenseKey.NO_SENSE, NO_ADDITIONAL_SENSE, ILI, residue, data, length)


async def _read_fixed(lu: TapeUnit, cart: Cartridge, count: int) -> ScsiResult:
    bl = lu.block_length
    try:
        blocks, stop = await run_io(_read_objects, cart, lu.position, count, bl)
    except (CorruptBlock, OSError):
        raise CheckCondition(SenseKey.MEDIUM_ERROR, UNRECOVERED_READ_ERROR) from None
    data = b"".join(blocks)
    n = len(blocks)
    lu.position += n
    lu.bytes_read += len(data)
    lu.bytes_to_host += len(data)
    total = count * bl
    if n == count:
        return ScsiResult(data_in=data, transfer_length=total)
    residue = count - n
    if stop is None:  # end of data
        return _stream_result(lu, SenseKey.BLANK_CHECK, END_OF_DATA_DETECTED, 0, residue, data, total)
    lu.position += 1  # past the filemark or the incorrect-length block
    if stop.is_filemark:
        return _stream_result(lu, SenseKey.NO_SENSE, FILEMARK_DETECTED, FILEMARK, residue, data, total)
    return _stream_result(lu, SenseKey.NO_SENSE, NO_ADDITIONAL_SENSE, ILI, residue, data, total)


# -- WRITE(6), WRITE FILEMARKS, ERASE ------------------------------------------------------------


def _data(task: ScsiTask, nbytes: int) -> memoryview:
    data = task.data_out
    if data is None or len(data) < nbytes:
        raise CheckCondition(SenseKey.ILLEGAL_REQUEST, INVALID_FIELD_IN_COMMAND_IU)
    mv = data if isinstance(data, memoryview) else memoryview(data)
    return mv[:nbytes]


async def _prepare_write(lu: TapeUnit, cart: Cartridge) -> None:
    """Truncate at the position (overwrite) unless at end of data; WORM refuses overwrites."""
    if lu.position < cart.records:
        if cart.worm:
            raise CheckCondition(SenseKey.DATA_PROTECT, WORM_OVERWRITE_ATTEMPTED)
        try:
            await run_io(cart.truncate, lu.position)
        except OSError:
            raise CheckCondition(SenseKey.MEDIUM_ERROR, WRITE_ERROR) from None


async def write6(server: object, lu: TapeUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    """WRITE(6) (SSC-3 6.x): one variable block of ``length`` bytes, or ``length`` fixed blocks."""
    fixed = bool(cdb[1] & 0x01)
    length = _len24(cdb, 2)
    async with lu.lock:
        cart = lu.cart()
        if fixed:
            if lu.block_length == 0:
                raise invalid_field(1, 0)
            nbytes = length * lu.block_length
            if nbytes > MAX_FIXED_TRANSFER:
                raise invalid_field(2)
        else:
            if length > MAX_BLOCK_LENGTH:
                raise invalid_field(2)
            nbytes = length
        if length == 0:
            return ScsiResult(transfer_length=0)
        data = _data(task, nbytes)
        await _prepare_write(lu, cart)
        bl = lu.block_length if fixed else nbytes
        room = cart.capacity - cart.data_end
        fits = min(length if fixed else 1, room // bl)
        stored = 0
        try:
            if fits:
                stored = await run_io(cart.append_blocks, data[: fits * bl], bl, lu.dce)
        except OSError:
            raise CheckCondition(SenseKey.MEDIUM_ERROR, WRITE_ERROR, information=length) from None
        lu.position = cart.records
        lu.bytes_from_host += fits * bl
        lu.bytes_written += stored
        wanted = length if fixed else 1
        if fits < wanted:  # physical end of the medium: VOLUME OVERFLOW, the rest not written
            await lu.sync()
            residue = (length - fits) if fixed else length
            return _stream_result(
                lu, SenseKey.VOLUME_OVERFLOW, END_OF_PARTITION_MEDIUM_DETECTED, EOM, residue, None, nbytes
            )
        if cart.data_end > lu.early_warning(cart.capacity):
            await lu.sync()  # SEW: synchronize at early warning
            return _stream_result(
                lu, SenseKey.NO_SENSE, END_OF_PARTITION_MEDIUM_DETECTED, EOM, 0, None, nbytes
            )
        return ScsiResult(transfer_length=nbytes)


async def write_filemarks6(server: object, lu: TapeUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    """WRITE FILEMARKS(6) (SSC-3 6.x): ``count`` filemarks; IMMED=0 syncs everything first (count 0
    only syncs)."""
    immed = bool(cdb[1] & 0x01)
    count = _len24(cdb, 2)
    async with lu.lock:
        cart = lu.cart()
        if count:
            if count > MAX_FILEMARKS:
                raise invalid_field(2)
            await _prepare_write(lu, cart)
            try:
                await run_io(cart.append_filemarks, count)
            except OSError:
                raise CheckCondition(SenseKey.MEDIUM_ERROR, WRITE_ERROR) from None
            lu.position = cart.records
        if not immed:
            await lu.sync()
        return ScsiResult(transfer_length=0)


async def erase(server: object, lu: TapeUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    """ERASE(6) (SSC-3 6.x): short or long, both end the data at the current position (durable)."""
    async with lu.lock:
        cart = lu.cart()
        if lu.position < cart.records and cart.worm:
            raise CheckCondition(SenseKey.DATA_PROTECT, WORM_OVERWRITE_ATTEMPTED)
        try:
            await run_io(cart.truncate, lu.position)
        except OSError:
            raise CheckCondition(SenseKey.MEDIUM_ERROR, WRITE_ERROR) from None
        await lu.sync()
        return ScsiResult(transfer_length=0)


# -- positioning ---------------------------------------------------------------------------------


async def rewind(server: object, lu: TapeUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    """REWIND (SSC-3 6.x): sync, position at BOP."""
    async with lu.lock:
        lu.cart()
        await lu.sync()
        lu.position = 0
        return ScsiResult(transfer_length=0)


def _space_blocks(lu: TapeUnit, cart: Cartridge, count: int) -> ScsiResult:
    pos = lu.position
    if count > 0:
        # the next filemark at or after pos bounds the run
        i = bisect_left(cart.filemarks, pos)
        fm = cart.filemarks[i] if i < len(cart.filemarks) else None
        limit = fm if fm is not None else cart.records
        if pos + count <= limit:
            lu.position = pos + count
            return ScsiResult(transfer_length=0)
        done = limit - pos
        if fm is not None:
            lu.position = fm + 1
            return _stream_result(lu, SenseKey.NO_SENSE, FILEMARK_DETECTED, FILEMARK, count - done)
        lu.position = cart.records
        return _stream_result(lu, SenseKey.BLANK_CHECK, END_OF_DATA_DETECTED, 0, count - done)
    want = -count
    i = bisect_left(cart.filemarks, pos) - 1  # the last filemark before pos
    fm = cart.filemarks[i] if i >= 0 else None
    floor = fm + 1 if fm is not None else 0
    if pos - want >= floor:
        lu.position = pos - want
        return ScsiResult(transfer_length=0)
    done = pos - floor
    if fm is not None:
        lu.position = fm  # on the BOP side of the filemark
        return _stream_result(lu, SenseKey.NO_SENSE, FILEMARK_DETECTED, FILEMARK, want - done)
    lu.position = 0
    return _stream_result(lu, SenseKey.NO_SENSE, BEGINNING_OF_PARTITION_MEDIUM_DETECTED, EOM, want - done)


def _space_filemarks(lu: TapeUnit, cart: Cartridge, count: int) -> ScsiResult:
    pos = lu.position
    fms = cart.filemarks
    i = bisect_left(fms, pos)  # filemarks before pos; fms[i] is the next one
    if count > 0:
        if i + count - 1 < len(fms):
            lu.position = fms[i + count - 1] + 1
            return ScsiResult(transfer_length=0)
        lu.position = cart.records
        return _stream_result(lu, SenseKey.BLANK_CHECK, END_OF_DATA_DETECTED, 0, count - (len(fms) - i))
    want = -count
    if i >= want:
        lu.position = fms[i - want]
        return ScsiResult(transfer_length=0)
    lu.position = 0
    return _stream_result(lu, SenseKey.NO_SENSE, BEGINNING_OF_PARTITION_MEDIUM_DETECTED, EOM, want - i)


async def _space(lu: TapeUnit, code: int, count: int) -> ScsiResult:
    async with lu.lock:
        cart = lu.cart()
        await lu.sync()
        if code == 3:  # end of data
            lu.position = cart.records
            return ScsiResult(transfer_length=0)
        if count == 0:
            return ScsiResult(transfer_length=0)
        if code == 0:
            return _space_blocks(lu, cart, count)
        return _space_filemarks(lu, cart, count)


async def space6(server: object, lu: TapeUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    """SPACE(6) (SSC-3 6.x): codes 0 blocks, 1 filemarks, 3 end of data; count signed 24-bit."""
    code = cdb[1] & 0x0F
    if code not in (0, 1, 3):
        raise invalid_field(1, 3)
    return await _space(lu, code, _signed24(cdb, 2))


async def space16(server: object, lu: TapeUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    """SPACE(16) (SSC-3 6.x): as SPACE(6) with a signed 64-bit count; PARAMETER LENGTH must be 0."""
    code = cdb[1] & 0x0F
    if code not in (0, 1, 3):
        raise invalid_field(1, 3)
    (count,) = struct.unpack_from(">q", cdb, 4)
    return await _space(lu, code, count)


async def _locate(
    lu: TapeUnit, dest_type: int, target: int, cp: bool, partition: int, partition_byte: int
) -> ScsiResult:
    async with lu.lock:
        cart = lu.cart()
        if cp and partition != 0:  # one partition (0) per cartridge
            raise invalid_field(partition_byte)
        await lu.sync()
        if dest_type == 1:  # logical file identifier: the first object of file ``target``
            if target == 0:
                obj = 0
            elif target <= len(cart.filemarks):
                obj = cart.filemarks[target - 1] + 1
            else:
                obj = cart.records + 1
        elif dest_type == 3:  # end of data
            obj = cart.records
        else:
            obj = target
        if obj > cart.records:
            lu.position = cart.records
            return _stream_result(lu, SenseKey.BLANK_CHECK, END_OF_DATA_DETECTED, 0, None)
        lu.position = obj
        return ScsiResult(transfer_length=0)


async def locate10(server: object, lu: TapeUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    """LOCATE(10) (SSC-3 6.x): BT and logical object identifiers are the same here."""
    (obj,) = struct.unpack_from(">I", cdb, 3)
    return await _locate(lu, 0, obj, bool(cdb[1] & 0x02), cdb[8], 8)


async def locate16(server: object, lu: TapeUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    """LOCATE(16) (SSC-4 7.x): DEST_TYPE 000b object, 001b file, 011b end of data."""
    dest_type = (cdb[1] >> 3) & 0x07
    if dest_type not in (0, 1, 3):
        raise invalid_field(1, 5)
    (obj,) = struct.unpack_from(">Q", cdb, 4)
    return await _locate(lu, dest_type, obj, bool(cdb[1] & 0x02), cdb[3], 3)


async def read_position(server: object, lu: TapeUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    """READ POSITION (SSC-3 7.x): short form (SA 00h/01h, BT), long form (06h), extended form (08h).
    Position is always known (no BPU/LOCU/LONU), no object buffer (counts 0, BYCU 0)."""
    sa = cdb[1] & 0x1F
    (alloc,) = struct.unpack_from(">H", cdb, 7)
    if sa not in (0x00, 0x01, 0x06, 0x08):
        raise invalid_field(1, 4)
    async with lu.lock:
        cart = lu.cart()
        pos = lu.position
        flags = 0x80 if pos == 0 else 0  # BOP
        beyond_ew = pos == cart.records and cart.data_end > lu.early_warning(cart.capacity)
        if beyond_ew:
            flags |= 0x40 | 0x01  # EOP region (between early warning and end), BPEW
        if sa in (0x00, 0x01):
            # FIRST and LAST BLOCK LOCATION (no buffer: equal), blocks/bytes in buffer 0
            short = min(pos, 0xFFFFFFFF)
            data = struct.pack(">BBxxII", flags, 0, short, short) + bytes(8)
            return ScsiResult(data_in=data, transfer_length=20)
        if sa == 0x06:
            data = struct.pack(">BxxxIQQQ", flags & 0xC1, 0, pos, cart.filemarks_before(pos), 0)
            return ScsiResult(data_in=data, transfer_length=32)
        data = struct.pack(">BBHxBHQQQ", flags, 0, 0x1C, 0, 0, pos, pos, 0)
        return ScsiResult(data_in=data[:alloc], transfer_length=alloc)


# -- medium control ------------------------------------------------------------------------------


async def load_unload(server: object, lu: TapeUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    """LOAD UNLOAD (SSC-3 7.x): LOAD=1 threads the cartridge (RETEN is a no-op, EOT positions at end
    of data); LOAD=0 syncs, rewinds and unthreads (removal must be allowed).  HOLD is not supported."""
    flags = cdb[4]
    if flags & 0x08:
        raise invalid_field(4, 3)
    async with lu.lock:
        if flags & 0x01:
            await lu.sync()
            await lu.load()
            if flags & 0x04:  # EOT with LOAD: position at end of data
                lu.position = lu.cart().records
            return ScsiResult(transfer_length=0)
        if lu.cartridge is None:
            lu.cart()  # NOT READY / MEDIUM NOT PRESENT
        if lu.prevent and lu.loaded:
            raise CheckCondition(SenseKey.ILLEGAL_REQUEST, MEDIUM_REMOVAL_PREVENTED)
        await lu.unload()
        return ScsiResult(transfer_length=0)


async def read_block_limits(server: object, lu: TapeUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    """READ BLOCK LIMITS (SSC-3 7.x): granularity 0, maximum 2 MiB, minimum 1 byte."""
    if cdb[1] & 0x01:  # MLOC (SSC-4): maximum logical object identifier form is not supported
        raise invalid_field(1, 0)
    data = bytes((0,)) + MAX_BLOCK_LENGTH.to_bytes(3, "big") + (1).to_bytes(2, "big")
    return ScsiResult(data_in=data, transfer_length=6)


async def report_density_support(server: object, lu: TapeUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    """REPORT DENSITY SUPPORT (SSC-3 6.x): one density (LTO-6 code) whether MEDIA is set or not."""
    (alloc,) = struct.unpack_from(">H", cdb, 7)
    if cdb[1] & 0x02:  # MEDIUM TYPE descriptors are not supported
        raise invalid_field(1, 1)
    if cdb[1] & 0x01 and lu.cartridge is None:
        lu.cart()
    cap_mb = (lu.cartridge.capacity if lu.cartridge is not None else 0) // 1_000_000
    desc = bytearray(52)
    desc[0] = desc[1] = DENSITY_CODE  # PRIMARY / SECONDARY DENSITY CODE
    desc[2] = 0xA0  # WRTOK, DEFLT
    struct.pack_into(">HHI", desc, 8, 127, 1, min(cap_mb, 0xFFFFFFFF))  # MEDIA WIDTH, TRACKS, CAPACITY (MB)
    desc[16:24] = b"CISTERN "  # ASSIGNING ORGANIZATION
    desc[24:32] = b"VTAPE   "  # DENSITY NAME
    desc[32:52] = b"cistern virtual tape".ljust(20)
    data = struct.pack(">Hxx", len(desc) + 2) + bytes(desc)
    return ScsiResult(data_in=data[:alloc], transfer_length=alloc)


def _u(*b: int) -> bytes:
    return bytes(b)


F4 = (0xFF,) * 4
F8 = (0xFF,) * 8

# fmt: off
TAPE_COMMANDS = CommandTable((
    *spc_core(),
    *reservations(),
    LOG_SENSE,
    CommandSpec(0x01, None, "REWIND", _u(0x01, 0x01, 0, 0, 0, 0), rewind),
    CommandSpec(0x05, None, "READ BLOCK LIMITS", _u(0x05, 0x01, 0, 0, 0, 0), read_block_limits, needs_medium=False),
    CommandSpec(0x08, None, "READ(6)", _u(0x08, 0x03, 0xFF, 0xFF, 0xFF, 0), read6),
    CommandSpec(0x0A, None, "WRITE(6)", _u(0x0A, 0x01, 0xFF, 0xFF, 0xFF, 0), write6, writes=True),
    CommandSpec(0x10, None, "WRITE FILEMARKS(6)", _u(0x10, 0x01, 0xFF, 0xFF, 0xFF, 0), write_filemarks6,
                writes=True),
    CommandSpec(0x11, None, "SPACE(6)", _u(0x11, 0x0F, 0xFF, 0xFF, 0xFF, 0), space6),
    CommandSpec(0x19, None, "ERASE(6)", _u(0x19, 0x03, 0, 0, 0, 0), erase, writes=True),
    CommandSpec(0x1B, None, "LOAD UNLOAD", _u(0x1B, 0x01, 0, 0, 0x0F, 0), load_unload, needs_medium=False),
    CommandSpec(0x1E, None, "PREVENT ALLOW MEDIUM REMOVAL", _u(0x1E, 0, 0, 0, 0x03, 0), spc.prevent_allow,
                needs_medium=False),
    CommandSpec(0x2B, None, "LOCATE(10)", _u(0x2B, 0x07, 0, *F4, 0, 0xFF, 0), locate10),
    CommandSpec(0x34, None, "READ POSITION", _u(0x34, 0x1F, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0), read_position),
    CommandSpec(0x44, None, "REPORT DENSITY SUPPORT", _u(0x44, 0x03, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0),
                report_density_support, needs_medium=False),
    CommandSpec(0x8C, None, "READ ATTRIBUTE", _u(0x8C, 0x1F, 0, 0, 0, 0xFF, 0, 0xFF, 0xFF, 0xFF, *F4, 0x01, 0),
                read_attribute),
    CommandSpec(0x8D, None, "WRITE ATTRIBUTE", _u(0x8D, 0x01, 0, 0, 0, 0xFF, 0, 0xFF, 0, 0, *F4, 0, 0),
                write_attribute),
    CommandSpec(0x91, None, "SPACE(16)", _u(0x91, 0x0F, 0, 0, *F8, 0, 0, 0, 0), space16),
    CommandSpec(0x92, None, "LOCATE(16)", _u(0x92, 0x3B, 0x01, 0xFF, *F8, 0, 0, 0, 0), locate16),
))
# fmt: on
