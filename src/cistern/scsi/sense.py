"""Sense data (SPC-4 section 4.5): keys, ASC/ASCQ pairs, fixed and descriptor formats.

Handlers signal an error by raising :class:`CheckCondition`; the device server catches it and encodes
the sense in the format the control mode page's D_SENSE bit selects.  Nothing here escapes to the
transport.
"""

from __future__ import annotations

import enum
import struct


class SenseKey(enum.IntEnum):
    NO_SENSE = 0x0
    RECOVERED_ERROR = 0x1
    NOT_READY = 0x2
    MEDIUM_ERROR = 0x3
    HARDWARE_ERROR = 0x4
    ILLEGAL_REQUEST = 0x5
    UNIT_ATTENTION = 0x6
    DATA_PROTECT = 0x7
    BLANK_CHECK = 0x8
    ABORTED_COMMAND = 0xB
    VOLUME_OVERFLOW = 0xD
    MISCOMPARE = 0xE


# Stream-command bits of the sense data (SSC-3 4.2.7; byte 2 of fixed sense, stream commands descriptor).
FILEMARK = 0x80
EOM = 0x40
ILI = 0x20


# (ASC, ASCQ) pairs, SPC-4 annex D names.
NO_ADDITIONAL_SENSE = (0x00, 0x00)
FILEMARK_DETECTED = (0x00, 0x01)
END_OF_PARTITION_MEDIUM_DETECTED = (0x00, 0x02)
BEGINNING_OF_PARTITION_MEDIUM_DETECTED = (0x00, 0x04)
END_OF_DATA_DETECTED = (0x00, 0x05)
LOGICAL_UNIT_NOT_READY_INIT_REQUIRED = (0x04, 0x02)
WRITE_ERROR = (0x0C, 0x00)
INVALID_FIELD_IN_COMMAND_IU = (0x0E, 0x03)
UNRECOVERED_READ_ERROR = (0x11, 0x00)
PARAMETER_LIST_LENGTH_ERROR = (0x1A, 0x00)
MISCOMPARE_DURING_VERIFY = (0x1D, 0x00)
INVALID_COMMAND_OPERATION_CODE = (0x20, 0x00)
LBA_OUT_OF_RANGE = (0x21, 0x00)
INVALID_FIELD_IN_CDB = (0x24, 0x00)
LOGICAL_UNIT_NOT_SUPPORTED = (0x25, 0x00)
INVALID_FIELD_IN_PARAMETER_LIST = (0x26, 0x00)
INVALID_RELEASE_OF_PERSISTENT_RESERVATION = (0x26, 0x04)
WRITE_PROTECTED = (0x27, 0x00)
SOFTWARE_WRITE_PROTECTED = (0x27, 0x02)
POWER_ON_RESET = (0x29, 0x00)
POWER_ON_OCCURRED = (0x29, 0x01)
SCSI_BUS_RESET_OCCURRED = (0x29, 0x02)
BUS_DEVICE_RESET_FUNCTION_OCCURRED = (0x29, 0x03)
I_T_NEXUS_LOSS_OCCURRED = (0x29, 0x07)
MODE_PARAMETERS_CHANGED = (0x2A, 0x01)
RESERVATIONS_PREEMPTED = (0x2A, 0x03)
RESERVATIONS_RELEASED = (0x2A, 0x04)
REGISTRATIONS_PREEMPTED = (0x2A, 0x05)
CAPACITY_DATA_HAS_CHANGED = (0x2A, 0x09)
NOT_READY_TO_READY_CHANGE = (0x28, 0x00)
IMPORT_OR_EXPORT_ELEMENT_ACCESSED = (0x28, 0x01)
WORM_OVERWRITE_ATTEMPTED = (0x30, 0x0C)
SAVING_PARAMETERS_NOT_SUPPORTED = (0x39, 0x00)
MEDIUM_NOT_PRESENT = (0x3A, 0x00)
MEDIUM_DESTINATION_ELEMENT_FULL = (0x3B, 0x0D)
MEDIUM_SOURCE_ELEMENT_EMPTY = (0x3B, 0x0E)
INVALID_ELEMENT_ADDRESS = (0x21, 0x01)
REPORTED_LUNS_DATA_HAS_CHANGED = (0x3F, 0x0E)
INTERNAL_TARGET_FAILURE = (0x44, 0x00)
MEDIUM_LOAD_OR_EJECT_FAILED = (0x53, 0x00)
MEDIUM_REMOVAL_PREVENTED = (0x53, 0x02)
INSUFFICIENT_REGISTRATION_RESOURCES = (0x55, 0x04)

