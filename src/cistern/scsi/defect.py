"""READ DEFECT DATA(10) and (12) (SBC-3 5.13, 5.14): a virtual disk has no grown or primary defects.

The answer is the header alone with DEFECT LIST LENGTH zero, PLISTV/GLISTV echoing which lists were
asked for (an empty list is a valid list) and the DEFECT LIST FORMAT echoing the requested one (an
empty list is representable in every format).  READ DEFECT DATA(12) reports GENERATION CODE 0 ("not
supported") and accepts only ADDRESS DESCRIPTOR INDEX 0 past which nothing exists anyway.
"""

from __future__ import annotations

import struct

from .lu import LogicalUnit
from .task import ScsiResult, ScsiTask

_RDD10 = struct.Struct(">BB4xH")  # from byte 1: (reserved), flags, (reserved), ALLOCATION LENGTH
_RDD12 = struct.Struct(">BII")  # from byte 1: flags, ADDRESS DESCRIPTOR INDEX, ALLOCATION LENGTH


def _flags(byte: int) -> int:
    return byte & 0x1F  # REQ_PLIST -> PLISTV, REQ_GLIST -> GLISTV, DEFECT LIST FORMAT


async def read_defect_data10(server: object, lu: LogicalUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    _, flags, alloc = _RDD10.unpack_from(cdb, 1)
    data = struct.pack(">BBH", 0, _flags(flags), 0)
    return ScsiResult(data_in=data[:alloc], transfer_length=alloc)


async def read_defect_data12(server: object, lu: LogicalUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    flags, _index, alloc = _RDD12.unpack_from(cdb, 1)
    data = struct.pack(">BBHI", 0, _flags(flags), 0, 0)
    return ScsiResult(data_in=data[:alloc], transfer_length=alloc)
