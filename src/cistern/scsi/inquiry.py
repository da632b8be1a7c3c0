"""INQUIRY (SPC-4 6.6) and the vital product data pages (SPC-4 7.8, SBC-3 6.6) for every device type.

Standard data claims SPC-4 (VERSION 0x06), HiSup, CmdQue, the LU's PERIPHERAL DEVICE TYPE and RMB, and
its type's version descriptors (disk: SAM-5, iSCSI, SPC-4, SBC-3).  VPD pages every type has: 0x00
supported pages, 0x80 unit serial number, 0x83 device identification (NAA logical unit designator, T10
vendor ID, relative target port, target port group, SCSI name strings of the target port and target
device); then the type's own (``LogicalUnitBase.vpd_pages``).  Disk pages: 0x8F third-party copy, 0xB0
block limits, 0xB1 block device characteristics and, on thin LUs, 0xB2 logical block provisioning.
"""

from __future__ import annotations

import struct

from .alua import tpgs_of
from .atomic import ATOMIC_ALIGNMENT, ATOMIC_TRANSFER_LENGTH_GRANULARITY, max_atomic_blocks
from .caw import MAX_COMPARE_AND_WRITE_BLOCKS
from .lu import MAX_WRITE_SAME_BLOCKS, LogicalUnit
from .sense import invalid_field
from .task import ITNexus, ScsiResult, ScsiTask
from .thin import block_limits_fields as thin_fields
from .thin import lbp_page_body
from .unit import LogicalUnitBase, VpdBuilder
from .xcopy import third_party_copy_vpd

PQ_NOT_CONNECTED = 0x7F  # peripheral qualifier 3, device type 0x1F (SPC-4 6.6.2)

_INQ_CDB = struct.Struct(">BBH")  # byte 1 (EVPD), PAGE CODE, ALLOCATION LENGTH
_BLOCK_LIMITS = struct.Struct(">BBHIIIIIII Q")


def standard_inquiry(lu: LogicalUnitBase | None, tpgs: int = 0) -> bytes:
    if lu is None:
        return bytes((PQ_NOT_CONNECTED, 0, 0x06, 0x12, 31)) + bytes(31)
    data = bytearray(96)
    data[0] = lu.device_type & 0x1F  # PERIPHERAL QUALIFIER 000b
    data[1] = 0x80 if lu.removable else 0x00
    data[2] = 0x06  # SPC-4
    data[3] = 0x12  # HISUP, RESPONSE DATA FORMAT 2
    data[4] = len(data) - 5
    data[5] |= (tpgs & 0x03) << 4  # TPGS: implicit / explicit ALUA (SPC-4 6.6.2, 5.15)
    if lu.three_pc:
        data[5] |= 0x08  # 3PC: EXTENDED COPY (xcopy.py)
    data[7] = 0x02  # CMDQUE
    data[8:16] = lu.vendor
    data[16:32] = lu.product
    data[32:36] = lu.revision
    for i, desc in enumerate(lu.version_descriptors[:8]):
        struct.pack_into(">H", data, 58 + 2 * i, desc)
    return bytes(data)


def _page(code: int, body: bytes) -> bytes:
    return struct.pack(">BBH", 0x00, code, len(body)) + body


def _designator(proto_codeset: int, piv_assoc_type: int, value: bytes) -> bytes:
    return bytes((proto_codeset, piv_assoc_type, 0, len(value))) + value


def _name_string(name: str) -> bytes:
    raw = name.encode("utf-8") + b"\0"
    return raw + bytes(-len(raw) % 4)


def _third_party_copy(lu: LogicalUnit) -> bytes:
    return third_party_copy_vpd(lu)


