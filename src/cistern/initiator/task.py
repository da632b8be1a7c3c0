"""A SCSI command in flight: its ITT, CmdSN, buffers and completion (RFC 7143 sections 3.2.2, 10.3-10.8).

A :class:`Command` is awaitable; awaiting it gives a :class:`ScsiResult` or raises the mapped error
(:func:`raise_for_status`).  Its read buffer is allocated once, so a command re-issued after a reconnect
lands its Data-In in the same memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from cistern.initiator.errors import (
    Miscompare,
    ReservationConflict,
    ScsiCheckCondition,
    ScsiError,
    TargetBusy,
    UnitAttention,
)
from cistern.initiator.sense import MISCOMPARE, UNIT_ATTENTION, Sense, decode_sense
from cistern.wire.initiator_session import TASK_ATTR_SIMPLE, InitiatorTask
from cistern.wire.pdu import Buffer

GOOD = 0x00
CHECK_CONDITION = 0x02
CONDITION_MET = 0x04
BUSY = 0x08
RESERVATION_CONFLICT = 0x18
TASK_SET_FULL = 0x28
TASK_ABORTED = 0x40

__all__ = ["TASK_ATTR_SIMPLE", "Command", "ScsiResult", "raise_for_status"]


@dataclass(slots=True)
class ScsiResult:
    """What a completed command returned."""

    status: int
    data: memoryview  # the Data-In actually transferred (read buffer trimmed by the residual)
    residual: int = 0  # positive: underflow (less transferred than expected); negative: overflow
    sense: Sense | None = None


def raise_for_status(result: ScsiResult) -> ScsiResult:
    status = result.status
    if status in (GOOD, CONDITION_MET):
        return result
    if status == CHECK_CONDITION:
        sense = result.sense or Sense(0, 0, 0, valid=False)
        if sense.key == UNIT_ATTENTION:
            raise UnitAttention(sense)
        if sense.key == MISCOMPARE:
            raise Miscompare(sense)
        raise ScsiCheckCondition(sense)
    if status == RESERVATION_CONFLICT:
        raise ReservationConflict()
    if status in (BUSY, TASK_SET_FULL):
        raise TargetBusy(status, None, "BUSY" if status == BUSY else "TASK SET FULL")
    raise ScsiError(status, result.sense)


class Command(InitiatorTask):
    """One SCSI command.  Created by :meth:`Session.submit`; await it for the result.

    Its protocol state (ITT, CmdSN, buffers, sequence numbers) is the sans-I/O
    :class:`~cistern.wire.initiator_session.InitiatorTask`; this adds the caller's future."""

    __slots__ = ("future",)

    def __init__(self, lun: int, cdb: bytes, data_out: Buffer | None, read_length: int) -> None:
        InitiatorTask.__init__(self, lun, cdb, data_out, read_length)
        self.future: asyncio.Future[ScsiResult] = asyncio.get_running_loop().create_future()

    @property
    def done(self) -> bool:
        return self.future.done()

    def complete(self, status: int, residual: int, sense_bytes: bytes) -> None:
        self.finished = True
        if self.future.done():
            return
        data = self.read_buffer if self.read_buffer is not None else memoryview(b"")
        if self.read_buffer is not None and 0 < residual <= self.read_length:
            data = data[: self.read_length - residual]
        sense = decode_sense(sense_bytes) if sense_bytes else None
        self.future.set_result(ScsiResult(status, data, residual, sense))

    def fail(self, exc: BaseException) -> None:
        self.finished = True
        if not self.future.done():
            self.future.set_exception(exc)

    def __await__(self) -> Generator[Any, None, ScsiResult]:
        return self.future.__await__()
