"""The seam between a SCSI transport (iSCSI today) and the SCSI device server.

The transport hands the device server a :class:`ScsiTask` (I_T nexus, LUN, CDB, data-out, expected
length) and gets back a :class:`ScsiResult` (status, sense, data-in, the transfer length the CDB asked
for).  Nothing here knows about PDUs, sockets or sequence numbers; nothing in ``wire/`` or ``target/``
knows what a CDB means.  SAM-5 names are used throughout.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Status(enum.IntEnum):
    """SAM status codes."""

    GOOD = 0x00
    CHECK_CONDITION = 0x02
    CONDITION_MET = 0x04
    BUSY = 0x08
    RESERVATION_CONFLICT = 0x18
    TASK_SET_FULL = 0x28
    ACA_ACTIVE = 0x30
    TASK_ABORTED = 0x40


class TaskAttribute(enum.IntEnum):
    """Task attributes as carried in the iSCSI SCSI Command PDU (ATTR field)."""

    UNTAGGED = 0
    SIMPLE = 1
    ORDERED = 2
    HEAD_OF_QUEUE = 3
    ACA = 4


class DataDirection(enum.IntEnum):
    NONE = 0
    READ = 1  # data-in: device -> initiator
    WRITE = 2  # data-out: initiator -> device
    BIDI = 3


@dataclass(frozen=True, slots=True)
class ITNexus:
    """An I_T nexus: one initiator port talking to one target port.

    For iSCSI the initiator port name is ``<InitiatorName>,i,0x<ISID>`` and the target port name is
    ``<TargetName>,t,0x<TPGT>`` (RFC 7143 section 4.4.4.1).  Equal nexuses compare equal, so the device
    server can key unit attentions and reservations on it.
    """

    initiator_name: str
    isid: bytes
    target_name: str
    tpgt: int = 1
    relative_port: int = 1  # RELATIVE TARGET PORT IDENTIFIER of the target port (VPD 0x83)

    @property
    def initiator_port(self) -> str:
        return f"{self.initiator_name},i,0x{self.isid.hex()}"

    @property
    def target_port(self) -> str:
        return f"{self.target_name},t,0x{self.tpgt:04x}"


@dataclass(slots=True, init=False)
class ScsiTask:
    """One SCSI command as the transport delivers it to the device server.

    ``data_out`` is the complete data-out buffer the transport collected (immediate, unsolicited and
    solicited data), of length ``expected_length`` for a write; ``None`` for commands without data-out.
    ``expected_length`` is the transport's Expected Data Transfer Length (EDTL) for the direction of the
    command.  The device server must never read past ``len(data_out)``.
    """

    nexus: ITNexus
    lun: int
    cdb: bytes | memoryview
    tag: int = 0
    attribute: TaskAttribute = TaskAttribute.SIMPLE
    direction: DataDirection = DataDirection.NONE
    expected_length: int = 0
    data_out: bytes | bytearray | memoryview | None = None
    aborted: bool = False  # set by the transport when task management aborts the task

    # init=False and a written __init__ (here and in ScsiResult, the transport's TargetTask and Frame): the
    # accelerator (mypyc) builds a dataclass through its generated Python __init__ (an argument tuple and
    # dict, one generic setattr per field), a written one compiles to a direct call.  Same arguments.
    def __init__(
        self,
        nexus: ITNexus,
        lun: int,
        cdb: bytes | memoryview,
        tag: int = 0,
        attribute: TaskAttribute = TaskAttribute.SIMPLE,
        direction: DataDirection = DataDirection.NONE,
        expected_length: int = 0,
        data_out: bytes | bytearray | memoryview | None = None,
        aborted: bool = False,
    ) -> None:
        self.nexus = nexus
        self.lun = lun
        self.cdb = cdb
        self.tag = tag
        self.attribute = attribute
        self.direction = direction
        self.expected_length = expected_length
        self.data_out = data_out
        self.aborted = aborted


@dataclass(slots=True, init=False)
class ScsiResult:
    """What the device server answers.

    ``data_in`` holds the data to send back (may be shorter or longer than the transport's expected
    length: the transport truncates to EDTL and reports residuals).  ``transfer_length`` is the number of
    bytes the CDB itself asked to move in its data direction (allocation length for data-in commands that
    have one); the transport compares it with EDTL to report overflow/underflow.  ``None`` means "same as
    the data moved" (no residual from the command's point of view).
    """

    status: Status = Status.GOOD
    sense: bytes | None = None
    data_in: bytes | bytearray | memoryview | None = None
    transfer_length: int | None = None

    def __init__(
        self,
        status: Status = Status.GOOD,
        sense: bytes | None = None,
        data_in: bytes | bytearray | memoryview | None = None,
        transfer_length: int | None = None,
    ) -> None:
        self.status = status
        self.sense = sense
        self.data_in = data_in
        self.transfer_length = transfer_length

    @property
    def good(self) -> bool:
        return self.status == Status.GOOD
