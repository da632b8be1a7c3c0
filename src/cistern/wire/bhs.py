"""The BHS work on every SCSI command's path that builds no PDU object: LUN field encoding (SAM-5 4.7)
and the header templates of the target's per-command PDUs (SCSI Data-In, SCSI Response, R2T; RFC 7143
11.7, 11.4, 11.8).

They are plain functions over ints and bytes; :mod:`cistern.wire.pdu` re-exports them, so
``pdu.encode_lun`` and ``pdu.data_in_header`` are the same functions.
"""

from __future__ import annotations

import struct
from typing import Final

from cistern.wire.constants import FLAG_FINAL, RESERVED_TAG, Opcode

__all__ = [
    "data_in_header",
    "decode_lun",
    "encode_lun",
    "r2t_header",
    "scsi_response_header",
]


# --------------------------------------------------------------------------------------------------
# LUN encoding (SAM-5 4.7: peripheral device addressing below 256, flat space addressing above)


def encode_lun(lun: int) -> int:
    """The 8-byte LUN field (as a big-endian integer) for a LUN number 0..16383."""
    if not 0 <= lun < 16384:
        raise ValueError(f"LUN {lun} out of range 0..16383")
    if lun < 256:
        return lun << 48
    return (0x4000 | lun) << 48


def decode_lun(field64: int) -> int:
    """The LUN number from an 8-byte LUN field; unsupported address methods give -1 (no such LUN)."""
    first = field64 >> 48
    method = first >> 14
    if field64 & 0xFFFFFFFFFFFF:
        return -1  # second-level addressing: not something we export
    if method == 0:  # peripheral device addressing, bus 0
        return -1 if first & 0x3F00 else first & 0xFF
    if method == 1:  # flat space
        return first & 0x3FFF
    return -1


# --------------------------------------------------------------------------------------------------
# Header templates for the target's per-command PDUs: the whole 48-byte BHS in one precompiled
# ``struct.pack``, no dataclass built per PDU.  Same bytes as the dataclasses' ``encode_header`` (checked by
# tests/unit/test_pdu.py).  DataSegmentLength must be below 2**24 (bytes 4..7 are packed as one word with
# TotalAHSLength 0); the target never sends more than MaxRecvDataSegmentLength <= 2**24 - 1.

# bound pack methods: compiled, a method called by name is looked up on every call
_PACK_DATA_IN: Final = struct.Struct(">BBxBIQIIIIIIII").pack  # RFC 7143 11.7
_PACK_SCSI_RESPONSE: Final = struct.Struct(">BBBBI8xIIIIIIII").pack  # RFC 7143 11.4
_PACK_R2T: Final = struct.Struct(">BB2xIQIIIIIIII").pack  # RFC 7143 11.8
_OP_DATA_IN: Final = int(Opcode.DATA_IN)
_OP_SCSI_RESPONSE: Final = int(Opcode.SCSI_RESPONSE)
_OP_R2T: Final = int(Opcode.R2T)


def data_in_header(
    flags: int,
    status: int,
    lun: int,
    itt: int,
    statsn: int,
    expcmdsn: int,
    maxcmdsn: int,
    datasn: int,
    buffer_offset: int,
    residual_count: int,
    data_length: int,
) -> bytes:
    """The BHS of a SCSI Data-In PDU (TTT 0xffffffff) carrying ``data_length`` bytes (RFC 7143 11.7)."""
    return _PACK_DATA_IN(
        _OP_DATA_IN, flags, status, data_length, lun, itt, RESERVED_TAG, statsn, expcmdsn, maxcmdsn,
        datasn, buffer_offset, residual_count,
    )  # fmt: skip


def scsi_response_header(
    flags: int,
    response: int,
    status: int,
    itt: int,
    statsn: int,
    expcmdsn: int,
    maxcmdsn: int,
    expdatasn: int,
    residual_count: int,
    data_length: int,
) -> bytes:
    """The BHS of a SCSI Response (SNACK Tag and Bidirectional Read Residual Count 0; RFC 7143 11.4)."""
    return _PACK_SCSI_RESPONSE(
        _OP_SCSI_RESPONSE, flags, response, status, data_length, itt, 0, statsn, expcmdsn, maxcmdsn,
        expdatasn, 0, residual_count,
    )  # fmt: skip


def r2t_header(
    lun: int,
    itt: int,
    ttt: int,
    statsn: int,
    expcmdsn: int,
    maxcmdsn: int,
    r2tsn: int,
    buffer_offset: int,
    desired_data_transfer_length: int,
) -> bytes:
    """The BHS of an R2T (F bit set, no data segment; RFC 7143 11.8)."""
    return _PACK_R2T(
        _OP_R2T, FLAG_FINAL, 0, lun, itt, ttt, statsn, expcmdsn, maxcmdsn, r2tsn, buffer_offset,
        desired_data_transfer_length,
    )  # fmt: skip
