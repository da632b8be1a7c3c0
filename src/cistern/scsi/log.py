"""LOG SENSE (SPC-4 6.8) for every device type, from the LU's ``log_pages()`` hook.

Page 0x00 (supported log pages) is generated from the hook.  Parameters are built by the page's
builder (``builder(lu) -> parameter bytes``, each parameter a 4-byte header + value); the
PARAMETER POINTER selects parameters with a code at or above it.  Every page control value answers the
same values (no thresholds, nothing saveable: PPC and SP are refused).  Subpages: only 0x00, and
0x00/0xFF on page 0x00.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from .sense import invalid_field
from .task import ScsiResult, ScsiTask

if TYPE_CHECKING:
    from .unit import LogicalUnitBase

_LOG_SENSE = struct.Struct(">BBBxHH")  # from byte 1: PPC/SP, PC/PAGE CODE, SUBPAGE, PARAMETER POINTER, ALLOC


def parameter(code: int, value: bytes, control: int = 0x03) -> bytes:
    """One log parameter (SPC-4 7.3.1): code, control byte (default 03h: binary list), value."""
    return struct.pack(">HBB", code, control, len(value)) + value


def _filter(params: bytes, pointer: int) -> bytes:
    out = bytearray()
    pos = 0
    while pos + 4 <= len(params):
        code = struct.unpack_from(">H", params, pos)[0]
        end = pos + 4 + params[pos + 3]
        if code >= pointer:
            out += params[pos:end]
        pos = end
    return bytes(out)


async def log_sense(server: object, lu: LogicalUnitBase, task: ScsiTask, cdb: bytes) -> ScsiResult:
    """LOG SENSE: the LU's log pages; INVALID FIELD IN CDB for PPC/SP, unknown pages and subpages."""
    flags, pc_page, subpage, pointer, alloc = _LOG_SENSE.unpack_from(cdb, 1)
    if flags & 0x02:
        raise invalid_field(1, 1)  # PPC: parameter change tracking is not supported
    if flags & 0x01:
        raise invalid_field(1, 0)  # SP: nothing is saveable
    code = pc_page & 0x3F
    pages = lu.log_pages()
    if code == 0x00:
        if subpage == 0xFF:  # supported pages and subpages: (page, 0) pairs
            body = b"".join(bytes((c, 0)) for c in (0x00, *pages))
            data = struct.pack(">BBH", 0x40, 0xFF, len(body)) + body
        elif subpage == 0x00:
            body = bytes((0x00, *pages))
            data = struct.pack(">BBH", 0x00, 0x00, len(body)) + body
        else:
            raise invalid_field(3)
    else:
        builder = pages.get(code)
        if builder is None:
            raise invalid_field(2, 5)
        if subpage:
            raise invalid_field(3)
        body = _filter(builder(lu), pointer)
        data = struct.pack(">BBH", code, 0x00, len(body)) + body
    return ScsiResult(data_in=data[:alloc], transfer_length=alloc)
