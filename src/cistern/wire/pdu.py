"""iSCSI PDU codec: the Basic Header Segment of every opcode, AHS and LUN encoding (RFC 7143 section 11).

Each PDU type is a slotted dataclass whose first fields are, in order, the fields of its 48-byte BHS from
byte 1 on (as the struct registered for it by ``_register`` right after the class unpacks them), so
decoding is one ``unpack_from`` and one constructor call.  The optional accelerator compiles this module
(the classes become native: compiled readers get their fields directly), which is why the layout is
registered in a table rather than kept on the class (docs/design.md, "The optional compiled accelerator").  Byte 0 (opcode and the I bit) and bytes 4..7 (TotalAHSLength, DataSegmentLength) are
handled here for every type: ``immediate``, ``ahs`` and ``data`` are ordinary attributes and the lengths
are derived from them when encoding.

Decoding never trusts the peer: unknown opcodes raise :class:`PduError` with the Reject reason to use.
Encoding returns the BHS (+AHS) as a ``bytearray``; the data segment is kept apart so the transport can
send header and payload with one ``writelines`` without copying the payload.
"""

from __future__ import annotations

import operator
import struct
from dataclasses import dataclass, field, fields
from typing import Any, Final

from cistern.wire.bhs import data_in_header as data_in_header
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

    immediate: bool = field(default=False, kw_only=True)
    ahs: bytes = field(default=b"", kw_only=True)
    data: Buffer = field(default=b"", kw_only=True)

    @property
    def opcode(self) -> int:
        return _CODECS[type(self)].opcode

    def encode_header(self) -> bytearray:
        """BHS followed by the AHS (padded to 4 bytes); DataSegmentLength from ``len(self.data)``."""
        codec = _CODECS[type(self)]
        ahs = self.ahs
        if len(ahs) % 4:
            ahs = ahs + bytes(4 - len(ahs) % 4)
        buf = bytearray(BHS_LEN + len(ahs))
        codec.layout.pack_into(buf, 1, *codec.get(self))
        buf[0] = codec.opcode | (0x40 if self.immediate else 0)
        buf[4] = len(ahs) // 4
        buf[5:8] = len(self.data).to_bytes(3, "big")
        buf[BHS_LEN:] = ahs
        return buf

    def encode(self) -> bytes:
        """The whole PDU without digests, data padded to a multiple of 4 (tests, logging, Reject)."""
        data = bytes(self.data)
        return bytes(self.encode_header()) + data + bytes(-len(data) % 4)


class _Codec:
    """How one PDU class maps to its BHS: the opcode, the struct of bytes 1..47 and a getter of the
    fields it packs (the class's leading dataclass fields, in layout order)."""

    __slots__ = ("cls", "get", "layout", "opcode")

    def __init__(self, cls: type[PDU], opcode: int, layout: struct.Struct, names: list[str]) -> None:
        self.cls: Any = cls  # called with the unpacked fields (its subclass constructor, not PDU's)
        self.opcode = opcode
        self.layout = layout
        self.get = operator.attrgetter(*names)


#: the codec of each PDU class, and of each opcode (PDU_CLASSES: the decoder's table)
_CODECS: Final[dict[type[PDU], _Codec]] = {}
PDU_CLASSES: Final[dict[int, _Codec]] = {}


def _register(cls: type[PDU], opcode: int, fmt: str) -> struct.Struct:
    """Register ``cls`` as the PDU of ``opcode`` whose BHS bytes 1..47 are ``fmt`` (a struct format,
    big-endian) carrying its leading fields in order; returns the layout.  The PDU classes are native
    classes when the accelerator compiles this module, so the layout is kept here, not on the class."""
    layout = struct.Struct(">" + fmt)
    names = [f.name for f in fields(cls) if not f.kw_only]
    if layout.size != BHS_LEN - 1 or len(layout.unpack(bytes(BHS_LEN - 1))) != len(names):
        raise AssertionError(f"layout {fmt} of {cls.__name__} does not carry its {len(names)} fields")
    _CODECS[cls] = PDU_CLASSES[opcode] = _Codec(cls, opcode, layout, names)
    return layout


# Fragments of layouts.  "3x4x" skips bytes 2..3 plus 4..7 (lengths), "2x4x" skips byte 3 too, etc.
# Layouts start at byte 1.


@dataclass(slots=True)
class NopOut(PDU):
    flags: int = FLAG_FINAL
    lun: int = 0
    itt: int = RESERVED_TAG
    ttt: int = RESERVED_TAG
    cmdsn: int = 0
    expstatsn: int = 0