_FIXED = struct.Struct(">BBBIBIBBB3s")  # 18 bytes
_DESC_HDR = struct.Struct(">BBBB3xB")  # 8 bytes
_DESC_INFO = struct.Struct(">BBBxQ")  # information descriptor, 12 bytes
_DESC_SKS = struct.Struct(">BBxx3sx")  # sense-key specific descriptor, 8 bytes


class CheckCondition(Exception):
    """Raised inside the device server; becomes CHECK CONDITION with this sense."""

    __slots__ = ("asc", "ascq", "information", "key", "sks", "stream")

    def __init__(
        self,
        key: int,
        asc_ascq: tuple[int, int],
        *,
        information: int | None = None,
        sks: bytes | None = None,
        stream: int = 0,
    ) -> None:
        super().__init__(key, asc_ascq)
        self.key = key
        self.asc, self.ascq = asc_ascq
        self.information = information
        self.sks = sks
        self.stream = stream

    def sense(self, descriptor: bool) -> bytes:
        return build_sense(
            self.key,
            (self.asc, self.ascq),
            descriptor=descriptor,
            information=self.information,
            sks=self.sks,
            stream=self.stream,
        )


class ReservationConflict(Exception):
    """Raised inside the device server; becomes RESERVATION CONFLICT status (SAM-5 5.3.1), no sense."""


def field_pointer(byte: int, bit: int | None = None, *, in_cdb: bool = True) -> bytes:
    """SENSE KEY SPECIFIC field-pointer bytes (SPC-4 4.5.2.4.2)."""
    b0 = 0x80 | (0x40 if in_cdb else 0)
    if bit is not None:
        b0 |= 0x08 | (bit & 7)
    return bytes((b0, (byte >> 8) & 0xFF, byte & 0xFF))


def invalid_field(byte: int, bit: int | None = None) -> CheckCondition:
    """ILLEGAL REQUEST / INVALID FIELD IN CDB pointing at ``byte`` (and ``bit``) of the CDB."""
    return CheckCondition(SenseKey.ILLEGAL_REQUEST, INVALID_FIELD_IN_CDB, sks=field_pointer(byte, bit))


def invalid_param(byte: int, bit: int | None = None) -> CheckCondition:
    """ILLEGAL REQUEST / INVALID FIELD IN PARAMETER LIST pointing into the data-out buffer."""
    return CheckCondition(
        SenseKey.ILLEGAL_REQUEST, INVALID_FIELD_IN_PARAMETER_LIST, sks=field_pointer(byte, bit, in_cdb=False)
    )


def build_sense(
    key: int,
    asc_ascq: tuple[int, int],
    *,
    descriptor: bool = False,
    information: int | None = None,
    sks: bytes | None = None,
    stream: int = 0,
) -> bytes:
    """Encode current-error sense data, fixed (0x70) or descriptor (0x72) format.

    ``stream`` holds the FILEMARK / EOM / ILI bits of sequential-access devices (SSC-3 4.2.7): byte 2
    of fixed sense, a stream commands descriptor (04h) in descriptor format.  A negative
    ``information`` (an SSC residue of an overlength block) is encoded in two's complement.
    """
    asc, ascq = asc_ascq
    if descriptor:
        body = b""
        if information is not None:
            body += _DESC_INFO.pack(0x00, 0x0A, 0x80, information & 0xFFFFFFFFFFFFFFFF)
        if sks is not None:
            body += _DESC_SKS.pack(0x02, 0x06, sks)
        if stream:
            body += bytes((0x04, 0x02, 0x00, stream & 0xE0))
        return _DESC_HDR.pack(0x72, key & 0x0F, asc, ascq, len(body)) + body
    valid = 0
    info = 0
    if information is not None and -0x80000000 <= information <= 0xFFFFFFFF:
        valid = 0x80
        info = information & 0xFFFFFFFF
    return _FIXED.pack(
        0x70 | valid, 0, (stream & 0xE0) | (key & 0x0F), info, 10, 0, asc, ascq, 0, sks or b"\0\0\0"
    )
