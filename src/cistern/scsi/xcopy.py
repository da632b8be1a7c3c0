"""EXTENDED COPY (LID1) and RECEIVE COPY RESULTS (SPC-4 6.3, 6.18): the copy manager, VMware's Clone.

The copy manager copies between logical units of this device server only.  Supported descriptors:
the identification descriptor CSCD descriptor (type 0xE4, SPC-4 6.4.5.5) naming a LU by its NAA
designator from VPD 0x83, and the block device to block device segment descriptor (type 0x02, SPC-4
6.4.6.5).  No inline or held data.  Copy results are kept per I_T nexus and LIST IDENTIFIER when LIST ID
USAGE is 00b (hold) and served by RECEIVE COPY RESULTS: COPY STATUS, RECEIVE DATA (always empty),
OPERATING PARAMETERS and FAILED SEGMENT DETAILS.  VPD page 0x8F (third-party copy, SPC-4 7.8.17) is
built here too.

Errors, in the order the parameter list is checked: PARAMETER LIST LENGTH ERROR (1A/00) for a list
shorter than its header says or longer than MAXIMUM DESCRIPTOR LIST LENGTH; TOO MANY TARGET/SEGMENT
DESCRIPTORS (26/06, 26/08); UNSUPPORTED TARGET/SEGMENT DESCRIPTOR TYPE CODE (26/07, 26/09); INVALID
FIELD IN PARAMETER LIST (26/00) with a field pointer; while copying, COPY ABORTED with COPY TARGET DEVICE
NOT REACHABLE (0D/02) for a CSCD index or designator that names no LU here, or with 00/00 and a segment
pointer (sense-key specific, SD=1) when a segment runs past the end of a LU.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .lu import LogicalUnit
from .sense import (
    INVALID_FIELD_IN_PARAMETER_LIST,
    NO_ADDITIONAL_SENSE,
    PARAMETER_LIST_LENGTH_ERROR,
    UNRECOVERED_READ_ERROR,
    WRITE_ERROR,
    CheckCondition,
    SenseKey,
    invalid_field,
    invalid_param,
)
from .task import ITNexus, ScsiResult, ScsiTask

if TYPE_CHECKING:
    from collections.abc import Iterable

COPY_ABORTED = 0x0A
COPY_TARGET_DEVICE_NOT_REACHABLE = (0x0D, 0x02)
TOO_MANY_TARGET_DESCRIPTORS = (0x26, 0x06)
UNSUPPORTED_TARGET_DESCRIPTOR_TYPE_CODE = (0x26, 0x07)
TOO_MANY_SEGMENT_DESCRIPTORS = (0x26, 0x08)
UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE_CODE = (0x26, 0x09)
OPERATION_IN_PROGRESS = (0x00, 0x16)

# Operating parameters (RECEIVE COPY RESULTS OPERATING PARAMETERS, VPD 0x8F).
MAX_CSCD_DESCRIPTORS = 8
MAX_SEGMENT_DESCRIPTORS = 64
MAX_DESCRIPTOR_LIST_LENGTH = 4096
MAX_CONCURRENT_COPIES = 16
HELD_RESULTS_PER_NEXUS = 32
COPY_CHUNK_BYTES = 1 << 20

TYPE_BLOCK_TO_BLOCK = 0x02
TYPE_IDENTIFICATION = 0xE4
SUPPORTED_DESCRIPTOR_TYPES = (TYPE_BLOCK_TO_BLOCK, TYPE_IDENTIFICATION)

SA_COPY_STATUS = 0x00
SA_RECEIVE_DATA = 0x01
SA_OPERATING_PARAMETERS = 0x03
SA_FAILED_SEGMENT_DETAILS = 0x04

HEADER_LEN = 16
CSCD_LEN = 32
B2B_LEN = 28
_B2B = struct.Struct(">HHxxHQQ")  # from byte 4: src idx, dst idx, (reserved), NUMBER OF BLOCKS, LBAs
_HEADER = struct.Struct(">BBH4xII")

STATUS_IN_PROGRESS = 0x00
STATUS_GOOD = 0x01
STATUS_ERROR = 0x02


def _aborted(asc_ascq: tuple[int, int], sks: bytes | None = None) -> CheckCondition:
    return CheckCondition(COPY_ABORTED, asc_ascq, sks=sks)


def _segment_pointer(param_offset: int) -> bytes:
    """SENSE KEY SPECIFIC segment pointer (SPC-4 4.5.2.4.6): SKSV=1, SD=1, byte offset of the field."""
    return bytes((0x80 | 0x20, (param_offset >> 8) & 0xFF, param_offset & 0xFF))


@dataclass(slots=True)
class CopyRecord:
    """What RECEIVE COPY RESULTS reports for one held LIST IDENTIFIER."""

    status: int = STATUS_IN_PROGRESS
    segments_processed: int = 0
    transfer_bytes: int = 0
    sense: bytes = b""


@dataclass(frozen=True, slots=True)
class Segment:
    src: int
    dst: int
    blocks: int
    src_lba: int
    dst_lba: int
    offset: int  # of the descriptor in the parameter list


class CopyManager:
    """Per-device-server copy manager state: held copy results by (I_T nexus, LIST IDENTIFIER)."""

    def __init__(self) -> None:
        self.held: dict[ITNexus, dict[int, CopyRecord]] = {}
        self.running = 0

    def record(self, nexus: ITNexus, list_id: int) -> CopyRecord:
        lists = self.held.setdefault(nexus, {})
        lists.pop(list_id, None)
        while len(lists) >= HELD_RESULTS_PER_NEXUS:  # forget the oldest held results
            del lists[next(iter(lists))]
        rec = lists[list_id] = CopyRecord()
        return rec

    def lookup(self, nexus: ITNexus, list_id: int) -> CopyRecord | None:
        return self.held.get(nexus, {}).get(list_id)

    def forget_nexus(self, nexus: ITNexus) -> None:
        self.held.pop(nexus, None)


def copy_manager(server: object) -> CopyManager:
    """The server's copy manager (created on first use)."""
    cm = getattr(server, "copy_manager", None)
    if not isinstance(cm, CopyManager):
        cm = CopyManager()
        server.copy_manager = cm  # type: ignore[attr-defined]
    return cm


