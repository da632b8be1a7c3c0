"""MODE SENSE(6/10) and MODE SELECT(6/10) (SPC-4 6.11-6.14) for every device type.

The pages, the block descriptor and the device-specific parameter come from the LU's hooks
(``unit.LogicalUnitBase.mode_pages`` etc.); this module owns the parameter-list formats and the
changeable-bit checks.  Shared page: 0x0A control (D_SENSE and SWP changeable; TST=001b: one task set
per I_T nexus).  Disk pages (``DISK_PAGES``): 0x01 read-write error recovery, 0x08 caching (WCE
changeable), 0x0A, 0x1C informational exceptions control.  Saved parameters are not supported
(PC=11b -> 39/00).  A MODE SELECT that changes anything establishes MODE PARAMETERS CHANGED (2A/01)
for the other I_T nexuses.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from .lu import LogicalUnit
    from .unit import LogicalUnitBase

PC_CURRENT, PC_CHANGEABLE, PC_DEFAULT, PC_SAVED = 0, 1, 2, 3
ALL_PAGES = 0x3F


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


def control_page(lu: LogicalUnitBase, pc: int) -> bytes:
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


DISK_PAGES = {0x01: _rw_error_recovery, 0x08: _caching, 0x0A: control_page, 0x1C: _iec}


def _pages(lu: LogicalUnitBase, pc: int, code: int, subpage: int) -> bytes:
    if subpage not in (0x00, 0xFF):
        raise invalid_field(3)
    pages = lu.mode_pages()
    if code == ALL_PAGES:
        return b"".join(builder(lu, pc) for builder in pages.values())
    builder = pages.get(code)
    if builder is None:
        raise invalid_field(2, 5)
    return builder(lu, pc)


async def mode_sense6(server: object, lu: LogicalUnitBase, task: ScsiTask, cdb: bytes) -> ScsiResult:
    dbd = cdb[1] & 0x08
    pc, code = cdb[2] >> 6, cdb[2] & 0x3F
    alloc = cdb[4]
    if pc == PC_SAVED:
        raise CheckCondition(SenseKey.ILLEGAL_REQUEST, SAVING_PARAMETERS_NOT_SUPPORTED)
    pages = _pages(lu, pc, code, cdb[3])
    bd = b"" if dbd else lu.mode_block_descriptor(False)
    header = struct.pack(">BBBB", 3 + len(bd) + len(pages), 0, lu.mode_device_specific(), len(bd))
    data = header + bd + pages
    return ScsiResult(data_in=data[:alloc], transfer_length=alloc)


async def mode_sense10(server: object, lu: LogicalUnitBase, task: ScsiTask, cdb: bytes) -> ScsiResult:
    dbd = cdb[1] & 0x08
    llbaa = cdb[1] & 0x10
    pc, code = cdb[2] >> 6, cdb[2] & 0x3F
    (alloc,) = struct.unpack_from(">H", cdb, 7)
    if pc == PC_SAVED:
        raise CheckCondition(SenseKey.ILLEGAL_REQUEST, SAVING_PARAMETERS_NOT_SUPPORTED)
    pages = _pages(lu, pc, code, cdb[3])
    bd = b"" if dbd else lu.mode_block_descriptor(bool(llbaa))
    longlba = 0x01 if len(bd) == 16 else 0
    header = struct.pack(">HBBBxH", 6 + len(bd) + len(pages), 0, lu.mode_device_specific(), longlba, len(bd))
    data = header + bd + pages
    return ScsiResult(data_in=data[:alloc], transfer_length=alloc)


def _apply_select(lu: LogicalUnitBase, task: ScsiTask, data: bytes, ten: bool) -> bool:
    """Validate and apply a MODE SELECT parameter list; return True when something changed."""
    hdr = 8 if ten else 4
    if len(data) < hdr:
        raise CheckCondition(SenseKey.ILLEGAL_REQUEST, PARAMETER_LIST_LENGTH_ERROR)
    bdl = struct.unpack_from(">H", data, 6)[0] if ten else data[3]
    longlba = ten and bool(data[4] & 0x01)
    pos = hdr
    descriptor: bytes | None = None
    if bdl:
        desc_len = 16 if longlba else 8
        if bdl % desc_len or pos + bdl > len(data):
            raise invalid_param(6 if ten else 3)
        for off in range(pos, pos + bdl, desc_len):
            descriptor = data[off : off + desc_len]
            lu.mode_check_descriptor(descriptor, off)
        pos += bdl
    builders = lu.mode_pages()
    pages: dict[int, bytes] = {}
    while pos < len(data):
        if pos + 2 > len(data):
            raise CheckCondition(SenseKey.ILLEGAL_REQUEST, PARAMETER_LIST_LENGTH_ERROR)
        code = data[pos] & 0x3F
        if data[pos] & 0x40:  # SPF: no subpages are supported
            raise invalid_param(pos, 6)
        builder = builders.get(code)
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
        pages[code] = page
        pos += plen
    before = _snapshot(lu)
    lu.mode_apply(descriptor, pages)
    return _snapshot(lu) != before


def _snapshot(lu: LogicalUnitBase) -> bytes:
    return lu.mode_block_descriptor(False) + b"".join(b(lu, PC_CURRENT) for b in lu.mode_pages().values())


async def _mode_select(lu: LogicalUnitBase, task: ScsiTask, cdb: bytes, length: int, ten: bool) -> ScsiResult:
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


async def mode_select6(server: object, lu: LogicalUnitBase, task: ScsiTask, cdb: bytes) -> ScsiResult:
    return await _mode_select(lu, task, cdb, cdb[4], False)


async def mode_select10(server: object, lu: LogicalUnitBase, task: ScsiTask, cdb: bytes) -> ScsiResult:
    return await _mode_select(lu, task, cdb, struct.unpack_from(">H", cdb, 7)[0], True)