def _block_limits(lu: LogicalUnit) -> bytes:
    body = _BLOCK_LIMITS.pack(
        0x00,  # WSNZ=0: WRITE SAME with zero blocks writes to the end of the medium (sbc.py)
        MAX_COMPARE_AND_WRITE_BLOCKS,  # MAXIMUM COMPARE AND WRITE LENGTH
        1,  # OPTIMAL TRANSFER LENGTH GRANULARITY
        lu.max_transfer_blocks,  # MAXIMUM TRANSFER LENGTH
        lu.optimal_transfer_blocks,  # OPTIMAL TRANSFER LENGTH
        0,  # MAXIMUM PREFETCH LENGTH (0: no limit reported)
        *thin_fields(lu),  # MAXIMUM UNMAP LBA / BLOCK DESCRIPTOR COUNT, granularity, alignment
        MAX_WRITE_SAME_BLOCKS,
    )
    body += struct.pack(  # SBC-4 atomic write limits (atomic.py); no atomic boundaries
        ">IIIII", max_atomic_blocks(lu), ATOMIC_ALIGNMENT, ATOMIC_TRANSFER_LENGTH_GRANULARITY, 0, 0
    )
    return body + bytes(0x3C - len(body))


def _block_device_characteristics(lu: LogicalUnit) -> bytes:
    wabereq = 0x40 if lu.thin else 0x00  # WABEREQ 01b: reads after SANITIZE BLOCK ERASE succeed
    body = struct.pack(">HBB", 0x0001, 0, wabereq)  # MEDIUM ROTATION RATE 1: non-rotating
    return body + bytes(0x3C - len(body))


def disk_vpd_pages(lu: LogicalUnit) -> dict[int, VpdBuilder]:
    """The disk's own VPD pages (0xB2 only on thin LUs)."""
    pages: dict[int, VpdBuilder] = {
        0x8F: _third_party_copy,  # type: ignore[dict-item]
        0xB0: _block_limits,  # type: ignore[dict-item]
        0xB1: _block_device_characteristics,  # type: ignore[dict-item]
    }
    if lu.thin:
        pages[0xB2] = lbp_page_body  # type: ignore[assignment]
    return pages


def supported_pages(lu: LogicalUnitBase) -> list[int]:
    return [0x00, 0x80, 0x83, *sorted(lu.vpd_pages())]


def vpd_page(lu: LogicalUnitBase, code: int, nexus: ITNexus) -> bytes | None:
    """VPD page ``code`` of ``lu`` (header included), None when the LU has no such page."""
    if code == 0x00:
        return _page(0x00, bytes(supported_pages(lu)))
    if code == 0x80:
        return _page(0x80, lu.serial.encode("ascii", "replace"))
    if code == 0x83:
        naa_type = 0x03  # association: logical unit, designator type NAA
        body = _designator(0x01, naa_type, lu.naa_id)
        body += _designator(0x02, 0x01, lu.vendor + lu.serial.encode("ascii", "replace"))
        body += _designator(0x51, 0x94, struct.pack(">HH", 0, nexus.relative_port))
        body += _designator(0x51, 0x95, struct.pack(">HH", 0, nexus.tpgt))
        body += _designator(0x53, 0x98, _name_string(nexus.target_port))
        body += _designator(0x53, 0xA8, _name_string(nexus.target_name))
        return _page(0x83, body)
    builder = lu.vpd_pages().get(code)
    if builder is None:
        return None
    return _page(code, builder(lu))


async def inquiry(server: object, lu: LogicalUnitBase | None, task: ScsiTask, cdb: bytes) -> ScsiResult:
    flags, page, alloc = _INQ_CDB.unpack_from(cdb, 1)
    if not flags & 0x01:
        if page:
            raise invalid_field(2)
        data = standard_inquiry(lu, tpgs_of(server))
    else:
        if lu is None:
            data = bytes((PQ_NOT_CONNECTED, page, 0, 0))
        else:
            page_data = vpd_page(lu, page, task.nexus)
            if page_data is None:
                raise invalid_field(2)
            data = page_data
    return ScsiResult(data_in=data[:alloc], transfer_length=alloc)
