"""iSCSI PDU codec: the Basic Header Segment of every opcode, AHS and LUN encoding (RFC 7143 section 11).

Each PDU type is a slotted dataclass whose first fields are, in order, the fields of its 48-byte BHS from
byte 1 on (as its ``_LAYOUT`` struct unpacks them), so decoding is one ``unpack_from`` and one
constructor call.  Byte 0 (opcode and the I bit) and bytes 4..7 (TotalAHSLength, DataSegmentLength) are
handled here for every type: ``immediate``, ``ahs`` and ``data`` are ordinary attributes and the lengths
are derived from them when encoding.

Decoding never trusts the peer: unknown opcodes raise :class:`PduError` with the Reject reason to use.
Encoding returns the BHS (+AHS) as a ``bytearray``; the data segment is kept apart so the transport can
send header and payload with one ``writelines`` without copying the payload.
"""

from __future__ import annotations

import operator
import struct
from dataclasses import dataclass, field
from typing import ClassVar

from cistern.wire.bhs import PDU_CLASSES
from cistern.wire.bhs import data_in_header as data_in_header
from cistern.wire.bhs import decode_bhs as decode_bhs
from cistern.wire.bhs import decode_lun as decode_lun
from cistern.wire.bhs import encode_lun as encode_lun
from cistern.wire.bhs import r2t_header as r2t_header
from cistern.wire.bhs import scsi_response_header as scsi_response_header
from cistern.wire.constants import (
    BHS_LEN,
    CMD_ATTR_MASK,
    CMD_READ,
    CMD_WRITE,
    DATAIN_STATUS,
    FLAG_FINAL,
    LOGIN_CONTINUE,
    LOGIN_TRANSIT,
    RESERVED_TAG,
    TEXT_CONTINUE,
    AhsType,
    Opcode,
    RejectReason,
)
from cistern.wire.errors import PduError as PduError

Buffer = bytes | bytearray | memoryview


# --------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class PDU:
    """Common part of every PDU.  Subclasses add their BHS fields before these (see module doc)."""

    OPCODE: ClassVar[int] = -1
    _LAYOUT: ClassVar[struct.Struct]
    _FIELDS: ClassVar[tuple[str, ...]]
    _GET: ClassVar[operator.attrgetter[tuple[object, ...]]]

    immediate: bool = field(default=False, kw_only=True)
    ahs: bytes = field(default=b"", kw_only=True)
    data: Buffer = field(default=b"", kw_only=True)

    @property
    def opcode(self) -> int:
        return self.OPCODE

    def encode_header(self) -> bytearray:
        """BHS followed by the AHS (padded to 4 bytes); DataSegmentLength from ``len(self.data)``."""
        ahs = self.ahs
        if len(ahs) % 4:
            ahs = ahs + bytes(4 - len(ahs) % 4)
        buf = bytearray(BHS_LEN + len(ahs))
        self._LAYOUT.pack_into(buf, 1, *self._GET(self))
        buf[0] = self.OPCODE | (0x40 if self.immediate else 0)
        buf[4] = len(ahs) // 4
        buf[5:8] = len(self.data).to_bytes(3, "big")
        buf[BHS_LEN:] = ahs
        return buf

    def encode(self) -> bytes:
        """The whole PDU without digests, data padded to a multiple of 4 (tests, logging, Reject)."""
        data = bytes(self.data)
        return bytes(self.encode_header()) + data + bytes(-len(data) % 4)


def _layout(fmt: str, *names: str):
    """Class decorator: attach the BHS layout (bytes 1..47) and register the opcode."""
    layout = struct.Struct(">" + fmt)
    if layout.size != BHS_LEN - 1:
        raise AssertionError(f"layout {fmt} covers {layout.size} bytes, not 47")

    def apply(cls: type[PDU]) -> type[PDU]:
        cls._LAYOUT = layout
        cls._FIELDS = names
        cls._GET = operator.attrgetter(*names)
        PDU_CLASSES[cls.OPCODE] = cls
        return cls

    return apply


