"""MODE SENSE(6/10) and MODE SELECT(6/10) (SPC-4 6.11-6.14) with the pages a disk needs.

Pages: 0x01 read-write error recovery, 0x08 caching (WCE changeable), 0x0A control (D_SENSE and SWP
changeable; TST=001b: one task set per I_T nexus), 0x1C informational exceptions control.  Saved
parameters are not supported (PC=11b -> 39/00).  A MODE SELECT that changes anything establishes
MODE PARAMETERS CHANGED (2A/01) for the other I_T nexuses.
"""

from __future__ import annotations

import struct

from .lu import LogicalUnit
from .sense import (
    MODE_PARAMETERS_CHANGED,
    PARAMETER_LIST_LENGTH_ERROR,
    SAVING_PARAMETERS_NOT_SUPPORTED,
    CheckCondition,
    SenseKey,
    invalid_field,
    invalid_param,
)
from .task import ScsiResult, ScsiTask

PC_CURRENT, PC_CHANGEABLE, PC_DEFAULT, PC_SAVED = 0, 1, 2, 3
ALL_PAGES = 0x3F
PAGE_ORDER = (0x01, 0x08, 0x0A, 0x1C)


def _rw_error_recovery(lu: LogicalUnit, pc: int) -> bytes:
    page = bytearray(12)
    page[0], page[1] = 0x01, 10
    if pc != PC_CHANGEABLE:
        page[2] = 0xC0  # AWRE, ARRE
    return bytes(page)


def _caching(lu: LogicalUnit, pc: int) -> bytes:
    page = bytearray(20)
    page[0], page[1] = 0x08, 18
    if pc in (PC_CHANGEABLE, PC_DEFAULT) or lu.wce:
        page[2] = 0x04  # WCE
    return bytes(page)


def _control(lu: LogicalUnit, pc: int) -> bytes:
    page = bytearray(12)
    page[0], page[1] = 0x0A, 10
    if pc == PC_CHANGEABLE:
        page[2] = 0x04  # D_SENSE
        page[4] = 0x08  # SWP
        return bytes(page)
    page[2] = 0x20  # TST 001b
    if pc == PC_CURRENT and lu.d_sense:
        page[2] |= 0x04
    page[3] = 0x10  # QUEUE ALGORITHM MODIFIER 1 (unrestricted reordering), QERR 0
    if pc == PC_CURRENT and lu.swp:
        page[4] |= 0x08
    page[5] = 0x40  # TAS
    struct.pack_into(">H", page, 8, 0xFFFF)  # BUSY TIMEOUT PERIOD: unlimited
    return bytes(page)


def _iec(lu: LogicalUnit, pc: int) -> bytes:
    page = bytearray(12)
    page[0], page[1] = 0x1C, 10
    if pc != PC_CHANGEABLE:
        page[2] = 0x08  # DEXCPT: no informational exceptions reported
    return bytes(page)


_PAGES = {0x01: _rw_error_recovery, 0x08: _caching, 0x0A: _control, 0x1C: _iec}


def _pages(lu: LogicalUnit, pc: int, code: int, subpage: int) -> bytes:
    if subpage not in (0x00, 0xFF):
        raise invalid_field(3)
    if code == ALL_PAGES:
        return b"".join(_PAGES[c](lu, pc) for c in PAGE_ORDER)
    builder = _PAGES.get(code)
    if builder is None:
        raise invalid_field(2, 5)
    return builder(lu, pc)


def _device_specific(lu: LogicalUnit) -> int:
    wp = 0x80 if (lu.read_only or lu.swp) else 0
    return wp | 0x10  # DPOFUA


