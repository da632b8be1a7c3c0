"""Primary commands (SPC-4) other than INQUIRY and MODE: TEST UNIT READY, REQUEST SENSE, REPORT LUNS.

REPORT LUNS uses single-level LUN addressing (SAM-5 4.7): peripheral device addressing below 256,
flat space addressing up to 16383.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from .lu import LogicalUnit
from .sense import (
    LOGICAL_UNIT_NOT_SUPPORTED,
    MEDIUM_NOT_PRESENT,
    NO_ADDITIONAL_SENSE,
    SenseKey,
    build_sense,
    invalid_field,
)
from .task import ScsiResult, ScsiTask
from .unit import LogicalUnitBase


def encode_lun(lun: int) -> bytes:
    """The 8-byte LUN field for a single-level LUN."""
    if lun < 256:
        return bytes((0x00, lun)) + bytes(6)
    return bytes((0x40 | (lun >> 8), lun & 0xFF)) + bytes(6)


def report_luns_data(luns: Iterable[int], select_report: int) -> bytes:
    # SELECT REPORT 01b asks for well-known logical units only: we have none.
    body = b"" if select_report == 0x01 else b"".join(encode_lun(lun) for lun in sorted(luns))
    return struct.pack(">I4x", len(body)) + body


async def test_unit_ready(server: object, lu: LogicalUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    lu.check_medium()
    return ScsiResult(transfer_length=0)


async def request_sense(server: object, lu: LogicalUnit | None, task: ScsiTask, cdb: bytes) -> ScsiResult:
    desc = bool(cdb[1] & 0x01)
    alloc = cdb[4]
    if lu is None:
        data = build_sense(SenseKey.ILLEGAL_REQUEST, LOGICAL_UNIT_NOT_SUPPORTED, descriptor=desc)
    else:
        ua = lu.pop_ua(task.nexus)
        if ua is not None:
            data = build_sense(SenseKey.UNIT_ATTENTION, ua, descriptor=desc)
        elif not lu.medium_present:
            data = build_sense(SenseKey.NOT_READY, MEDIUM_NOT_PRESENT, descriptor=desc)
        else:
            data = build_sense(SenseKey.NO_SENSE, NO_ADDITIONAL_SENSE, descriptor=desc)
    return ScsiResult(data_in=data[:alloc], transfer_length=alloc)


async def report_luns(server: object, lu: LogicalUnit | None, task: ScsiTask, cdb: bytes) -> ScsiResult:
    select = cdb[2]
    (alloc,) = struct.unpack_from(">I", cdb, 6)
    if select not in (0x00, 0x01, 0x02):
        raise invalid_field(2)
    if alloc < 16:
        raise invalid_field(6)
    luns = server.luns  # type: ignore[attr-defined]
    data = report_luns_data(luns.keys(), select)
    return ScsiResult(data_in=data[:alloc], transfer_length=alloc)


async def prevent_allow(server: object, lu: LogicalUnitBase, task: ScsiTask, cdb: bytes) -> ScsiResult:
    """PREVENT ALLOW MEDIUM REMOVAL (SPC-4 6.13; SMC-3 6.13 for a changer's import/export slots): per
    I_T nexus, 01b prevents and 00b allows; 10b/11b (obsolete / reserved for changers) are refused."""
    prevent = cdb[4] & 0x03
    if prevent & 0x02:
        raise invalid_field(4, 1)
    if prevent:
        lu.prevent.add(task.nexus)
    else:
        lu.prevent.discard(task.nexus)
    return ScsiResult(transfer_length=0)