# Fragments of layouts.  "3x4x" skips bytes 2..3 plus 4..7 (lengths), "2x4x" skips byte 3 too, etc.
# Layouts start at byte 1.


@_layout("B2x4xQIIII16x", "flags", "lun", "itt", "ttt", "cmdsn", "expstatsn")
@dataclass(slots=True)
class NopOut(PDU):
    OPCODE: ClassVar[int] = Opcode.NOP_OUT
    flags: int = FLAG_FINAL
    lun: int = 0
    itt: int = RESERVED_TAG
    ttt: int = RESERVED_TAG
    cmdsn: int = 0
    expstatsn: int = 0


@_layout("B2x4xQIIIII12x", "flags", "lun", "itt", "ttt", "statsn", "expcmdsn", "maxcmdsn")
@dataclass(slots=True)
class NopIn(PDU):
    OPCODE: ClassVar[int] = Opcode.NOP_IN
    flags: int = FLAG_FINAL
    lun: int = 0
    itt: int = RESERVED_TAG
    ttt: int = RESERVED_TAG
    statsn: int = 0
    expcmdsn: int = 0
    maxcmdsn: int = 0


@_layout(
    "B2x4xQIIII16s",
    "flags",
    "lun",
    "itt",
    "expected_data_transfer_length",
    "cmdsn",
    "expstatsn",
    "cdb16",
)
@dataclass(slots=True)
class ScsiCommand(PDU):
    OPCODE: ClassVar[int] = Opcode.SCSI_COMMAND
    flags: int = FLAG_FINAL
    lun: int = 0
    itt: int = 0
    expected_data_transfer_length: int = 0
    cmdsn: int = 0
    expstatsn: int = 0
    cdb16: bytes = bytes(16)

    @property
    def final(self) -> bool:
        return bool(self.flags & FLAG_FINAL)

    @property
    def read(self) -> bool:
        return bool(self.flags & CMD_READ)

    @property
    def write(self) -> bool:
        return bool(self.flags & CMD_WRITE)

    @property
    def attribute(self) -> int:
        return self.flags & CMD_ATTR_MASK

    def parse_ahs(self) -> tuple[bytes, int | None]:
        """(full CDB, bidirectional expected read length) from the BHS and the AHS segments."""
        cdb = self.cdb16
        bidi_len: int | None = None
        ahs = self.ahs
        pos = 0
        while pos < len(ahs):
            if pos + 4 > len(ahs):
                raise PduError("truncated AHS", RejectReason.INVALID_PDU_FIELD)
            length = int.from_bytes(ahs[pos : pos + 2], "big")
            kind = ahs[pos + 2]
            body = ahs[pos + 3 : pos + 3 + length]
            if len(body) < length:
                raise PduError("AHS length beyond TotalAHSLength", RejectReason.INVALID_PDU_FIELD)
            if kind == AhsType.EXTENDED_CDB and length >= 1:
                cdb = cdb + bytes(body[1:])  # first byte of the AHS-specific field is reserved
            elif kind == AhsType.BIDI_READ_LENGTH and length == 5:
                bidi_len = int.from_bytes(body[1:5], "big")
            else:
                raise PduError(f"unsupported AHS type {kind}", RejectReason.INVALID_PDU_FIELD)
            pos += 3 + length
            pos += -pos % 4
        return cdb, bidi_len


@_layout(
    "BBB4xQIIIIIIII",
    "flags",
    "response",
    "status",
    "reserved_lun",
    "itt",
    "snack_tag",
    "statsn",
    "expcmdsn",
    "maxcmdsn",
    "expdatasn",
    "bidi_residual_count",
    "residual_count",
)
@dataclass(slots=True)
class ScsiResponse(PDU):
    OPCODE: ClassVar[int] = Opcode.SCSI_RESPONSE
    flags: int = FLAG_FINAL
    response: int = 0
    status: int = 0
    reserved_lun: int = 0
    itt: int = 0
    snack_tag: int = 0
    statsn: int = 0
    expcmdsn: int = 0
    maxcmdsn: int = 0
    expdatasn: int = 0
    bidi_residual_count: int = 0
    residual_count: int = 0

    def sense(self) -> bytes:
        """The sense data carried in the data segment (SenseLength + sense), or b''."""
        data = bytes(self.data)
        if len(data) < 2:
            return b""
        n = int.from_bytes(data[:2], "big")
        return data[2 : 2 + n]