def _server_luns(server: object, lu: LogicalUnit) -> Iterable[LogicalUnit]:
    luns = getattr(server, "luns", None)
    if not isinstance(luns, dict):
        return (lu,)
    return [c for c in luns.values() if isinstance(c, LogicalUnit)]  # block devices only


def _resolve_cscd(desc: memoryview, server: object, lu: LogicalUnit, offset: int) -> LogicalUnit | None:
    """The LU an identification descriptor CSCD descriptor names, or None when none here matches."""
    if desc[1] & 0x1F != 0x00:  # PERIPHERAL DEVICE TYPE: only block devices
        raise invalid_param(offset + 1, 4)
    code_set, assoc_type, _, length = desc[4], desc[5], desc[6], desc[7]
    if length > 16 or code_set & 0x0F != 0x01 or assoc_type & 0x30 or assoc_type & 0x0F != 0x03:
        return None  # only binary NAA designators of a logical unit identify a LU here
    designator = bytes(desc[8 : 8 + length])
    block_len = int.from_bytes(desc[29:32], "big")
    for cand in _server_luns(server, lu):
        if cand.naa_id == designator:
            if block_len != cand.block_size:
                raise invalid_param(offset + 29)
            return cand
    return None


def parse_parameter_list(
    data: memoryview, server: object, lu: LogicalUnit
) -> tuple[int, int, list[LogicalUnit | None], list[Segment]]:
    """Validate an EXTENDED COPY (LID1) parameter list; (list id, list id usage, CSCDs, segments)."""
    if len(data) < HEADER_LEN:
        raise CheckCondition(SenseKey.ILLEGAL_REQUEST, PARAMETER_LIST_LENGTH_ERROR)
    list_id, flags, tdl, sdl, inline = _HEADER.unpack_from(data, 0)
    usage = (flags >> 3) & 0x03
    if flags & 0x20:  # STR: no sequential striped processing promises to make
        raise invalid_param(1, 5)
    if usage == 0x01 or (usage == 0x03 and list_id != 0):
        raise invalid_param(1, 4)
    if tdl + sdl > MAX_DESCRIPTOR_LIST_LENGTH or HEADER_LEN + tdl + sdl + inline > len(data):
        raise CheckCondition(SenseKey.ILLEGAL_REQUEST, PARAMETER_LIST_LENGTH_ERROR)
    if inline:
        raise invalid_param(12)  # MAXIMUM INLINE DATA LENGTH is 0
    if tdl % CSCD_LEN:
        raise invalid_param(2)
    if tdl // CSCD_LEN > MAX_CSCD_DESCRIPTORS:
        raise CheckCondition(SenseKey.ILLEGAL_REQUEST, TOO_MANY_TARGET_DESCRIPTORS)
    # Count the segment descriptors before interpreting any of them.
    seg_offsets = []
    off, end = HEADER_LEN + tdl, HEADER_LEN + tdl + sdl
    while off < end:
        if off + 4 > end:
            raise CheckCondition(SenseKey.ILLEGAL_REQUEST, PARAMETER_LIST_LENGTH_ERROR)
        seg_offsets.append(off)
        off += 4 + int.from_bytes(data[off + 2 : off + 4], "big")
    if off != end:
        raise CheckCondition(SenseKey.ILLEGAL_REQUEST, PARAMETER_LIST_LENGTH_ERROR)
    if len(seg_offsets) > MAX_SEGMENT_DESCRIPTORS:
        raise CheckCondition(SenseKey.ILLEGAL_REQUEST, TOO_MANY_SEGMENT_DESCRIPTORS)
    cscds: list[LogicalUnit | None] = []
    for off in range(HEADER_LEN, HEADER_LEN + tdl, CSCD_LEN):
        if data[off] != TYPE_IDENTIFICATION:
            raise CheckCondition(SenseKey.ILLEGAL_REQUEST, UNSUPPORTED_TARGET_DESCRIPTOR_TYPE_CODE)
        # LU ID TYPE and NUL are obsolete in SPC-4 and ignored.
        cscds.append(_resolve_cscd(data[off : off + CSCD_LEN], server, lu, off))
    segments = []
    for off in seg_offsets:
        if data[off] != TYPE_BLOCK_TO_BLOCK:
            raise CheckCondition(SenseKey.ILLEGAL_REQUEST, UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE_CODE)
        if int.from_bytes(data[off + 2 : off + 4], "big") != B2B_LEN - 4:
            raise invalid_param(off + 2)
        src, dst, blocks, src_lba, dst_lba = _B2B.unpack_from(data, off + 4)
        segments.append(Segment(src, dst, blocks, src_lba, dst_lba, off))
    return list_id, usage, cscds, segments


