"""One iSCSI connection on the target, the asyncio side: it moves bytes, runs timers and calls the SCSI
device server.  The protocol is the sans-I/O machines' (:mod:`cistern.wire.target_connection`,
:mod:`cistern.wire.target_session`); login is :class:`~cistern.target.login_glue.LoginDriver`'s.

:class:`Connection` is a ``BufferedProtocol`` whose ``get_buffer`` hands out the
:class:`~cistern.wire.framing.PduReader`'s buffers, so Data-Out payloads land directly in the command's write
buffer (the machine's ``sink``), and whose ``buffer_updated`` is its :class:`~cistern.target.pump.Pump`'s:
each framed PDU goes to the machine with the time of the read and what the machine asks for (a command to
execute, a TMF, a Text answer, a logout) is done at once, so a command served from memory or the page cache
completes inline; the responses leave in one ``transport.writelines`` at the end of the read, and the
connection may then busy-poll for the next command.  This class keeps what is not per read: the
transport's life, login, timers, backpressure and the read-data gate, task management and logout.  A PDU
that cannot be framed (oversized, bad header digest) or a machine's Drop answer closes the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, cast

from cistern.target.engine import CommandEngine
from cistern.target.login_glue import LoginDriver
from cistern.target.pump import Pump
from cistern.wire import pdu as P
from cistern.wire.constants import LogoutReason, LogoutResponse, TmfFunction, TmfResponse
from cistern.wire.framing import PduReader, frame_pdu
from cistern.wire.liveness import ConnectionTimers, TimerEvent
from cistern.wire.target_connection import TargetConnection
from cistern.wire.target_session import Logout, TaskManagement
from cistern.wire.tasks import TargetTask

if TYPE_CHECKING:
    from cistern.target.server import TargetServer
    from cistern.target.session import Session
    from cistern.wire.params import Negotiated

log = logging.getLogger("cistern.target")

# Read data is produced as the connection can take it (issue 12, "read data"): a READ whose EDTL is above
# GATED_READ waits until (a) the read data this connection is producing fits DATA_IN_PER_CONNECTION (a larger
# read goes alone) and (b) what was sent before has drained below the transport's low-water mark, and its
# EDTL is charged to the target-wide data-buffer budget ([limits] max_write_buffers) from then until its
# Data-In is handed to the transport.  An initiator that stops reading therefore pins at most one read's
# data beyond the transport's 4 MiB high-water mark per connection, not queue depth x EDTL.  Small reads
# (the 4 KiB hot path) never wait here.  The gate is this class's; which reads go through it, the engine's.
DATA_IN_PER_CONNECTION = 8 * 1024 * 1024


class Connection(asyncio.BufferedProtocol):
    """An iSCSI connection, from TCP accept to close."""

    #: the commands of this connection, from full feature phase on (set with :attr:`machine`)
    engine: CommandEngine

    def __init__(self, server: TargetServer, portal: tuple[str, int]) -> None:
        self.server = server
        self.portal = portal
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.reader = reader = PduReader(max_data_segment_length=8192)
        #: the per-read path (compiled with the accelerator): framing, the engine, sending, busy polling
        self.pump = pump = Pump(self, reader, server.poll_governor, server.poll_set)
        # asyncio.BufferedProtocol.get_buffer and buffer_updated: the framer's and the pump's own, bound
        # here because the event loop looks them up once, when the transport is made, and then calls them
        # without an interpreted frame in between (``sizehint`` is ignored: the framer knows what comes next)
        self.get_buffer = reader.get_buffer  # type: ignore[method-assign]
        self.buffer_updated = pump.buffer_updated  # type: ignore[method-assign]
        self.login: LoginDriver | None = LoginDriver(server, self)
        self.session: Session | None = None
        self.machine: TargetConnection | None = None  # the protocol, from full feature phase on
        self.cid = 0
        self.statsn = 0  # during login (the machine's from full feature phase on)
        self._write_ok: asyncio.Future[None] | None = None
        self._data_in_held = 0  # bytes of read data being produced on this connection (see GATED_READ)
        self._data_in_waiters: list[asyncio.Future[None]] = []
        # login timeout, NOP-In pings, dead-peer detection: the sans-I/O timer state (wire/liveness.py, the
        # machine's once in full feature phase) and the one asyncio timer that wakes it
        self.timers = ConnectionTimers(
            time.monotonic(),
            login_timeout=server.login_timeout,
            nop_interval=server.nop_interval,
            nop_timeout=server.nop_timeout,
        )
        self._timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ asyncio plumbing

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance check here
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                import socket

                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if (
                transport.get_extra_info("sslcontext") is None
                and transport.get_extra_info("ssl_object") is None
            ):
                with contextlib.suppress(OSError, ValueError):
                    self.pump.fd = sock.fileno()
        self.pump.transport = self.transport
        self.transport.set_write_buffer_limits(high=4 * 1024 * 1024, low=1024 * 1024)
        self.server.connections.add(self)
        self._arm_timer()
        log.debug("connection from %s on %s:%d", self.peer, *self.portal)

    def set_busy_poll(self, budget: float) -> None:
        """Poll for up to ``budget`` seconds after each batch of responses (0: never); plain-TCP
        connections in full feature phase only (:meth:`Pump.set_busy_poll`)."""
        self.pump.set_busy_poll(budget)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.pump.closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.server.connections.discard(self)
        self.pump.stop_polling()
        if self._write_ok is not None and not self._write_ok.done():
            self._write_ok.set_result(None)
        if self.session is not None:
            self.server.connection_closed(self)
        log.debug("connection from %s closed", self.peer)

    def pause_writing(self) -> None:
        # Backpressure both ways: an initiator that does not read its responses must not make us queue
        # them without bound, so stop reading new requests until the send buffer drains below low water.
        if self._write_ok is None or self._write_ok.done():
            self._write_ok = asyncio.get_running_loop().create_future()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self._write_ok is not None and not self._write_ok.done():
            self._write_ok.set_result(None)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    async def drain(self) -> None:
        if self._write_ok is not None and not self._write_ok.done():
            await self._write_ok

    def close(self) -> None:
        pump = self.pump
        if not pump.closing:
            pump.flush()  # what was queued before the close still goes out (e.g. a Logout Response)
            pump.closing = True
            if self.transport is not None:
                self.transport.close()

    def abort(self) -> None:
        self.pump.closing = True
        if self.transport is not None:
            self.transport.abort()

    # ------------------------------------------------------------------ sending

    def send(self, pdu: P.PDU) -> None:
        """Queue a PDU as it is (login phase: Login Responses); it leaves with the batch."""
        machine = self.machine
        pump = self.pump
        if machine is not None:
            machine.send(pdu)
        else:
            pump.out += frame_pdu(pdu, header_digest=False, data_digest=False)
        pump.kick()

    # ------------------------------------------------------------------ login glue

    def login_frame(self, frame: object) -> None:
        """One framed PDU before full feature phase (:meth:`Pump.buffer_updated`): a Login Request goes to
        the login driver; anything else ends the connection."""
        pdu = frame.pdu  # type: ignore[attr-defined]
        # RFC 7143 6.3: only Login Requests are allowed before full feature phase; anything else, an
        # undecodable header included, is a protocol error that ends the connection
        if type(pdu) is not P.LoginRequest or self.login is None:
            log.info(
                "%s: %s during login: dropping connection",
                self.peer,
                type(pdu).__name__ if pdu else frame.error,  # type: ignore[attr-defined]
            )
            self.close()
            return
        self.login.receive(pdu)

    def enter_full_feature(self, session: Session, cid: int, params: Negotiated) -> None:
        """Called by the login driver when the final Login Response has been queued.  ``params``: the
        session's session-wide parameters with this connection's own (digests, segment lengths).  A
        connection of the session with the same CID is reinstated (RFC 7143 6.3.4): it goes."""
        now = time.monotonic()
        machine = TargetConnection(session.core, cid, params, self.statsn, self.timers, now, owner=self)
        self.session = session
        self.cid = cid
        self.machine = machine
        target = session.target
        self.engine = CommandEngine(
            self, machine, session.nexus, target.device if target is not None else None
        )
        self.pump.enter_full_feature(machine, self.engine)  # the final Login Response leaves first
        self.login = None
        reader = self.reader
        reader.max_data_segment_length = params.max_recv_data_segment_length
        reader.header_digest = params.header_digest
        reader.data_digest = params.data_digest
        reader.sink = machine.sink
        old = session.core.attach(machine)
        if old is not None:
            # at ERL 0 and 1 the old connection's tasks end with it
            log.info("%s: CID %d of TSIH %d reinstated", self.peer, cid, session.tsih)
            old.close(now)
            old.owner.abort()
        self.set_busy_poll(self.server.busy_poll)
        self._arm_timer()

    @property
    def params(self) -> Negotiated | None:
        """This connection's parameters once in full feature phase."""
        return self.machine.params if self.machine is not None else None

    @property
    def tasks(self) -> dict[int, TargetTask]:
        """The tasks allegiant to this connection, by ITT (a snapshot)."""
        machine = self.machine
        return machine.session.tasks_of(machine) if machine is not None else {}

    def set_max_xmit(self, length: int) -> None:
        """The initiator declared a new MaxRecvDataSegmentLength in full feature phase (RFC 7143 13.12)."""
        if self.machine is not None:
            self.machine.set_max_xmit(length)

    # ------------------------------------------------------------------ timers (login timeout, NOP-In pings)

    def _arm_timer(self) -> None:
        """One asyncio timer, at the deadline the timer state machine asks for."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        when = (self.machine or self.timers).next_timer()
        if when is not None and not self.pump.closing:
            delay = max(0.0, when - time.monotonic())
            self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.pump.closing:
            return
        event = (self.machine or self.timers).handle_timer(time.monotonic())
        if event is TimerEvent.LOGIN_TIMED_OUT:
            log.info("%s: login timed out", self.peer)
            self.close()
            return
        if event is TimerEvent.PEER_DEAD:
            log.warning(
                "%s: no answer to NOP-In ping for %.0f s: dropping connection",
                self.peer,
                self.timers.nop_timeout,
            )
            self.abort()
            return
        if event is TimerEvent.SEND_PING:
            self.pump.kick()
        self._arm_timer()

    # ------------------------------------------------------------------ what the machine asks for

    async def _admit_data_in(self, size: int) -> bool:
        """Wait until this connection can take ``size`` more bytes of read data (see GATED_READ) and charge
        them to the target-wide budget; False when the budget is full (the read is answered TASK SET FULL,
        SAM-5 5.3.1)."""
        while self._data_in_held and self._data_in_held + size > DATA_IN_PER_CONNECTION:
            waiter = asyncio.get_running_loop().create_future()
            self._data_in_waiters.append(waiter)
            await waiter
        self._data_in_held += size  # claimed before draining, so later reads queue behind this one
        if self.pump.outbox():
            # inside a received chunk the outbox leaves at its end: send what earlier reads produced now, so
            # the transport sees it (and pauses above its high-water mark) before this read makes more
            self.pump.flush()
        await self.drain()
        if self.server.write_budget.reserve_write_buffer(size):
            return True
        self._data_in_held -= size
        self._wake_data_in()
        return False

    def _release_data_in(self, size: int) -> None:
        self._data_in_held -= size
        self.server.write_budget.release_write_buffer(size)
        self._wake_data_in()

    def _wake_data_in(self) -> None:
        waiters, self._data_in_waiters = self._data_in_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # ---- Task management (RFC 7143 11.5)

    async def _abort(self, tasks: list[TargetTask]) -> None:
        """Abort ``tasks`` and wait (at most 30 s) until the device server has returned from each."""
        executing = []
        for task in tasks:  # (a target reset aborts the tasks of other sessions too)
            core = task.conn.session if task.conn is not None else None
            if core is not None:
                executing += core.abort_tasks([task])
        if executing:
            loop = asyncio.get_running_loop()
            waits = []
            for task in executing:
                if task.done is None:  # created only when someone waits for the task to end
                    task.done = loop.create_future()
                waits.append(task.done)
            await asyncio.wait(waits, timeout=30)

    async def _tmf(self, event: TaskManagement) -> None:
        pdu = event.pdu
        session = self.session
        assert session is not None
        core = session.core
        function = pdu.function
        response = TmfResponse.FUNCTION_COMPLETE
        lun = P.decode_lun(pdu.lun)
        target = session.target
        if target is None:
            response = TmfResponse.FUNCTION_REJECTED
        elif function == TmfFunction.ABORT_TASK:
            task = core.tasks.get(pdu.referenced_task_tag)  # ABORT TASK may come on another CID
            if task is not None and task.lun == lun:
                await self._abort([task])
            elif task is None and core.abort_held(pdu.refcmdsn, pdu.cmdsn):
                pass  # never delivered: considered received and aborted
            else:
                response = TmfResponse.TASK_DOES_NOT_EXIST
        elif function in (
            TmfFunction.ABORT_TASK_SET,
            TmfFunction.CLEAR_TASK_SET,
            TmfFunction.LOGICAL_UNIT_RESET,
        ):
            if lun not in target.device.luns:
                response = TmfResponse.LUN_DOES_NOT_EXIST
            else:
                await self._abort([t for t in core.tasks.values() if t.lun == lun])
                name = {
                    TmfFunction.ABORT_TASK_SET: "ABORT_TASK_SET",
                    TmfFunction.CLEAR_TASK_SET: "CLEAR_TASK_SET",
                    TmfFunction.LOGICAL_UNIT_RESET: "LUN_RESET",
                }[TmfFunction(function)]
                assert session.nexus is not None
                target.device.task_management(name, session.nexus, lun)
        elif function in (TmfFunction.TARGET_WARM_RESET, TmfFunction.TARGET_COLD_RESET):
            others = self.server.sessions_of(target.name)
            tasks = [t for s in others for t in s.core.tasks.values()]
            await self._abort(tasks)
            assert session.nexus is not None
            cold = function == TmfFunction.TARGET_COLD_RESET
            target.device.task_management(
                "TARGET_COLD_RESET" if cold else "TARGET_WARM_RESET", session.nexus, None
            )
            event.conn.tmf_response(pdu, response)
            self.pump.flush()  # before the connections close
            if cold:  # RFC 7143 11.5.1: all connections of all sessions to the target are closed
                for s in others:
                    for c in list(s.connections.values()):
                        c.close()
            else:
                for s in others:
                    if s is not session:
                        for c in list(s.connections.values()):
                            c.close()
            return
        else:
            response = TmfResponse.FUNCTION_NOT_SUPPORTED
        event.conn.tmf_response(pdu, response)
        self.pump.kick()

    # ---- Logout (RFC 7143 11.14) and the asynchronous logout request (shutdown)

    def _logout(self, event: Logout) -> None:
        """The machine answered a Logout Request on this connection: close what it names."""
        if event.response != LogoutResponse.SUCCESS:
            self.pump.kick()
            return
        session = self.session
        assert session is not None
        if event.reason == LogoutReason.REMOVE_CONNECTION_FOR_RECOVERY:
            # ERL 2 (RFC 7143 7.2.2): the connection goes now, its tasks wait for TASK REASSIGN
            failed = session.core.connections.get(event.cid)
            if failed is event.conn:
                self.close()
                return
            if failed is not None:
                log.info("%s: CID %d removed for recovery from CID %d", self.peer, event.cid, self.cid)
                failed.close(time.monotonic())
                failed.owner.abort()
            self.pump.kick()
            return
        if event.reason == LogoutReason.CLOSE_SESSION:
            self.server.end_session(session, exclude=self)
        elif len(session.core.connections) <= 1:
            # the logout of the only connection leaves nothing to continue: the session ends now
            self.server.end_session(session, exclude=self, reason="its last connection logged out")
        elif event.cid != self.cid:
            # RFC 7143 11.14.1: a logout of another connection, sent on this one; this one stays
            other = session.core.connections.get(event.cid)
            if other is not None:
                log.info("%s: CID %d logged out from CID %d", self.peer, event.cid, self.cid)
                other.owner.close()
            self.pump.kick()
            return
        self.close()

    def request_logout(self, seconds: int = 2) -> None:
        """Ask the initiator to log out within ``seconds`` (Asynchronous Message, RFC 7143 11.9.1)."""
        if self.machine is not None:
            self.machine.request_logout(seconds)
            self.pump.kick()

    def abort_tasks_with_status(self, lun: int) -> None:
        """Tasks on ``lun`` aborted by another I_T nexus (PREEMPT AND ABORT): TASK ABORTED status (TAS=1)."""
        if self.machine is not None:
            self.machine.abort_lun_with_status(lun)
            self.pump.kick()