@_layout(
    "B2x4xQIIIIII8x",
    "flags",
    "lun",
    "itt",
    "referenced_task_tag",
    "cmdsn",
    "expstatsn",
    "refcmdsn",
    "expdatasn",
)
@dataclass(slots=True)
class TaskMgmtRequest(PDU):
    OPCODE: ClassVar[int] = Opcode.TASK_MGMT_REQUEST
    flags: int = FLAG_FINAL
    lun: int = 0
    itt: int = 0
    referenced_task_tag: int = RESERVED_TAG
    cmdsn: int = 0
    expstatsn: int = 0
    refcmdsn: int = 0
    expdatasn: int = 0

    @property
    def function(self) -> int:
        return self.flags & 0x7F


@_layout("BB1x4x8xI4xIII12x", "flags", "response", "itt", "statsn", "expcmdsn", "maxcmdsn")
@dataclass(slots=True)
class TaskMgmtResponse(PDU):
    OPCODE: ClassVar[int] = Opcode.TASK_MGMT_RESPONSE
    flags: int = FLAG_FINAL
    response: int = 0
    itt: int = 0
    statsn: int = 0
    expcmdsn: int = 0
    maxcmdsn: int = 0


@_layout("B2x4xQII4xI4xII4x", "flags", "lun", "itt", "ttt", "expstatsn", "datasn", "buffer_offset")
@dataclass(slots=True)
class DataOut(PDU):
    OPCODE: ClassVar[int] = Opcode.DATA_OUT
    flags: int = 0
    lun: int = 0
    itt: int = 0
    ttt: int = RESERVED_TAG
    expstatsn: int = 0
    datasn: int = 0
    buffer_offset: int = 0

    @property
    def final(self) -> bool:
        return bool(self.flags & FLAG_FINAL)


@_layout(
    "B1xB4xQIIIIIIII",
    "flags",
    "status",
    "lun",
    "itt",
    "ttt",
    "statsn",
    "expcmdsn",
    "maxcmdsn",
    "datasn",
    "buffer_offset",
    "residual_count",
)
@dataclass(slots=True)
class DataIn(PDU):
    OPCODE: ClassVar[int] = Opcode.DATA_IN
    flags: int = 0
    status: int = 0
    lun: int = 0
    itt: int = 0
    ttt: int = RESERVED_TAG
    statsn: int = 0
    expcmdsn: int = 0
    maxcmdsn: int = 0
    datasn: int = 0
    buffer_offset: int = 0
    residual_count: int = 0

    @property
    def final(self) -> bool:
        return bool(self.flags & FLAG_FINAL)

    @property
    def has_status(self) -> bool:
        return bool(self.flags & DATAIN_STATUS)


@_layout(
    "B2x4xQIIIIIIII",
    "flags",
    "lun",
    "itt",
    "ttt",
    "statsn",
    "expcmdsn",
    "maxcmdsn",
    "r2tsn",
    "buffer_offset",
    "desired_data_transfer_length",
)
@dataclass(slots=True)
class R2T(PDU):
    OPCODE: ClassVar[int] = Opcode.R2T
    flags: int = FLAG_FINAL
    lun: int = 0
    itt: int = 0
    ttt: int = 0
    statsn: int = 0
    expcmdsn: int = 0
    maxcmdsn: int = 0
    r2tsn: int = 0
    buffer_offset: int = 0
    desired_data_transfer_length: int = 0