async def mode_sense6(server: object, lu: LogicalUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    dbd = cdb[1] & 0x08
    pc, code = cdb[2] >> 6, cdb[2] & 0x3F
    alloc = cdb[4]
    if pc == PC_SAVED:
        raise CheckCondition(SenseKey.ILLEGAL_REQUEST, SAVING_PARAMETERS_NOT_SUPPORTED)
    pages = _pages(lu, pc, code, cdb[3])
    bd = (
        b""
        if dbd
        else struct.pack(">IxBH", min(lu.num_blocks, 0xFFFFFFFF), lu.block_size >> 16, lu.block_size & 0xFFFF)
    )
    header = struct.pack(">BBBB", 3 + len(bd) + len(pages), 0, _device_specific(lu), len(bd))
    data = header + bd + pages
    return ScsiResult(data_in=data[:alloc], transfer_length=alloc)


async def mode_sense10(server: object, lu: LogicalUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    dbd = cdb[1] & 0x08
    llbaa = cdb[1] & 0x10
    pc, code = cdb[2] >> 6, cdb[2] & 0x3F
    (alloc,) = struct.unpack_from(">H", cdb, 7)
    if pc == PC_SAVED:
        raise CheckCondition(SenseKey.ILLEGAL_REQUEST, SAVING_PARAMETERS_NOT_SUPPORTED)
    pages = _pages(lu, pc, code, cdb[3])
    if dbd:
        bd = b""
    elif llbaa:
        bd = struct.pack(">Q4xI", lu.num_blocks, lu.block_size)
    else:
        bd = struct.pack(">IxBH", min(lu.num_blocks, 0xFFFFFFFF), lu.block_size >> 16, lu.block_size & 0xFFFF)
    longlba = 0x01 if len(bd) == 16 else 0
    header = struct.pack(">HBBBxH", 6 + len(bd) + len(pages), 0, _device_specific(lu), longlba, len(bd))
    data = header + bd + pages
    return ScsiResult(data_in=data[:alloc], transfer_length=alloc)


def _apply_select(lu: LogicalUnit, task: ScsiTask, data: bytes, ten: bool) -> bool:
    """Validate and apply a MODE SELECT parameter list; return True when something changed."""
    hdr = 8 if ten else 4
    if len(data) < hdr:
        raise CheckCondition(SenseKey.ILLEGAL_REQUEST, PARAMETER_LIST_LENGTH_ERROR)
    bdl = struct.unpack_from(">H", data, 6)[0] if ten else data[3]
    longlba = ten and bool(data[4] & 0x01)
    pos = hdr
    if bdl:
        desc_len = 16 if longlba else 8
        if bdl % desc_len or pos + bdl > len(data):
            raise invalid_param(6 if ten else 3)
        for off in range(pos, pos + bdl, desc_len):
            blen = (
                struct.unpack_from(">I", data, off + 12)[0]
                if longlba
                else int.from_bytes(data[off + 5 : off + 8], "big")
            )
            if blen not in (0, lu.block_size):
                raise invalid_param(off + (12 if longlba else 5))
        pos += bdl
    wce, d_sense, swp = lu.wce, lu.d_sense, lu.swp
    while pos < len(data):
        if pos + 2 > len(data):
            raise CheckCondition(SenseKey.ILLEGAL_REQUEST, PARAMETER_LIST_LENGTH_ERROR)
        code = data[pos] & 0x3F
        if data[pos] & 0x40:  # SPF: no subpages are supported
            raise invalid_param(pos, 6)
        builder = _PAGES.get(code)
        if builder is None:
            raise invalid_param(pos, 5)
        current = builder(lu, PC_CURRENT)
        changeable = builder(lu, PC_CHANGEABLE)
        plen = data[pos + 1] + 2
        if plen != len(current):
            raise invalid_param(pos + 1)
        if pos + plen > len(data):
            raise CheckCondition(SenseKey.ILLEGAL_REQUEST, PARAMETER_LIST_LENGTH_ERROR)
        page = data[pos : pos + plen]
        for i in range(2, plen):
            diff = (page[i] ^ current[i]) & ~changeable[i] & 0xFF
            if diff:
                raise invalid_param(pos + i, diff.bit_length() - 1)
        if code == 0x08:
            wce = bool(page[2] & 0x04)
        elif code == 0x0A:
            d_sense = bool(page[2] & 0x04)
            swp = bool(page[4] & 0x08)
        pos += plen
    changed = (wce, d_sense, swp) != (lu.wce, lu.d_sense, lu.swp)
    lu.wce, lu.d_sense, lu.swp = wce, d_sense, swp
    return changed


async def _mode_select(lu: LogicalUnit, task: ScsiTask, cdb: bytes, length: int, ten: bool) -> ScsiResult:
    if not cdb[1] & 0x10:  # PF=0: vendor-specific page format is not supported
        raise invalid_field(1, 4)
    if cdb[1] & 0x01:  # SP: saving pages is not supported
        raise invalid_field(1, 0)
    if length == 0:
        return ScsiResult(transfer_length=0)
    data = bytes(task.data_out or b"")[:length]
    if len(data) < length:
        raise CheckCondition(SenseKey.ILLEGAL_REQUEST, PARAMETER_LIST_LENGTH_ERROR)
    if _apply_select(lu, task, data, ten):
        lu.establish_ua_all(MODE_PARAMETERS_CHANGED, exclude=task.nexus)
    return ScsiResult(transfer_length=length)


async def mode_select6(server: object, lu: LogicalUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    return await _mode_select(lu, task, cdb, cdb[4], False)


async def mode_select10(server: object, lu: LogicalUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    return await _mode_select(lu, task, cdb, struct.unpack_from(">H", cdb, 7)[0], True)