_register(NopOut, Opcode.NOP_OUT, "B2x4xQIIII16x")


@dataclass(slots=True)
class NopIn(PDU):
    flags: int = FLAG_FINAL
    lun: int = 0
    itt: int = RESERVED_TAG
    ttt: int = RESERVED_TAG
    statsn: int = 0
    expcmdsn: int = 0
    maxcmdsn: int = 0


_register(NopIn, Opcode.NOP_IN, "B2x4xQIIIII12x")


@dataclass(slots=True)
class ScsiCommand(PDU):
    flags: int = FLAG_FINAL
    lun: int = 0
    itt: int = 0
    expected_data_transfer_length: int = 0
    cmdsn: int = 0
    expstatsn: int = 0
    cdb16: bytes = bytes(16)

    # Written out (the dataclass keeps a class's own __init__) because the framer builds one per command:
    # compiled, it is a direct call instead of the generated Python __init__.  Same parameters as the fields.
    def __init__(
        self,
        flags: int = FLAG_FINAL,
        lun: int = 0,
        itt: int = 0,
        expected_data_transfer_length: int = 0,
        cmdsn: int = 0,
        expstatsn: int = 0,
        cdb16: bytes = bytes(16),
        *,
        immediate: bool = False,
        ahs: bytes = b"",
        data: Buffer = b"",
    ) -> None:
        self.flags = flags
        self.lun = lun
        self.itt = itt
        self.expected_data_transfer_length = expected_data_transfer_length
        self.cmdsn = cmdsn
        self.expstatsn = expstatsn
        self.cdb16 = cdb16
        self.immediate = immediate
        self.ahs = ahs
        self.data = data

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


# (decode_bhs calls the bound unpack_from: compiled, a method called by name is looked up on every call)
_UNPACK_SCSI_COMMAND: Final = _register(ScsiCommand, Opcode.SCSI_COMMAND, "B2x4xQIIII16s").unpack_from


@dataclass(slots=True)
class ScsiResponse(PDU):
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


_register(ScsiResponse, Opcode.SCSI_RESPONSE, "BBB4xQIIIIIIII")


@dataclass(slots=True)
class TaskMgmtRequest(PDU):
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


_register(TaskMgmtRequest, Opcode.TASK_MGMT_REQUEST, "B2x4xQIIIIII8x")


@dataclass(slots=True)
class TaskMgmtResponse(PDU):
    flags: int = FLAG_FINAL
    response: int = 0
    itt: int = 0
    statsn: int = 0
    expcmdsn: int = 0
    maxcmdsn: int = 0


_register(TaskMgmtResponse, Opcode.TASK_MGMT_RESPONSE, "BB1x4x8xI4xIII12x")


@dataclass(slots=True)
class DataOut(PDU):
    flags: int = 0
    lun: int = 0
    itt: int = 0
    ttt: int = RESERVED_TAG
    expstatsn: int = 0
    datasn: int = 0
    buffer_offset: int = 0

    # written out for the framer, as ScsiCommand's
    def __init__(
        self,
        flags: int = 0,
        lun: int = 0,
        itt: int = 0,
        ttt: int = RESERVED_TAG,
        expstatsn: int = 0,
        datasn: int = 0,
        buffer_offset: int = 0,
        *,
        immediate: bool = False,
        ahs: bytes = b"",
        data: Buffer = b"",
    ) -> None:
        self.flags = flags
        self.lun = lun
        self.itt = itt
        self.ttt = ttt
        self.expstatsn = expstatsn
        self.datasn = datasn
        self.buffer_offset = buffer_offset
        self.immediate = immediate
        self.ahs = ahs
        self.data = data

    @property
    def final(self) -> bool:
        return bool(self.flags & FLAG_FINAL)


_UNPACK_DATA_OUT: Final = _register(DataOut, Opcode.DATA_OUT, "B2x4xQII4xI4xII4x").unpack_from


@dataclass(slots=True)
class DataIn(PDU):
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


_register(DataIn, Opcode.DATA_IN, "B1xB4xQIIIIIIII")


@dataclass(slots=True)
class R2T(PDU):
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


_register(R2T, Opcode.R2T, "B2x4xQIIIIIIII")


@dataclass(slots=True)
class AsyncMessage(PDU):
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


_register(AsyncMessage, Opcode.ASYNC_MESSAGE, "B2x4xQI4xIIIBBHHH4x")


@dataclass(slots=True)
class TextRequest(PDU):
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