@_layout(
    "B2x4xQI4xIIIBBHHH4x",
    "flags",
    "lun",
    "itt",
    "statsn",
    "expcmdsn",
    "maxcmdsn",
    "async_event",
    "async_vcode",
    "parameter1",
    "parameter2",
    "parameter3",
)
@dataclass(slots=True)
class AsyncMessage(PDU):
    OPCODE: ClassVar[int] = Opcode.ASYNC_MESSAGE
    flags: int = FLAG_FINAL
    lun: int = 0
    itt: int = RESERVED_TAG
    statsn: int = 0
    expcmdsn: int = 0
    maxcmdsn: int = 0
    async_event: int = 0
    async_vcode: int = 0
    parameter1: int = 0
    parameter2: int = 0
    parameter3: int = 0


@_layout("B2x4xQIIII16x", "flags", "lun", "itt", "ttt", "cmdsn", "expstatsn")
@dataclass(slots=True)
class TextRequest(PDU):
    OPCODE: ClassVar[int] = Opcode.TEXT_REQUEST
    flags: int = FLAG_FINAL
    lun: int = 0
    itt: int = 0
    ttt: int = RESERVED_TAG
    cmdsn: int = 0
    expstatsn: int = 0

    @property
    def final(self) -> bool:
        return bool(self.flags & FLAG_FINAL)

    @property
    def cont(self) -> bool:
        return bool(self.flags & TEXT_CONTINUE)


@_layout("B2x4xQIIIII12x", "flags", "lun", "itt", "ttt", "statsn", "expcmdsn", "maxcmdsn")
@dataclass(slots=True)
class TextResponse(PDU):
    OPCODE: ClassVar[int] = Opcode.TEXT_RESPONSE
    flags: int = FLAG_FINAL
    lun: int = 0
    itt: int = 0
    ttt: int = RESERVED_TAG
    statsn: int = 0
    expcmdsn: int = 0
    maxcmdsn: int = 0

    @property
    def final(self) -> bool:
        return bool(self.flags & FLAG_FINAL)

    @property
    def cont(self) -> bool:
        return bool(self.flags & TEXT_CONTINUE)


class _LoginFlags:
    """Accessors shared by Login Request and Login Response (byte 1: T C . . CSG NSG)."""

    __slots__ = ()
    flags: int

    @property
    def transit(self) -> bool:
        return bool(self.flags & LOGIN_TRANSIT)

    @property
    def cont(self) -> bool:
        return bool(self.flags & LOGIN_CONTINUE)

    @property
    def csg(self) -> int:
        return (self.flags >> 2) & 3

    @property
    def nsg(self) -> int:
        return self.flags & 3


def login_flags(transit: bool, cont: bool, csg: int, nsg: int) -> int:
    return (LOGIN_TRANSIT if transit else 0) | (LOGIN_CONTINUE if cont else 0) | (csg & 3) << 2 | (nsg & 3)


@_layout(
    "BBB4x6sHIH2xII16x",
    "flags",
    "version_max",
    "version_min",
    "isid",
    "tsih",
    "itt",
    "cid",
    "cmdsn",
    "expstatsn",
)
@dataclass(slots=True)
class LoginRequest(_LoginFlags, PDU):
    OPCODE: ClassVar[int] = Opcode.LOGIN_REQUEST
    flags: int = 0
    version_max: int = 0
    version_min: int = 0
    isid: bytes = bytes(6)
    tsih: int = 0
    itt: int = 0
    cid: int = 0
    cmdsn: int = 0
    expstatsn: int = 0


@_layout(
    "BBB4x6sHI4xIIIBB10x",
    "flags",
    "version_max",
    "version_active",
    "isid",
    "tsih",
    "itt",
    "statsn",
    "expcmdsn",
    "maxcmdsn",
    "status_class",
    "status_detail",
)
@dataclass(slots=True)
class LoginResponse(_LoginFlags, PDU):
    OPCODE: ClassVar[int] = Opcode.LOGIN_RESPONSE
    flags: int = 0
    version_max: int = 0
    version_active: int = 0
    isid: bytes = bytes(6)
    tsih: int = 0
    itt: int = 0
    statsn: int = 0
    expcmdsn: int = 0
    maxcmdsn: int = 0
    status_class: int = 0
    status_detail: int = 0


