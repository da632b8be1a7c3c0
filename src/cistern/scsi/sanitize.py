"""SANITIZE (SBC-3 5.19, 4.11 sanitize operations): OVERWRITE, BLOCK ERASE, EXIT FAILURE MODE.

A sanitize operation runs in the background, owned by the logical unit, not by the command: it goes on
after ABORT TASK, task set and LU/target resets and I_T nexus loss, as SBC requires.  Without IMMED the
command completes when the operation does; with IMMED it completes once the parameters are checked.
While it runs, every command but INQUIRY, REPORT LUNS, REQUEST SENSE and REPORT SUPPORTED OPERATION
CODES ends with NOT READY / LOGICAL UNIT NOT READY, SANITIZE IN PROGRESS (04/1B) with a progress
indication; REQUEST SENSE returns that sense.  After a failure, media access ends with MEDIUM ERROR /
SANITIZE COMMAND FAILED (31/03) until a successful sanitize or EXIT FAILURE MODE.

- OVERWRITE writes the initialization pattern (repeated to fill each block; INVERT flips it between
  passes) OVERWRITE COUNT times over the whole medium, each pass flushed, in 1 MiB chunks.  The pace is
  the LU's ``sanitize_rate`` (config ``sanitize_rate``, bytes per second); by default (``None``) it is the
  store's own speed whenever no other I/O is waiting: between chunks the operation lets the event loop run
  and, while other I/O is queued for the store's thread pool (``BackingStore.io_waiting``), waits for it
  (up to :data:`YIELD_MAX_SECONDS` per chunk, so the sanitize still progresses).  ``0`` is unpaced.
- BLOCK ERASE deallocates every block (the store's ``unmap``): offered on thin-provisioned LUs only,
  whose blocks then read back as zero (LBPRZ=1, WABEREQ=01b in VPD 0xB1).
- CRYPTOGRAPHIC ERASE is not offered: no backing store encrypts its data, so there is no key to change.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from .lu import LogicalUnit
from .sense import (
    PARAMETER_LIST_LENGTH_ERROR,
    CheckCondition,
    SenseKey,
    build_sense,
    invalid_field,
    invalid_param,
)
from .task import ScsiResult, ScsiTask, Status

SA_OVERWRITE = 0x01
SA_BLOCK_ERASE = 0x02
SA_CRYPTO_ERASE = 0x03
SA_EXIT_FAILURE_MODE = 0x1F

SANITIZE_IN_PROGRESS = (0x04, 0x1B)
SANITIZE_COMMAND_FAILED = (0x31, 0x03)
COMMAND_SEQUENCE_ERROR = (0x2C, 0x00)

YIELD_POLL_SECONDS = 0.001  # auto pace: how often to look whether other I/O is still waiting
YIELD_MAX_SECONDS = 0.05  # auto pace: longest wait per chunk for other I/O (a sanitize always progresses)
CHUNK_BYTES = 1 << 20
ABORT_POLL_SECONDS = 0.1  # how often a waiting non-IMMED SANITIZE looks at ScsiTask.aborted

_ALLOWED_WHILE_RUNNING = frozenset({0x12, 0xA0, 0x03, 0xA3})  # INQUIRY, REPORT LUNS, REQUEST SENSE, MAINT IN
_REQUEST_SENSE = 0x03


@dataclass(slots=True)
class SanitizeOperation:
    """The state of a LU's sanitize operation (``LogicalUnit.sanitize`` while running or failed)."""

    total: int  # bytes to process over all passes
    done: int = 0
    failed: bool = False
    task: asyncio.Future[None] | None = field(default=None, repr=False)

    @property
    def progress(self) -> int:
        """PROGRESS INDICATION numerator (of 65536)."""
        return min(0xFFFF, self.done * 0x10000 // self.total) if self.total else 0

    def sense(self, descriptor: bool) -> bytes:
        if self.failed:
            return build_sense(SenseKey.MEDIUM_ERROR, SANITIZE_COMMAND_FAILED, descriptor=descriptor)
        p = self.progress
        return build_sense(
            SenseKey.NOT_READY,
            SANITIZE_IN_PROGRESS,
            descriptor=descriptor,
            sks=bytes((0x80, p >> 8, p & 0xFF)),
        )


def check_blocked(lu: LogicalUnit, op: int) -> ScsiResult | None:
    """Called by the device server when ``lu.sanitize`` is set: the answer for ``op``, or None to run it.

    Raises the SANITIZE IN PROGRESS / SANITIZE COMMAND FAILED condition for commands that may not run.
    """
    state: SanitizeOperation | None = lu.sanitize
    if state is None or (op in _ALLOWED_WHILE_RUNNING and op != _REQUEST_SENSE):
        return None
    if op == _REQUEST_SENSE:
        return ScsiResult(data_in=state.sense(lu.d_sense))
    if state.failed:
        if op == 0x48:  # SANITIZE may retry or EXIT FAILURE MODE
            return None
        raise CheckCondition(SenseKey.MEDIUM_ERROR, SANITIZE_COMMAND_FAILED)
    p = state.progress
    raise CheckCondition(SenseKey.NOT_READY, SANITIZE_IN_PROGRESS, sks=bytes((0x80, p >> 8, p & 0xFF)))


def _parse_overwrite(lu: LogicalUnit, task: ScsiTask, length: int) -> tuple[bytes, int, bool]:
    """(pattern block, OVERWRITE COUNT, INVERT) from the OVERWRITE parameter list (SBC-3 5.19.3)."""
    bs = lu.block_size
    if length <= 4 or length > bs + 4:
        raise invalid_field(7)
    data = task.data_out
    if data is None or len(data) < length:
        raise CheckCondition(SenseKey.ILLEGAL_REQUEST, PARAMETER_LIST_LENGTH_ERROR)
    params = bytes(memoryview(data)[:length])
    invert, test, count = params[0] & 0x80, (params[0] >> 5) & 0x03, params[0] & 0x1F
    if test:
        raise invalid_param(0, 6)
    if count == 0:
        raise invalid_param(0, 4)
    (pattern_len,) = struct.unpack_from(">H", params, 2)
    if pattern_len == 0 or pattern_len > bs:
        raise invalid_param(2)
    if pattern_len + 4 != length:
        raise CheckCondition(SenseKey.ILLEGAL_REQUEST, PARAMETER_LIST_LENGTH_ERROR)
    pattern = params[4:]
    block = (pattern * (bs // pattern_len + 1))[:bs]
    return block, count, bool(invert)


async def _overwrite(
    lu: LogicalUnit, state: SanitizeOperation, block: bytes, count: int, invert: bool
) -> None:
    bs = lu.block_size
    per_chunk = max(1, CHUNK_BYTES // bs)
    patterns = [block * per_chunk]
    if invert:
        patterns.append(bytes(b ^ 0xFF for b in block) * per_chunk)
    started = time.monotonic()
    for p in range(count):
        chunk = memoryview(patterns[p % len(patterns)])
        lba = 0
        while lba < lu.num_blocks:
            n = min(per_chunk, lu.num_blocks - lba)
            await lu.store.write(lba * bs, chunk[: n * bs])
            lba += n
            state.done += n * bs
            rate = lu.sanitize_rate
            if rate:
                ahead = state.done / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            elif rate is None:
                await _yield_to_other_io(lu)
        await lu.store.flush()


async def _yield_to_other_io(lu: LogicalUnit) -> None:
    """Auto pace: let the loop run other commands, and wait (bounded) while other I/O is queued."""
    await asyncio.sleep(0)
    waited = 0.0
    while lu.store.io_waiting() and waited < YIELD_MAX_SECONDS:
        await asyncio.sleep(YIELD_POLL_SECONDS)
        waited += YIELD_POLL_SECONDS


async def _block_erase(lu: LogicalUnit, state: SanitizeOperation) -> None:
    await lu.store.unmap(0, lu.num_blocks * lu.block_size)
    await lu.store.flush()
    state.done = state.total


async def _run(lu: LogicalUnit, state: SanitizeOperation, work: Coroutine[Any, Any, None]) -> None:
    lock = lu.range_lock
    token = await lock.exclusive(0, max(lu.num_blocks, 1))  # wait for writes already under way
    try:
        await work
    except Exception:
        state.failed = True
        return
    finally:
        lock.release(token)
    if lu.sanitize is state:
        lu.sanitize = None


async def sanitize(server: object, lu: LogicalUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    immed = bool(cdb[1] & 0x80)
    sa = cdb[1] & 0x1F
    (length,) = struct.unpack_from(">H", cdb, 7)
    previous: SanitizeOperation | None = lu.sanitize
    if sa == SA_EXIT_FAILURE_MODE:
        if length:
            raise invalid_field(7)
        if previous is None or not previous.failed:
            raise CheckCondition(SenseKey.ILLEGAL_REQUEST, COMMAND_SEQUENCE_ERROR)
        lu.sanitize = None
        return ScsiResult(transfer_length=0)
    lu.check_writable()
    bs = lu.block_size
    if sa == SA_OVERWRITE:
        block, count, invert = _parse_overwrite(lu, task, length)
        state = SanitizeOperation(total=count * lu.num_blocks * bs)
        coro = _overwrite(lu, state, block, count, invert)
    elif sa == SA_BLOCK_ERASE and lu.thin:
        if length:
            raise invalid_field(7)
        state = SanitizeOperation(total=lu.num_blocks * bs)
        coro = _block_erase(lu, state)
    else:
        raise invalid_field(1, 4)
    loop = asyncio.get_running_loop()
    lu.sanitize = state
    runner = loop.create_task(_run(lu, state, coro))
    state.task = runner
    if immed:
        return ScsiResult(transfer_length=length)
    while not runner.done():  # the operation outlives the command: an aborted SANITIZE ends at once
        await asyncio.wait((runner,), timeout=ABORT_POLL_SECONDS)
        if task.aborted and not runner.done():
            return ScsiResult(Status.TASK_ABORTED)
    if state.failed:
        raise CheckCondition(SenseKey.MEDIUM_ERROR, SANITIZE_COMMAND_FAILED)
    return ScsiResult(transfer_length=length)
