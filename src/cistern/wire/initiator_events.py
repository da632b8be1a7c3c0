"""What the sans-I/O initiator machine (:mod:`cistern.wire.initiator_session`) and its I/O layer exchange:
the protocol record of one SCSI command (:class:`InitiatorTask`, RFC 7143 3.2.2) and the events the machine
returns from ``receive()`` / ``handle_timer()`` (:class:`TaskCompleted`, :class:`TaskFailed`,
:class:`RequestAnswered`, :class:`RequestFailed`, :class:`LogoutRequested`, :class:`PingTimedOut`,
:class:`ReconnectDue`, :class:`RetainExpired`), plus :class:`Recovery`, what a lost connection leads to.
Plain data: no I/O, no clock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from cistern.wire.pdu import PDU, R2T, Buffer

__all__ = [
    "Event",
    "Failure",
    "InitiatorTask",
    "LogoutRequested",
    "PingTimedOut",
    "ReconnectDue",
    "Recovery",
    "RequestAnswered",
    "RequestFailed",
    "RetainExpired",
    "TaskCompleted",
    "TaskFailed",
]


class InitiatorTask:
    """The protocol state of one SCSI command (RFC 7143 3.2.2): LUN, CDB, buffers, ITT, CmdSN, the
    connection it is allegiant to (``cid``) and its Data-In / R2T sequence state. Lengths in bytes."""

    __slots__ = (
        "attempts",
        "cdb",
        "cid",
        "cmdsn",
        "data_out",
        "exp_datasn",
        "finished",
        "heard",
        "held_r2ts",
        "held_status",
        "hold_data_out",
        "in_received",
        "itt",
        "lun",
        "missing",
        "read_buffer",
        "read_length",
        "resync",
        "sent",
    )

    def __init__(self, lun: int, cdb: bytes, data_out: Buffer | None, read_length: int) -> None:
        if not 1 <= len(cdb) <= 16:
            raise ValueError("CDB must be 1..16 bytes (extended CDBs are not supported)")
        if data_out is not None and read_length:
            raise ValueError("bidirectional commands are not supported")
        self.lun = lun
        self.cdb = bytes(cdb)
        self.data_out = memoryview(data_out).cast("B") if data_out is not None else None
        self.read_length = read_length
        self.read_buffer = memoryview(bytearray(read_length)) if read_length else None
        self.itt = 0
        self.cmdsn = 0
        self.cid = 0
        self.sent = False
        self.finished = False  # completed or failed: never sent again
        self.attempts = 0
        self.in_received = 0  # highest Data-In byte received (residual check)
        #: ERL 1: DataSNs / R2TSNs asked again with a SNACK, and the status that waits for them
        self.missing: set[int] | None = None
        self.held_status: tuple[int, int, bytes] | None = None
        self.heard = 0  # R2T / Data-In PDUs received: evidence a TASK REASSIGN took
        self.exp_datasn = 0  # next DataSN (reads) / R2TSN (writes): TASK REASSIGN's ExpDataSN
        #: reassigned (RFC 7143 7.2.2): the target's recovery R2Ts carry R2TSNs of its choosing, so the next
        #: R2T re-bases the R2TSN count instead of showing a gap
        self.resync = False
        #: fault injection (tests, drills): hold R2Ts unanswered until release_data_out()
        self.hold_data_out = False
        self.held_r2ts: list[R2T] = []

    @property
    def expected_length(self) -> int:
        return len(self.data_out) if self.data_out is not None else self.read_length


# ---- events -----------------------------------------------------------------------------------------


class Failure(enum.Enum):
    """Why a task or request ended without a SCSI status."""

    SERVICE_RESPONSE = "target failure"  # SCSI Response with iSCSI Response != 0 (11.4.3)
    REJECTED = "rejected"  # the target rejected the PDU (11.17)
    NOT_RECOVERED = "not recovered"  # its connection was not recovered within DefaultTime2Retain
    REISSUE_EXHAUSTED = "reissue exhausted"  # re-issued too often after session reinstatements


@dataclass(slots=True)
class TaskCompleted:
    task: InitiatorTask
    status: int
    residual: int  # > 0 underflow, < 0 overflow (bytes)
    sense: bytes


@dataclass(slots=True)
class TaskFailed:
    task: InitiatorTask
    failure: Failure
    detail: str


@dataclass(slots=True)
class RequestAnswered:
    """The answer to a NOP-Out (``data`` its echo), TMF / Logout (``pdu``) or Text (``data``, whole)."""

    itt: int
    pdu: PDU
    data: bytes = b""


@dataclass(slots=True)
class RequestFailed:
    itt: int
    failure: Failure
    detail: str


@dataclass(slots=True)
class LogoutRequested:
    """The target asked for a logout (Asynchronous Message event 1, RFC 7143 11.9.1)."""

    cid: int


@dataclass(slots=True)
class PingTimedOut:
    """Our NOP-Out ping on ``cid`` went unanswered for nop_timeout s: drop that connection (7.1.1)."""

    cid: int


@dataclass(slots=True)
class ReconnectDue:
    """DefaultTime2Wait has passed since connection ``cid`` failed (ERL 2): log it in again (7.1.4)."""

    cid: int


@dataclass(slots=True)
class RetainExpired:
    """DefaultTime2Retain passed before connection ``cid``'s tasks were reassigned: they failed."""

    cid: int


Event = (
    TaskCompleted
    | TaskFailed
    | RequestAnswered
    | RequestFailed
    | LogoutRequested
    | PingTimedOut
    | ReconnectDue
    | RetainExpired
)


class Recovery(enum.Enum):
    """What :meth:`InitiatorSession.connection_lost` decided."""

    NONE = "none"  # not a connection of the session (already handled)
    CONNECTION = "connection"  # ERL 2: this connection alone is recovered (7.1.1, 6.3.4)
    SESSION = "session"  # the session is reinstated (6.3.5): every connection is gone