_register(TextRequest, Opcode.TEXT_REQUEST, "B2x4xQIIII16x")


@dataclass(slots=True)
class TextResponse(PDU):
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


_register(TextResponse, Opcode.TEXT_RESPONSE, "B2x4xQIIIII12x")


@dataclass(slots=True)
class _Login(PDU):
    """Login Request and Login Response: byte 1 is T C . . CSG NSG (RFC 7143 11.12, 11.13)."""

    flags: int = 0

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


@dataclass(slots=True)
class LoginRequest(_Login):
    flags: int = 0
    version_max: int = 0
    version_min: int = 0
    isid: bytes = bytes(6)
    tsih: int = 0
    itt: int = 0
    cid: int = 0
    cmdsn: int = 0
    expstatsn: int = 0


_register(LoginRequest, Opcode.LOGIN_REQUEST, "BBB4x6sHIH2xII16x")


@dataclass(slots=True)
class LoginResponse(_Login):
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


_register(LoginResponse, Opcode.LOGIN_RESPONSE, "BBB4x6sHI4xIIIBB10x")


@dataclass(slots=True)
class LogoutRequest(PDU):
    flags: int = FLAG_FINAL
    itt: int = 0
    cid: int = 0
    cmdsn: int = 0
    expstatsn: int = 0

    @property
    def reason(self) -> int:
        return self.flags & 0x7F


_register(LogoutRequest, Opcode.LOGOUT_REQUEST, "B2x4x8xIH2xII16x")


@dataclass(slots=True)
class LogoutResponse(PDU):
    flags: int = FLAG_FINAL
    response: int = 0
    itt: int = 0
    statsn: int = 0
    expcmdsn: int = 0
    maxcmdsn: int = 0
    time2wait: int = 0
    time2retain: int = 0


_register(LogoutResponse, Opcode.LOGOUT_RESPONSE, "BB1x4x8xI4xIII4xHH4x")


@dataclass(slots=True)
class SnackRequest(PDU):
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


_register(SnackRequest, Opcode.SNACK_REQUEST, "B2x4xQII4xI8xII")


@dataclass(slots=True)
class Reject(PDU):
    flags: int = FLAG_FINAL
    reason: int = 0
    itt: int = RESERVED_TAG
    statsn: int = 0
    expcmdsn: int = 0
    maxcmdsn: int = 0
    datasn_r2tsn: int = 0


_register(Reject, Opcode.REJECT, "BB1x4x8xI4xIIII8x")


# --------------------------------------------------------------------------------------------------


def pdu_class(opcode: int) -> type[PDU] | None:
    codec = PDU_CLASSES.get(opcode)
    return None if codec is None else codec.cls


_OP_SCSI_COMMAND: Final = int(Opcode.SCSI_COMMAND)
_OP_DATA_OUT: Final = int(Opcode.DATA_OUT)


def decode_bhs(bhs: Buffer, ahs: bytes = b"") -> PDU:
    """Decode a 48-byte BHS (plus its AHS bytes).  The data segment is attached by the caller.  Raises
    PduError: a short BHS (Reject reason PROTOCOL_ERROR), an unknown opcode (COMMAND_NOT_SUPPORTED)."""
    if len(bhs) < BHS_LEN:
        raise PduError(f"truncated BHS ({len(bhs)} bytes)")
    first = bhs[0]
    opcode = first & 0x3F
    immediate = bool(first & 0x40)
    pdu: PDU
    if opcode == _OP_SCSI_COMMAND:  # the per-command ones: a direct constructor call when compiled
        flags, lun, itt, edtl, cmdsn, expstatsn, cdb16 = _UNPACK_SCSI_COMMAND(bhs, 1)
        pdu = ScsiCommand(flags, lun, itt, edtl, cmdsn, expstatsn, cdb16, immediate=immediate)
    elif opcode == _OP_DATA_OUT:
        flags, lun, itt, ttt, expstatsn, datasn, offset = _UNPACK_DATA_OUT(bhs, 1)
        pdu = DataOut(flags, lun, itt, ttt, expstatsn, datasn, offset, immediate=immediate)
    else:
        codec = PDU_CLASSES.get(opcode)
        if codec is None:
            raise PduError(f"unknown opcode 0x{opcode:02x}", RejectReason.COMMAND_NOT_SUPPORTED)
        pdu = codec.cls(*codec.layout.unpack_from(bhs, 1))
        pdu.immediate = immediate
    if ahs:
        pdu.ahs = bytes(ahs)
    return pdu


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
