"""The per-command work of one target connection: what the session machine asks for, done at once.

A :class:`CommandEngine` takes the session's events (:mod:`cistern.wire.target_session`) from its
:class:`~cistern.target.connection.Connection` and acts on them in order: a
:class:`~cistern.wire.tasks.TargetTask` runs through the SCSI device server and its
:class:`~cistern.scsi.task.ScsiResult` goes back to the task's connection machine
(``TargetConnection.complete``: Data-In and SCSI Response); Task Management, Text and Logout go to the
asyncio connection, which owns the timers, the transport and the session table.

It is a plain class, not part of the ``asyncio.BufferedProtocol`` subclass, so that the optional
accelerator (:mod:`cistern.accel`) compiles it to a native class: a class deriving from an interpreted base
keeps Python attribute dictionaries and generic calls, and compiling it gains nothing (bench/RESULTS.md).

A command the device server answers without waiting (:meth:`DeviceServer.submit
<cistern.scsi.server.DeviceServer.submit>`: a read or write the page cache serves) completes inline, with no
coroutine at all.  One that waits runs *eagerly* (:func:`run_eager`): inline until it waits on a future that
is not done.  ``loop.create_task`` would defer a coroutine's first step to the next loop iteration, which for a
RAM-backed read is the whole cost of the command twice over: the response would go out one iteration
later.  The first step runs at once (as Python 3.12's eager task factory does) and the coroutine resumes
from the awaited future's done callback, the way ``asyncio.Task`` steps it.  No cancellation is needed: an
aborted command is marked so and finishes normally, its response suppressed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Generator
from typing import TYPE_CHECKING, Any, Final

from cistern.scsi.task import DataDirection, ScsiResult, ScsiTask, Status, TaskAttribute
from cistern.wire.constants import CMD_READ
from cistern.wire.framing import Frame, PduReader
from cistern.wire.target_connection import TargetConnection, fixed_sense
from cistern.wire.target_session import Event, Logout, OutboxReady, TaskManagement, TextRequest
from cistern.wire.tasks import TargetTask

if TYPE_CHECKING:
    from cistern.scsi.server import DeviceServer
    from cistern.scsi.task import ITNexus
    from cistern.target.connection import Connection
    from cistern.target.pump import Pump

__all__ = ["GATED_READ", "CommandEngine", "describe_sense", "run_eager"]

log: Final = logging.getLogger("cistern.target")

SENSE_INTERNAL_TARGET_FAILURE: Final = fixed_sense(0x04, 0x44, 0x00)

# A READ whose EDTL is above GATED_READ waits for the connection's read-data gate before it runs
# (Connection._admit_data_in, issue 12 "read data"); smaller reads (the 4 KiB hot path) never wait.
GATED_READ: Final = 256 * 1024

_SENSE_KEYS = (
    "NO SENSE", "RECOVERED ERROR", "NOT READY", "MEDIUM ERROR", "HARDWARE ERROR", "ILLEGAL REQUEST",
    "UNIT ATTENTION", "DATA PROTECT", "BLANK CHECK", "VENDOR SPECIFIC", "COPY ABORTED", "ABORTED COMMAND",
    "0xC", "VOLUME OVERFLOW", "MISCOMPARE", "0xF",
)  # fmt: skip


def describe_sense(sense: bytes | None) -> str:
    """``"ILLEGAL REQUEST 24/00"``: sense key name and ASC/ASCQ of fixed or descriptor sense (SPC-4 4.5)."""
    if not sense or len(sense) < 4:
        return "no sense data"
    code = sense[0] & 0x7F
    if code in (0x72, 0x73):
        key, asc, ascq = sense[1] & 0x0F, sense[2], sense[3]
    elif len(sense) >= 14:
        key, asc, ascq = sense[2] & 0x0F, sense[12], sense[13]
    else:
        return f"short sense {sense.hex()}"
    return f"{_SENSE_KEYS[key]} {asc:02X}/{ascq:02X}"


# SCSI Command flags -> task attribute (ATTR, 3 bits) and direction (W = 0x20, R = 0x40)
_ATTRIBUTES: Final = tuple(
    TaskAttribute(a) if a <= TaskAttribute.ACA else TaskAttribute.SIMPLE for a in range(8)
)
# (tuple[X, ...]: compiled, a Final tuple of fixed shape would be rebuilt at every use)
_DIRECTIONS: Final[tuple[DataDirection, ...]] = (
    DataDirection.NONE,
    DataDirection.WRITE,
    DataDirection.READ,
    DataDirection.BIDI,
)
_CHECK_CONDITION: Final = int(Status.CHECK_CONDITION)  # an int: an enum member is a lookup per use


class CommandEngine:
    """The commands of one connection in full feature phase.  ``conn``: the asyncio connection (its
    transport, read-data gate and batching); ``machine``: its connection machine; ``nexus`` and ``device``:
    the session's I_T nexus and its target's device server (None in a discovery session, which runs no
    command)."""

    __slots__ = ("conn", "device", "frame", "machine", "nexus", "pump", "server")

    def __init__(
        self,
        conn: Connection,
        machine: TargetConnection,
        nexus: ITNexus | None,
        device: DeviceServer | None,
    ) -> None:
        self.conn = conn
        self.pump: Pump = conn.pump  # its per-read path: whether it closes, whether a read is being handled
        self.machine = machine
        self.nexus = nexus
        self.device = device
        self.server = conn.server
        self.frame: Frame | None = None  # the PDU :meth:`receive` is handling (for its caller's error log)

    def receive(self, reader: PduReader, now: float) -> None:
        """Run every whole PDU the framer holds through the connection machine and act on the session's
        events, until the framer needs more bytes or the connection closes.  ``now``: monotonic seconds.

        This is the per-PDU loop of :meth:`~cistern.target.pump.Pump.buffer_updated`.
        Raises :class:`~cistern.wire.framing.FramingError` (bytes that are no PDU),
        :class:`~cistern.wire.errors.RemoteProtocolError` (a PDU the protocol forbids) and whatever a bug
        raises; :attr:`frame` is then the frame being handled (None: the framer raised)."""
        machine = self.machine
        pump = self.pump
        events = machine.session.events
        while not pump.closing:
            self.frame = None
            frame = reader.next_frame()
            if frame is None:
                return
            self.frame = frame
            machine.receive(frame, now)
            if events:
                self.dispatch(events)
        self.frame = None

    def dispatch(self, events: list[Event]) -> None:
        """Act on the session's events in order (more may be added meanwhile), then forget them."""
        try:
            i = 0
            while i < len(events):
                event = events[i]
                i += 1
                if isinstance(event, TargetTask):
                    machine = event.conn
                    assert machine is not None
                    # the task runs on the connection it is allegiant to (another one under MC/S)
                    engine: CommandEngine = self if machine is self.machine else machine.owner.engine
                    engine.execute(event)
                elif isinstance(event, OutboxReady):
                    event.conn.owner.pump.kick()
                elif isinstance(event, TaskManagement):
                    asyncio.get_running_loop().create_task(event.conn.owner._tmf(event))
                elif isinstance(event, TextRequest):
                    owner = event.conn.owner
                    event.conn.text_answer(event.pdu, self.server.text_answer(owner, event.pairs))
                    owner.pump.kick()
                elif isinstance(event, Logout):
                    event.conn.owner._logout(event)
        finally:
            events.clear()

    def execute(self, task: TargetTask) -> None:
        """Run ``task`` through the device server and complete it on its connection machine: at once when
        the device server answers without waiting (a read or write the page cache serves), else from a
        coroutine run eagerly (:func:`run_eager`).  A bug of ours here is logged and costs this command,
        not the connection or the other commands of its read."""
        try:
            self._execute(task)
        except Exception:
            log.exception("%s: command failed (ITT 0x%08x)", self.conn.peer, task.itt)

    def _execute(self, task: TargetTask) -> None:
        nexus = self.nexus
        device = self.device
        assert nexus is not None and device is not None
        flags = task.flags
        edtl = task.edtl
        scsi_task = ScsiTask(
            nexus,
            task.lun,
            task.cdb,
            task.itt,
            _ATTRIBUTES[flags & 7],
            _DIRECTIONS[(flags >> 5) & 3],
            edtl,
            task.buf,
        )
        task.scsi = scsi_task
        if flags & CMD_READ and edtl > GATED_READ:
            run_eager(self._execute_gated(task, scsi_task, edtl))
            return
        try:
            step = device.submit(scsi_task)
        except Exception:
            step = self._failed(task)
        if isinstance(step, ScsiResult):
            if self._must_drain(task, step):
                run_eager(self._drain_then_finish(task, step))
            else:
                self._finish_result(task, step)
        else:
            run_eager(self._execute_waiting(task, step))

    async def _execute_waiting(self, task: TargetTask, step: Coroutine[Any, Any, ScsiResult]) -> None:
        """The rest of a command whose device-server work waits (thread-pool I/O, a range lock)."""
        try:
            result = await step
        except Exception:
            result = self._failed(task)
        if self._must_drain(task, result):
            await self.conn.drain()
        self._finish_result(task, result)

    async def _drain_then_finish(self, task: TargetTask, result: ScsiResult) -> None:
        await self.conn.drain()
        self._finish_result(task, result)

    async def _execute_gated(self, task: TargetTask, scsi_task: ScsiTask, gated: int) -> None:
        """A large READ: it waits for the connection's read-data gate first (GATED_READ)."""
        conn = self.conn
        if not await conn._admit_data_in(gated):
            self.finish(task, ScsiResult(Status.TASK_SET_FULL, b""))
            return
        device = self.device
        assert device is not None
        try:
            await self._execute_waiting(task, device.execute(scsi_task))
        finally:
            conn._release_data_in(gated)

    def _failed(self, task: TargetTask) -> ScsiResult:
        """The device server raised (a bug of ours; it answers bad input with status): logged, and the
        command ends with HARDWARE ERROR / INTERNAL TARGET FAILURE."""
        log.exception("%s: device server failed on CDB %s", self.conn.peer, task.cdb[:16].hex())
        return ScsiResult(Status.CHECK_CONDITION, SENSE_INTERNAL_TARGET_FAILURE)

    def _must_drain(self, task: TargetTask, result: ScsiResult) -> bool:
        """Whether a large read's data waits until what was sent before has drained (backpressure)."""
        data_in = result.data_in
        return data_in is not None and len(data_in) > 65536 and not task.aborted and not self.pump.closing

    def _finish_result(self, task: TargetTask, result: ScsiResult) -> None:
        if result.status == _CHECK_CONDITION and log.isEnabledFor(logging.DEBUG):
            log.debug(
                "LUN %d CDB %s: CHECK CONDITION %s", task.lun, task.cdb.hex(), describe_sense(result.sense)
            )
        self.finish(task, result)

    def finish(self, task: TargetTask, result: ScsiResult) -> None:
        """``task``'s result goes to its connection machine (Data-In, SCSI Response); whoever waits for its
        end (an ABORT) is woken; outside a received chunk the response is sent at the end of this loop
        iteration."""
        machine = task.conn
        assert machine is not None
        machine.complete(task, result)
        done = task.done
        if done is not None and not done.done():
            done.set_result(None)
        pump = self.pump
        if not pump.in_batch:
            pump.kick()


_FINISHED: Final = object()  # what _step's next() answers once the coroutine has returned


def run_eager(coro: Coroutine[Any, Any, None]) -> None:
    """Start ``coro`` now; it keeps running on the current loop from futures' callbacks."""
    _step(coro.__await__())


def _step(steps: Generator[Any, None, None], _done: object = None) -> None:
    # next(steps, _FINISHED), not coro.send(None): the end of the coroutine comes back as a value, not as a
    # StopIteration raised through this function (which, compiled, would cost a traceback entry per command)
    try:
        yielded: Any = next(steps, _FINISHED)
    except asyncio.CancelledError:
        return
    except Exception:
        log.exception("command coroutine failed")
        return
    if yielded is _FINISHED:
        return
    if yielded is None:  # a bare yield (asyncio.sleep(0)): resume on the next iteration
        asyncio.get_running_loop().call_soon(_step, steps)
        return
    if getattr(yielded, "_asyncio_future_blocking", None):
        yielded._asyncio_future_blocking = False
        yielded.add_done_callback(lambda fut: _step(steps, fut))
        return
    steps.throw(RuntimeError(f"coroutine yielded {yielded!r}, not a future"))