async def _copy_segment(seg: Segment, cscds: list[LogicalUnit | None], rec: CopyRecord) -> None:
    if seg.src >= len(cscds) or seg.dst >= len(cscds):
        raise _aborted(COPY_TARGET_DEVICE_NOT_REACHABLE, _segment_pointer(seg.offset + 4))
    src, dst = cscds[seg.src], cscds[seg.dst]
    if src is None or dst is None or not src.medium_present or not dst.medium_present:
        raise _aborted(COPY_TARGET_DEVICE_NOT_REACHABLE, _segment_pointer(seg.offset + 4))
    if getattr(src, "sanitize", None) is not None or getattr(dst, "sanitize", None) is not None:
        raise _aborted(COPY_TARGET_DEVICE_NOT_REACHABLE, _segment_pointer(seg.offset + 4))
    if seg.src_lba + seg.blocks > src.num_blocks:
        raise _aborted(NO_ADDITIONAL_SENSE, _segment_pointer(seg.offset + 12))
    if seg.dst_lba + seg.blocks > dst.num_blocks:
        raise _aborted(NO_ADDITIONAL_SENSE, _segment_pointer(seg.offset + 20))
    dst.check_writable()
    bs = src.block_size
    per_chunk = max(1, COPY_CHUNK_BYTES // bs)
    buf = memoryview(bytearray(min(per_chunk, seg.blocks) * bs))
    done = 0
    while done < seg.blocks:
        count = min(per_chunk, seg.blocks - done)
        chunk = buf[: count * bs]
        try:
            await src.store.read_into((seg.src_lba + done) * bs, chunk)
        except OSError:
            raise _aborted(UNRECOVERED_READ_ERROR, _segment_pointer(seg.offset + 12)) from None
        lock = dst.range_lock
        start = seg.dst_lba + done
        token = lock.try_shared(start, start + count)
        if token is None:
            token = await lock.shared(start, start + count)
        try:
            await dst.store.write(start * bs, chunk)
        except OSError:
            raise _aborted(WRITE_ERROR, _segment_pointer(seg.offset + 20)) from None
        finally:
            lock.release(token)
        done += count
        rec.transfer_bytes += count * bs
    if not dst.wce:
        try:
            await dst.store.flush()
        except OSError:
            raise _aborted(WRITE_ERROR, _segment_pointer(seg.offset + 20)) from None


async def extended_copy(server: object, lu: LogicalUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    """EXTENDED COPY (LID1), SPC-4 6.3."""
    (length,) = struct.unpack_from(">I", cdb, 10)
    if length == 0:
        return ScsiResult(transfer_length=0)
    data = task.data_out
    if data is None or len(data) < length:
        raise CheckCondition(SenseKey.ILLEGAL_REQUEST, PARAMETER_LIST_LENGTH_ERROR)
    params = memoryview(data)[:length]
    list_id, usage, cscds, segments = parse_parameter_list(params, server, lu)
    cm = copy_manager(server)
    if usage != 0x03:
        prior = cm.lookup(task.nexus, list_id)
        if prior is not None and prior.status == STATUS_IN_PROGRESS:
            raise CheckCondition(SenseKey.ILLEGAL_REQUEST, OPERATION_IN_PROGRESS)
    if cm.running >= MAX_CONCURRENT_COPIES:
        raise CheckCondition(SenseKey.ILLEGAL_REQUEST, INVALID_FIELD_IN_PARAMETER_LIST)
    rec = cm.record(task.nexus, list_id) if usage == 0x00 else CopyRecord()
    cm.running += 1
    try:
        for seg in segments:
            await _copy_segment(seg, cscds, rec)
            rec.segments_processed += 1
    except CheckCondition as cc:
        rec.status = STATUS_ERROR
        rec.sense = cc.sense(lu.d_sense)
        raise
    finally:
        cm.running -= 1
    rec.status = STATUS_GOOD
    return ScsiResult(transfer_length=length)


def operating_parameters(lu: LogicalUnit) -> bytes:
    body = struct.pack(
        ">B3xHHIIIIIxxHBBBB3xB",
        0,  # SNLID: LID4 list identifiers are not supported
        MAX_CSCD_DESCRIPTORS,
        MAX_SEGMENT_DESCRIPTORS,
        MAX_DESCRIPTOR_LIST_LENGTH,
        0xFFFF * lu.block_size,  # MAXIMUM SEGMENT LENGTH (bytes): the NUMBER OF BLOCKS field's reach
        0,  # MAXIMUM INLINE DATA LENGTH
        0,  # HELD DATA LIMIT
        0,  # MAXIMUM STREAM DEVICE TRANSFER SIZE
        MAX_CONCURRENT_COPIES,  # TOTAL CONCURRENT COPIES
        MAX_CONCURRENT_COPIES,  # MAXIMUM CONCURRENT COPIES
        (lu.block_size.bit_length() - 1),  # DATA SEGMENT GRANULARITY (log2)
        0,  # INLINE DATA GRANULARITY
        0,  # HELD DATA GRANULARITY
        len(SUPPORTED_DESCRIPTOR_TYPES),
    ) + bytes(SUPPORTED_DESCRIPTOR_TYPES)
    return struct.pack(">I", len(body)) + body


async def receive_copy_results(server: object, lu: LogicalUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    """RECEIVE COPY RESULTS (SPC-4 6.18), the LID1 service actions and OPERATING PARAMETERS."""
    sa = cdb[1] & 0x1F
    list_id = cdb[2]
    (alloc,) = struct.unpack_from(">I", cdb, 10)
    if sa == SA_OPERATING_PARAMETERS:
        data = operating_parameters(lu)
    else:
        rec = copy_manager(server).lookup(task.nexus, list_id)
        if rec is None:
            raise invalid_field(2)
        if sa == SA_COPY_STATUS:
            units, count = 0x00, rec.transfer_bytes  # TRANSFER COUNT UNITS: bytes, KiB above 4 GiB
            if count > 0xFFFFFFFF:
                units, count = 0x01, count >> 10
            hdd = 0
            data = struct.pack(
                ">IBHBI", 8, hdd | rec.status, min(rec.segments_processed, 0xFFFF), units, count
            )
        elif sa == SA_RECEIVE_DATA:
            data = struct.pack(">I", 0)  # no held data
        else:  # FAILED SEGMENT DETAILS
            if rec.status == STATUS_IN_PROGRESS:
                raise invalid_field(2)
            sense = rec.sense
            body = bytes(52) + struct.pack(">BxH", 0x02 if sense else 0x00, len(sense)) + sense
            data = struct.pack(">I", len(body)) + body
    return ScsiResult(data_in=data[:alloc], transfer_length=alloc)


def third_party_copy_vpd(lu: LogicalUnit) -> bytes:
    """The body of VPD page 0x8F (SPC-4 7.8.17): supported commands, parameter data, descriptors,
    general copy operations."""

    def desc(kind: int, body: bytes) -> bytes:
        body += bytes(-(len(body) + 4) % 4)
        return struct.pack(">HH", kind, len(body)) + body

    cmds = bytes((0x83, 1, 0x00)) + bytes((0x84, 4, SA_COPY_STATUS, SA_RECEIVE_DATA, 3, 4))
    out = desc(0x0001, bytes((len(cmds),)) + cmds)
    out += desc(
        0x0008,
        struct.pack(
            ">4xHHII12x", MAX_CSCD_DESCRIPTORS, MAX_SEGMENT_DESCRIPTORS, MAX_DESCRIPTOR_LIST_LENGTH, 0
        ),
    )
    out += desc(0x0009, bytes((len(SUPPORTED_DESCRIPTOR_TYPES),)) + bytes(SUPPORTED_DESCRIPTOR_TYPES))
    out += desc(
        0x8001,
        struct.pack(
            ">IIIBB18x",
            MAX_CONCURRENT_COPIES,
            MAX_CONCURRENT_COPIES,
            0xFFFF * lu.block_size,
            lu.block_size.bit_length() - 1,
            0,
        ),
    )
    return out
