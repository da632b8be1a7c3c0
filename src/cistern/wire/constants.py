"""iSCSI protocol constants: opcodes, flags, reason and status codes (RFC 7143 section 11).

The plain numbers are ``Final``: the accelerator's compiled modules then use their values as literals
instead of looking the names up in this module at each use."""

from __future__ import annotations

import enum
from typing import Final

BHS_LEN: Final = 48
DIGEST_LEN: Final = 4
RESERVED_TAG: Final = 0xFFFFFFFF  # RFC 7143 11.2.1.8: the reserved Initiator/Target Task Tag value


class Opcode(enum.IntEnum):
    # initiator opcodes
    NOP_OUT = 0x00
    SCSI_COMMAND = 0x01
    TASK_MGMT_REQUEST = 0x02
    LOGIN_REQUEST = 0x03
    TEXT_REQUEST = 0x04
    DATA_OUT = 0x05
    LOGOUT_REQUEST = 0x06
    SNACK_REQUEST = 0x10
    # target opcodes
    NOP_IN = 0x20
    SCSI_RESPONSE = 0x21
    TASK_MGMT_RESPONSE = 0x22
    LOGIN_RESPONSE = 0x23
    TEXT_RESPONSE = 0x24
    DATA_IN = 0x25
    LOGOUT_RESPONSE = 0x26
    R2T = 0x31
    ASYNC_MESSAGE = 0x32
    REJECT = 0x3F


INITIATOR_OPCODES = frozenset(
    {
        Opcode.NOP_OUT,
        Opcode.SCSI_COMMAND,
        Opcode.TASK_MGMT_REQUEST,
        Opcode.LOGIN_REQUEST,
        Opcode.TEXT_REQUEST,
        Opcode.DATA_OUT,
        Opcode.LOGOUT_REQUEST,
        Opcode.SNACK_REQUEST,
    }
)

# Byte 1 flag bits
FLAG_FINAL: Final = 0x80
# SCSI Command
CMD_READ: Final = 0x40
CMD_WRITE: Final = 0x20
CMD_ATTR_MASK: Final = 0x07
# SCSI Response / Data-In residual bits
RSP_BIDI_OVERFLOW: Final = 0x10
RSP_BIDI_UNDERFLOW: Final = 0x08
RSP_OVERFLOW: Final = 0x04
RSP_UNDERFLOW: Final = 0x02
DATAIN_ACK: Final = 0x40
DATAIN_STATUS: Final = 0x01
# Login / Text
LOGIN_TRANSIT: Final = 0x80
LOGIN_CONTINUE: Final = 0x40
TEXT_CONTINUE: Final = 0x40


class LoginStage(enum.IntEnum):
    SECURITY = 0
    OPERATIONAL = 1
    FULL_FEATURE = 3


class ServiceResponse(enum.IntEnum):
    """SCSI Response 'Response' field (RFC 7143 11.4.3)."""

    COMMAND_COMPLETED = 0x00
    TARGET_FAILURE = 0x01


class RejectReason(enum.IntEnum):
    """RFC 7143 11.17.1."""

    DATA_DIGEST_ERROR = 0x02
    SNACK_REJECT = 0x03
    PROTOCOL_ERROR = 0x04
    COMMAND_NOT_SUPPORTED = 0x05
    IMMEDIATE_COMMAND_REJECT = 0x06
    TASK_IN_PROGRESS = 0x07
    INVALID_DATA_ACK = 0x08
    INVALID_PDU_FIELD = 0x09
    LONG_OPERATION_REJECT = 0x0A
    DEPRECATED_NEGOTIATION_RESET = 0x0B
    WAITING_FOR_LOGOUT = 0x0C


class TmfFunction(enum.IntEnum):
    """RFC 7143 11.5.1."""

    ABORT_TASK = 1
    ABORT_TASK_SET = 2
    CLEAR_ACA = 3
    CLEAR_TASK_SET = 4
    LOGICAL_UNIT_RESET = 5
    TARGET_WARM_RESET = 6
    TARGET_COLD_RESET = 7
    TASK_REASSIGN = 8


class TmfResponse(enum.IntEnum):
    """RFC 7143 11.6.1."""

    FUNCTION_COMPLETE = 0
    TASK_DOES_NOT_EXIST = 1
    LUN_DOES_NOT_EXIST = 2
    TASK_STILL_ALLEGIANT = 3
    TASK_REASSIGN_NOT_SUPPORTED = 4
    FUNCTION_NOT_SUPPORTED = 5
    FUNCTION_AUTHORIZATION_FAILED = 6
    FUNCTION_REJECTED = 255


class LogoutReason(enum.IntEnum):
    CLOSE_SESSION = 0
    CLOSE_CONNECTION = 1
    REMOVE_CONNECTION_FOR_RECOVERY = 2


class LogoutResponse(enum.IntEnum):
    SUCCESS = 0
    CID_NOT_FOUND = 1
    RECOVERY_NOT_SUPPORTED = 2
    CLEANUP_FAILED = 3


class AsyncEvent(enum.IntEnum):
    """RFC 7143 11.9.1."""

    SCSI_ASYNC_EVENT = 0
    LOGOUT_REQUEST = 1
    CONNECTION_DROP = 2
    SESSION_DROP = 3
    NEGOTIATION_REQUEST = 4
    TASK_TERMINATION = 5
    VENDOR_SPECIFIC = 255


class SnackType(enum.IntEnum):
    DATA_R2T = 0
    STATUS = 1
    DATA_ACK = 2
    RDATA = 3


class AhsType(enum.IntEnum):
    EXTENDED_CDB = 1
    BIDI_READ_LENGTH = 2


class LoginStatus(enum.IntEnum):
    """Login Response Status-Class << 8 | Status-Detail (RFC 7143 11.13.5)."""

    SUCCESS = 0x0000
    TARGET_MOVED_TEMPORARILY = 0x0101
    TARGET_MOVED_PERMANENTLY = 0x0102
    INITIATOR_ERROR = 0x0200
    AUTHENTICATION_FAILURE = 0x0201
    AUTHORIZATION_FAILURE = 0x0202
    NOT_FOUND = 0x0203
    TARGET_REMOVED = 0x0204
    UNSUPPORTED_VERSION = 0x0205
    TOO_MANY_CONNECTIONS = 0x0206
    MISSING_PARAMETER = 0x0207
    CANT_INCLUDE_IN_SESSION = 0x0208
    SESSION_TYPE_NOT_SUPPORTED = 0x0209
    SESSION_DOES_NOT_EXIST = 0x020A
    INVALID_DURING_LOGIN = 0x020B
    TARGET_ERROR = 0x0300
    SERVICE_UNAVAILABLE = 0x0301
    OUT_OF_RESOURCES = 0x0302

    @property
    def status_class(self) -> int:
        return self.value >> 8

    @property
    def status_detail(self) -> int:
        return self.value & 0xFF