@_layout("B2x4x8xIH2xII16x", "flags", "itt", "cid", "cmdsn", "expstatsn")
@dataclass(slots=True)
class LogoutRequest(PDU):
    OPCODE: ClassVar[int] = Opcode.LOGOUT_REQUEST
    flags: int = FLAG_FINAL
    itt: int = 0
    cid: int = 0
    cmdsn: int = 0
    expstatsn: int = 0

    @property
    def reason(self) -> int:
        return self.flags & 0x7F


@_layout(
    "BB1x4x8xI4xIII4xHH4x",
    "flags",
    "response",
    "itt",
    "statsn",
    "expcmdsn",
    "maxcmdsn",
    "time2wait",
    "time2retain",
)
@dataclass(slots=True)
class LogoutResponse(PDU):
    OPCODE: ClassVar[int] = Opcode.LOGOUT_RESPONSE
    flags: int = FLAG_FINAL
    response: int = 0
    itt: int = 0
    statsn: int = 0
    expcmdsn: int = 0
    maxcmdsn: int = 0
    time2wait: int = 0
    time2retain: int = 0


@_layout("B2x4xQII4xI8xII", "flags", "lun", "itt", "ttt", "expstatsn", "begrun", "runlength")
@dataclass(slots=True)
class SnackRequest(PDU):
    OPCODE: ClassVar[int] = Opcode.SNACK_REQUEST
    flags: int = FLAG_FINAL
    lun: int = 0
    itt: int = 0
    ttt: int = RESERVED_TAG
    expstatsn: int = 0
    begrun: int = 0
    runlength: int = 0

    @property
    def snack_type(self) -> int:
        return self.flags & 0x0F


@_layout("BB1x4x8xI4xIIII8x", "flags", "reason", "itt", "statsn", "expcmdsn", "maxcmdsn", "datasn_r2tsn")
@dataclass(slots=True)
class Reject(PDU):
    OPCODE: ClassVar[int] = Opcode.REJECT
    flags: int = FLAG_FINAL
    reason: int = 0
    itt: int = RESERVED_TAG
    statsn: int = 0
    expcmdsn: int = 0
    maxcmdsn: int = 0
    datasn_r2tsn: int = 0


# --------------------------------------------------------------------------------------------------


def pdu_class(opcode: int) -> type[PDU] | None:
    return PDU_CLASSES.get(opcode)


def header_lengths(bhs: Buffer) -> tuple[int, int]:
    """(TotalAHSLength in bytes, DataSegmentLength) from a BHS."""
    return bhs[4] * 4, (bhs[5] << 16) | (bhs[6] << 8) | bhs[7]


def decode(raw: Buffer) -> PDU:
    """Decode one complete PDU without digests (tests and tools; the transport uses the framer)."""
    mv = memoryview(raw)
    ahs_len, dlen = header_lengths(mv)
    end_ahs = BHS_LEN + ahs_len
    if len(mv) < end_ahs + dlen:
        raise PduError("PDU shorter than its lengths say")
    pdu = decode_bhs(mv[:BHS_LEN], bytes(mv[BHS_LEN:end_ahs]))
    pdu.data = bytes(mv[end_ahs : end_ahs + dlen])
    return pdu


def sense_segment(sense: bytes) -> bytes:
    """The SCSI Response data segment for sense data: SenseLength (2 bytes) + sense (RFC 7143 11.4.7)."""
    return len(sense).to_bytes(2, "big") + sense


def data_in_status_flags(final: bool, status: bool) -> int:
    return (FLAG_FINAL if final else 0) | (DATAIN_STATUS if status else 0)


@dataclass(slots=True)
class RejectInfo:
    """Why we reject a PDU, with the header to echo back (RFC 7143 11.17: the rejected BHS)."""

    reason: RejectReason
    header: bytes = field(default=b"")
