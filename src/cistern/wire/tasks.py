"""Per-command state on the target (sans-I/O): data-out collection with R2T sequences (RFC 7143 4.2.3, 11.7, 11.8).

With DataPDUInOrder=Yes and DataSequenceInOrder=Yes (the target always answers Yes to both: they are
OR-valued keys, RFC 7143 13.19/13.20) every sequence — the unsolicited one and each R2T's — must arrive as
DataSN 0, 1, 2… at contiguous offsets, ending with the F bit exactly at the sequence's end.  Anything else
is a protocol error for that command.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cistern.scsi.task import ScsiResult, ScsiTask
from cistern.wire.buffers import WRITE_BUFFERS
from cistern.wire.constants import RESERVED_TAG

if TYPE_CHECKING:
    from cistern.wire.target_connection import TargetConnection


class TaskState(enum.Enum):
    COLLECTING = 1  # waiting for data-out
    EXECUTING = 2  # handed to the device server
    DONE = 3


class DataOutError(Exception):
    """A Data-Out PDU broke the sequence rules; the command fails (it never reaches the medium)."""


class UnknownTransferTag(DataOutError):
    """The Data-Out's Target Transfer Tag names no outstanding R2T (nor the unsolicited burst) of its task:
    an invalid PDU field (RFC 7143 11.17.1), answered with a Reject before the command's fate is decided."""


@dataclass(slots=True)
class Sequence:
    """One data-out sequence: the unsolicited burst (TTT 0xffffffff) or the burst one R2T asked for."""

    ttt: int
    offset: int
    length: int
    received: int = 0
    next_datasn: int = 0
    r2tsn: int = -1  # the R2TSN of the R2T that asked for it (-1: unsolicited), for R2T SNACK

    @property
    def complete(self) -> bool:
        return self.received >= self.length


@dataclass(slots=True, eq=False, init=False)
class TargetTask:
    itt: int
    lun: int
    cmdsn: int
    cdb: bytes
    flags: int
    edtl: int
    immediate: bool
    buf: bytearray | None = None  # the write buffer (EDTL bytes), allocated when its first data arrives
    reserved: int = 0  # bytes of write buffer accounted for this task in the session's and target's budgets
    state: TaskState = TaskState.COLLECTING
    received: int = 0  # data-out bytes received so far, all sequences
    unsolicited: Sequence | None = None
    r2ts: dict[int, Sequence] = field(default_factory=dict)  # TTT -> outstanding R2T sequence
    next_r2t_offset: int = 0  # first byte not yet solicited
    r2tsn: int = 0
    aborted: bool = False
    scsi: ScsiTask | None = None  # what the device server is executing (it polls .aborted)
    report_aborted: bool = False  # TAS=1: aborted by another nexus, so it ends with TASK ABORTED status
    error: str | None = None
    conn: TargetConnection | None = None  # the connection the task is allegiant to (RFC 7143 5.1)
    #: ERL 2: the device server's result, kept while the task waits for TASK REASSIGN (its connection failed)
    result: ScsiResult | None = None
    done: Any = None  # the I/O layer's waiter for the task's end (an asyncio future), never touched here

    def __init__(
        self, itt: int, lun: int, cmdsn: int, cdb: bytes, flags: int, edtl: int, immediate: bool
    ) -> None:  # written, not generated: a direct call when compiled (see cistern.scsi.task.ScsiTask)
        self.itt = itt
        self.lun = lun
        self.cmdsn = cmdsn
        self.cdb = cdb
        self.flags = flags
        self.edtl = edtl
        self.immediate = immediate
        self.buf = None
        self.reserved = 0
        self.state = TaskState.COLLECTING
        self.received = 0
        self.unsolicited = None
        self.r2ts = {}
        self.next_r2t_offset = 0
        self.r2tsn = 0
        self.aborted = False
        self.scsi = None
        self.report_aborted = False
        self.error = None
        self.conn = None
        self.result = None
        self.done = None

    def abort(self) -> None:
        """Mark aborted; a long-running device server operation (SANITIZE) sees it and ends early."""
        self.aborted = True
        if self.scsi is not None:
            self.scsi.aborted = True

    def sink(self, offset: int, length: int) -> memoryview | None:
        """Where a Data-Out payload may land (zero copy), if it is inside this task's buffer.  The buffer
        (EDTL bytes, within the budget reserved at command arrival) is allocated here, when the first data
        arrives: a write whose data never comes costs no memory (issue 12); a large one is recycled
        (:mod:`cistern.wire.buffers`)."""
        if self.state is not TaskState.COLLECTING or not self.reserved:
            return None
        if offset < 0 or offset + length > self.edtl:
            return None
        buf = self.buf
        if buf is None:
            self.buf = buf = WRITE_BUFFERS.take(self.edtl)
        return memoryview(buf)[offset : offset + length]

    def sequence_for(self, ttt: int) -> Sequence | None:
        if ttt == RESERVED_TAG:
            return self.unsolicited
        return self.r2ts.get(ttt)

    def accept(self, ttt: int, datasn: int, offset: int, length: int, final: bool) -> Sequence:
        """Check one Data-Out against its sequence and account for it; raises DataOutError."""
        seq = self.sequence_for(ttt)
        if seq is None:
            raise UnknownTransferTag(f"Data-Out with unknown Target Transfer Tag 0x{ttt:08x}")
        if datasn != seq.next_datasn:
            raise DataOutError(f"DataSN {datasn} where {seq.next_datasn} was expected")
        if offset != seq.offset + seq.received:
            raise DataOutError(f"Buffer Offset {offset} where {seq.offset + seq.received} was expected")
        if seq.received + length > seq.length:
            raise DataOutError("more data than the sequence allows")
        seq.received += length
        seq.next_datasn += 1
        self.received += length
        if final != seq.complete:
            raise DataOutError("F bit does not match the end of the sequence")
        return seq
