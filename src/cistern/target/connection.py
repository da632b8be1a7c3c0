"""One iSCSI connection on the target: framing, login, and the full feature phase (RFC 7143 sections 4-7, 11).

The asyncio side is thin: :class:`Connection` is a ``BufferedProtocol`` whose ``get_buffer`` hands out the
sans-I/O :class:`~cistern.wire.framing.PduReader`'s buffers, so Data-Out payloads land directly in the
command's write buffer.  Outgoing PDUs leave through ``transport.writelines`` of header + payload view;
read data is never copied between the device server and the socket.  What one received chunk produces
(every command in it that completes at once: memory and page-cache reads) leaves in one ``writelines`` at
the end of ``buffer_updated``; completions outside it (thread-pool I/O) are gathered until the end of the
loop iteration (one ``call_soon``), so a burst of responses costs one ``writev``, not one each.  The
per-command PDUs (Data-In, SCSI Response, R2T) are packed from header templates (``wire.pdu``), not
built as dataclasses.

Hostile input handling, in one place:
- a PDU that cannot be framed (oversized, bad header digest) drops the connection;
- an undecodable or wrongly-placed PDU gets a Reject with the RFC 7143 11.17.1 reason;
- a command whose data-out breaks the sequence rules fails with CHECK CONDITION and never touches the medium;
- commands outside the CmdSN window are dropped silently (RFC 7143 4.2.2.1).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from cistern.scsi.task import DataDirection, ScsiResult, ScsiTask, Status, TaskAttribute
from cistern.target.eager import run_eager
from cistern.target.login_glue import LoginDriver
from cistern.target.recovery import Retained, RetainedSet
from cistern.target.session import CmdDisposition
from cistern.target.tasks import DataOutError, Sequence, TargetTask, TaskState, UnknownTransferTag
from cistern.wire import pdu as P
from cistern.wire.constants import (
    BHS_LEN,
    DATAIN_ACK,
    DATAIN_STATUS,
    FLAG_FINAL,
    RESERVED_TAG,
    RSP_OVERFLOW,
    RSP_UNDERFLOW,
    TEXT_CONTINUE,
    AsyncEvent,
    LogoutReason,
    LogoutResponse,
    RejectReason,
    SnackType,
    TmfFunction,
    TmfResponse,
)
from cistern.wire.framing import Frame, FramingError, PduReader, frame_parts, frame_pdu
from cistern.wire.liveness import ConnectionTimers, TimerEvent
from cistern.wire.pdu import Buffer
from cistern.wire.recovery import StatusLog, snack_range
from cistern.wire.serial import sn_add, sn_in_window, sn_lt
from cistern.wire.text import TextAccumulator, TextError

if TYPE_CHECKING:
    from cistern.target.server import TargetServer
    from cistern.target.session import Session
    from cistern.wire.params import Negotiated

log = logging.getLogger("cistern.target")

# SAM/SPC sense for transport-level failures of a command (fixed format, 18 bytes)
_ABORTED_COMMAND = 0x0B


def _fixed_sense(key: int, asc: int, ascq: int) -> bytes:
    sense = bytearray(18)
    sense[0] = 0x70
    sense[2] = key
    sense[7] = 10
    sense[12] = asc
    sense[13] = ascq
    return bytes(sense)


SENSE_DATA_PHASE_ERROR = _fixed_sense(_ABORTED_COMMAND, 0x4B, 0x00)
SENSE_CRC_ERROR = _fixed_sense(_ABORTED_COMMAND, 0x47, 0x05)  # PROTOCOL SERVICE CRC ERROR
SENSE_INVALID_FIELD_IN_IU = _fixed_sense(0x05, 0x0E, 0x03)  # INVALID FIELD IN COMMAND INFORMATION UNIT


MAX_FFP_TEXT = 64 * 1024  # largest Text Request we assemble in full feature phase


def residual_flags(edtl: int, wanted: int, moved: int) -> tuple[int, int]:
    """SCSI Response flags and Residual Count (RFC 7143 11.4.5): overflow when the command wanted more than
    the Expected Data Transfer Length, underflow when less than EDTL was moved."""
    if wanted > edtl:
        return FLAG_FINAL | RSP_OVERFLOW, wanted - edtl
    if moved < edtl:
        return FLAG_FINAL | RSP_UNDERFLOW, edtl - moved
    return FLAG_FINAL, 0


# SCSI Command flags -> task attribute (ATTR, 3 bits) and direction (W = 0x20, R = 0x40)
_ATTRIBUTES = tuple(TaskAttribute(a) if a <= TaskAttribute.ACA else TaskAttribute.SIMPLE for a in range(8))
_DIRECTIONS = (DataDirection.NONE, DataDirection.WRITE, DataDirection.READ, DataDirection.BIDI)


class Connection(asyncio.BufferedProtocol):
    """An iSCSI connection, from TCP accept to close."""

    def __init__(self, server: TargetServer, portal: tuple[str, int]) -> None:
        self.server = server
        self.portal = portal
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.reader = PduReader(max_data_segment_length=8192, sink=self._sink)
        self.login: LoginDriver | None = LoginDriver(server, self)
        self.session: Session | None = None
        self.params: Negotiated | None = None  # this connection's parameters once in full feature phase
        self.cid = 0
        self.statsn = 0
        self.tasks: dict[int, TargetTask] = {}  # ITT -> task (allegiant to this connection)
        self._ttt = 0x100
        self._closing = False
        self._write_ok: asyncio.Future[None] | None = None
        # login timeout, NOP-In pings, dead-peer detection: the sans-I/O timer state (wire/liveness.py) and
        # the one asyncio timer that wakes it
        self.timers = ConnectionTimers(
            time.monotonic(),
            login_timeout=server.login_timeout,
            nop_interval=server.nop_interval,
            nop_timeout=server.nop_timeout,
        )
        self._timer: asyncio.TimerHandle | None = None
        # the rest of a long Text Response: (TTT, ITT, remaining text).  One slot: RFC 7143 11.10 allows a
        # single outstanding Text Request per connection, and a new request discards an unfinished one
        self._text_pending: tuple[int, int, bytes] | None = None  # (TTT, ITT, rest of our answer)
        self._text_in: tuple[int, int, TextAccumulator] | None = None  # (TTT, ITT, request so far)
        self._header_digest = False
        self._data_digest = False
        self._max_xmit = 8192
        self._logout_sent = False
        self._out: list[Buffer] | None = None  # buffers to send at the end of this batch (see module doc)
        # ITTs of tasks that ended before all their data came (failed or aborted while collecting): their
        # late Data-Out is discarded silently rather than rejected; bounded, the oldest forgotten first
        self._ended_early: collections.deque[int] = collections.deque(maxlen=64)
        # ErrorRecoveryLevel >= 1 only (RFC 7143 7.x, 11.16): statuses and read data kept for SNACKs
        self._erl = 0
        self._status_log: StatusLog | None = None
        self._retained = RetainedSet()
        self._flush_scheduled = False

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
        self.transport.set_write_buffer_limits(high=4 * 1024 * 1024, low=1024 * 1024)
        self.server.connections.add(self)
        self._arm_timer()
        log.debug("connection from %s on %s:%d", self.peer, *self.portal)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.reader.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self.timers.last_rx = time.monotonic()
        reader = self.reader
        reader.buffer_filled(nbytes)
        if self._out is None:
            self._out = []
        try:
            while not self._closing:
                try:
                    frame = reader.next_frame()
                except FramingError as exc:
                    log.warning("%s: dropping connection: %s", self.peer, exc)
                    self.close()
                    return
                if frame is None:
                    return
                try:
                    self._on_frame(frame)
                except Exception:  # a bug of ours: never let it kill the server, but drop this connection
                    log.exception("%s: internal error handling %s", self.peer, type(frame.pdu).__name__)
                    self.close()
                    return
        finally:
            if reader.bulk and self._out and not self._closing:
                # large PDUs come one per read: gather the responses of this loop iteration's reads
                if not self._flush_scheduled:
                    self._flush_scheduled = True
                    asyncio.get_running_loop().call_soon(self._flush)
            else:
                self._flush()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.server.connections.discard(self)
        if self._write_ok is not None and not self._write_ok.done():
            self._write_ok.set_result(None)
        for task in self.tasks.values():
            task.abort()
        self.tasks.clear()
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
        if not self._closing:
            self._flush()  # what was queued before the close still goes out (e.g. a Logout Response)
            self._closing = True
            if self.transport is not None:
                self.transport.close()

    def abort(self) -> None:
        self._closing = True
        if self.transport is not None:
            self.transport.abort()

    # ------------------------------------------------------------------ sending

    def send(self, pdu: P.PDU) -> None:
        self._emit(frame_pdu(pdu, header_digest=self._header_digest, data_digest=self._data_digest))

    def _emit(self, parts: list[Buffer]) -> None:
        """Queue one framed PDU; it leaves with the batch (see the module docstring), in order."""
        out = self._out
        if out is None:
            self._out = out = []
            if not self._flush_scheduled:
                self._flush_scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)
        out += parts

    def _flush(self) -> None:
        self._flush_scheduled = False
        out, self._out = self._out, None
        if out:
            transport = self.transport
            if transport is not None and not transport.is_closing():
                transport.writelines(out)

    def _next_statsn(self) -> int:
        statsn = self.statsn
        self.statsn = sn_add(statsn, 1)
        return statsn

    def _window(self) -> tuple[int, int]:
        s = self.session
        assert s is not None
        return s.expcmdsn, s.maxcmdsn

    def send_status(self, pdu: P.PDU) -> None:
        """Send a PDU that carries status: it takes the next StatSN and the current CmdSN window."""
        pdu.statsn = statsn = self._next_statsn()  # type: ignore[attr-defined]
        pdu.expcmdsn, pdu.maxcmdsn = self._window()  # type: ignore[attr-defined]
        parts = frame_pdu(pdu, header_digest=self._header_digest, data_digest=self._data_digest)
        if self._status_log is not None:
            self._status_log.add(statsn, [bytes(p) for p in parts])
        self._emit(parts)

    def reject(self, reason: RejectReason, header: bytes) -> None:
        log.info("%s: Reject reason 0x%02x", self.peer, reason)
        rej = P.Reject(reason=int(reason), data=bytes(header[:BHS_LEN]))
        if self.session is None:
            self.send(rej)
            return
        self.send_status(rej)

    # ------------------------------------------------------------------ login glue

    def enter_full_feature(self, session: Session, cid: int, params: Negotiated) -> None:
        """Called by the login driver when the final Login Response has been queued.  ``params``: the
        session's session-wide parameters with this connection's own (digests, segment lengths)."""
        self.session = session
        self.cid = cid
        self.params = params
        self.reader.max_data_segment_length = params.max_recv_data_segment_length
        self.reader.header_digest = params.header_digest
        self.reader.data_digest = params.data_digest
        self._header_digest = params.header_digest
        self._data_digest = params.data_digest
        self._max_xmit = params.max_xmit_data_segment_length
        self.login = None
        self._erl = params.error_recovery_level
        if self._erl:
            self._status_log = StatusLog()
        self.timers.full_feature(time.monotonic())
        self._arm_timer()

    def set_max_xmit(self, length: int) -> None:
        """The initiator declared a new MaxRecvDataSegmentLength in full feature phase (RFC 7143 13.12):
        PDUs we send from now on carry at most ``length`` data bytes."""
        self._max_xmit = length
        if self.params is not None:
            self.params = self.params.replace(max_xmit_data_segment_length=length)

    # ------------------------------------------------------------------ timers (login timeout, NOP-In pings)

    def _arm_timer(self) -> None:
        """One asyncio timer, at the deadline the timer state machine asks for."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        when = self.timers.next_timer()
        if when is not None and not self._closing:
            delay = max(0.0, when - time.monotonic())
            self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._closing:
            return
        now = time.monotonic()
        event = self.timers.handle_timer(now)
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
        if event is TimerEvent.SEND_PING and self.session is not None:
            ttt = self._new_ttt()
            self.timers.ping_sent(ttt, now)
            exp, mx = self._window()
            self.send(P.NopIn(itt=RESERVED_TAG, ttt=ttt, statsn=self.statsn, expcmdsn=exp, maxcmdsn=mx))
        self._arm_timer()

    def _new_ttt(self) -> int:
        self._ttt = (self._ttt + 1) & 0xFFFFFFFF
        if self._ttt == RESERVED_TAG:
            self._ttt = 0x100
        return self._ttt

    # ------------------------------------------------------------------ receive dispatch

    def _sink(self, pdu: P.PDU) -> memoryview | None:
        """Zero copy: a Data-Out payload lands directly in its command's write buffer."""
        if type(pdu) is P.DataOut:
            task = self.tasks.get(pdu.itt)
            if task is not None and task.buf is not None:
                return task.sink(pdu.buffer_offset, len(task.buf) - pdu.buffer_offset)
        return None

    def _on_frame(self, frame: Frame) -> None:
        pdu = frame.pdu
        if self.login is not None:
            # RFC 7143 6.3: only Login Requests are allowed before full feature phase; anything else,
            # an undecodable header included, is a protocol error that ends the connection
            if type(pdu) is not P.LoginRequest:
                log.info(
                    "%s: %s during login: dropping connection",
                    self.peer,
                    type(pdu).__name__ if pdu else frame.error,
                )
                self.close()
                return
            self.login.receive(pdu)
            return
        if pdu is None:
            assert frame.error is not None
            self.reject(frame.error.reason, frame.header)
            return
        if self._erl:
            expstatsn = getattr(pdu, "expstatsn", None)
            if expstatsn is not None:
                self._acknowledge(expstatsn)
        if not frame.data_digest_ok:
            self._data_digest_error(pdu, frame.header)
            return
        handler = self._HANDLERS.get(type(pdu))
        if handler is None:
            # initiator opcodes we do not take here (SNACK at ERL 0, RFC 7143 11.16; Login in full feature
            # phase) and target opcodes sent by the initiator are protocol errors
            self.reject(RejectReason.PROTOCOL_ERROR, frame.header)
            return
        handler(self, pdu, frame.header)

    def _data_digest_error(self, pdu: P.PDU, header: bytes) -> None:
        self.reject(RejectReason.DATA_DIGEST_ERROR, header)
        if isinstance(pdu, P.DataOut):
            task = self.tasks.get(pdu.itt)
            if task is not None and task.state is TaskState.COLLECTING:
                if self._erl:
                    self._recovery_r2t(task, pdu)
                else:
                    self._fail_task(task, SENSE_CRC_ERROR)

    # ------------------------------------------------------------------ ErrorRecoveryLevel 1

    def _acknowledge(self, expstatsn: int) -> None:
        """ExpStatSN from the initiator: statuses (and the read data of commands) before it are no longer
        needed for a SNACK (RFC 7143 4.2.2.2)."""
        log_ = self._status_log
        if log_ is not None and len(log_):
            log_.acknowledge(expstatsn)
        if len(self._retained):
            self._retained.acknowledge(lambda statsn: sn_lt(statsn, expstatsn))

    def _recovery_r2t(self, task: TargetTask, pdu: P.DataOut) -> None:
        """A Data-Out whose data digest failed (its header is sound): account it in its sequence, then ask
        for exactly its bytes again with a recovery R2T (RFC 7143 7.2.2 / 7.4 at ERL >= 1)."""
        length = len(pdu.data)
        try:
            seq = task.accept(pdu.ttt, pdu.datasn, pdu.buffer_offset, length, pdu.final)
        except DataOutError as exc:
            self._fail_task(task, SENSE_CRC_ERROR, str(exc))
            return
        task.received -= length  # these bytes did not arrive intact
        if seq.complete and seq.ttt != RESERVED_TAG:
            del task.r2ts[seq.ttt]
        if length:
            ttt = self._new_ttt()
            recovery = Sequence(ttt, pdu.buffer_offset, length, r2tsn=task.r2tsn)
            task.r2ts[ttt] = recovery
            self._emit_r2t(task, recovery)
            task.r2tsn += 1
        self._send_r2ts(task)
        self._maybe_execute(task)

    def _emit_r2t(self, task: TargetTask, seq: Sequence) -> None:
        exp, mx = self._window()
        lun = P.encode_lun(task.lun) if task.lun >= 0 else 0
        header = P.r2t_header(lun, task.itt, seq.ttt, self.statsn, exp, mx, seq.r2tsn, seq.offset, seq.length)
        self._emit(frame_parts(header, b"", self._header_digest, False))

    def _send_data_in_retained(
        self, task: TargetTask, lun_field: int, view: memoryview, rflags: int, residual: int
    ) -> Retained:
        """ERL >= 1 reads: Data-In without status (a SCSI Response follows), the last PDU asking for a
        DataACK (A bit, RFC 7143 11.7.2); the data is kept for Data/R-Data SNACK until acknowledged."""
        assert self.session is not None
        kept = Retained(
            lun_field, view, self._max_xmit, self.session.params.max_burst_length, self._new_ttt()
        )
        self._retained.add(task.itt, kept)
        self._resend_data_in(task.itt, kept, range(kept.count()))
        return kept

    def _resend_data_in(self, itt: int, kept: Retained, numbers: range) -> None:
        hd, dd = self._header_digest, self._data_digest
        exp, mx = self._window()
        last = kept.count() - 1
        for datasn, (start, end, flags) in enumerate(kept.segments()):
            if datasn not in numbers:
                continue
            pdu = P.DataIn(
                flags=flags | (DATAIN_ACK if datasn == last else 0),
                lun=kept.lun_field,
                itt=itt,
                ttt=kept.ack_ttt if datasn == last else RESERVED_TAG,
                statsn=self.statsn,
                expcmdsn=exp,
                maxcmdsn=mx,
                datasn=datasn,
                buffer_offset=start,
                data=kept.view[start:end],
            )
            self._emit(frame_pdu(pdu, header_digest=hd, data_digest=dd))

    def _on_snack(self, pdu: P.SnackRequest, header: bytes) -> None:
        """SNACK (RFC 7143 11.16): only at ErrorRecoveryLevel >= 1; at 0 it is a protocol error."""
        if not self._erl:
            self.reject(RejectReason.PROTOCOL_ERROR, header)
            return
        kind = pdu.snack_type
        if kind == SnackType.STATUS:
            assert self._status_log is not None
            found = self._status_log.get(pdu.begrun, pdu.runlength, self.statsn)
            if found is None:
                self.reject(RejectReason.SNACK_REJECT, header)
                return
            for parts in found:
                self._emit(list(parts))
            return
        if kind == SnackType.DATA_R2T:
            task = self.tasks.get(pdu.itt)
            if task is not None and task.state is TaskState.COLLECTING:
                stop = pdu.begrun + pdu.runlength if pdu.runlength else task.r2tsn
                again = [q for q in task.r2ts.values() if q.r2tsn >= 0 and pdu.begrun <= q.r2tsn < stop]
                if not again:
                    self.reject(RejectReason.SNACK_REJECT, header)
                    return
                for seq in sorted(again, key=lambda q: q.r2tsn):
                    self._emit_r2t(task, seq)
                return
            kept = self._retained.get(pdu.itt)
            numbers = snack_range(pdu.begrun, pdu.runlength, kept.count()) if kept is not None else None
            if kept is None or numbers is None:
                self.reject(RejectReason.SNACK_REJECT, header)
                return
            self._resend_data_in(pdu.itt, kept, numbers)
            return
        if kind == SnackType.DATA_ACK:
            acked = self._retained.by_ack_ttt(pdu.ttt)
            if acked is None:
                self.reject(RejectReason.INVALID_DATA_ACK, header)
                return
            if pdu.begrun > acked[1].count():
                self.reject(RejectReason.PROTOCOL_ERROR, header)
            elif pdu.begrun == acked[1].count():
                self._retained.discard(acked[0])  # all of it acknowledged: free it
            return
        if kind == SnackType.RDATA:
            kept = self._retained.get(pdu.itt)
            if kept is None or pdu.begrun or pdu.runlength:
                self.reject(RejectReason.SNACK_REJECT, header)
                return
            # resegmented to the MaxRecvDataSegmentLength now in force, all of it (RFC 7143 11.16.3)
            kept.mxl = self._max_xmit
            self._resend_data_in(pdu.itt, kept, range(kept.count()))
            return
        self.reject(RejectReason.PROTOCOL_ERROR, header)

    def _check_sn(self, pdu: P.PDU, header: bytes, on_deliver: Callable[[Any, bytes], None]) -> None:
        """Route a numbered request through the CmdSN window (RFC 7143 4.2.2.1): ``on_deliver(pdu, header)``
        runs now when it is in order, later when the gap before it fills, never when it is dropped."""
        session = self.session
        assert session is not None
        cmdsn = pdu.cmdsn  # type: ignore[attr-defined]
        if cmdsn == session.expcmdsn and not pdu.immediate and not session.held:
            session.expcmdsn = (cmdsn + 1) & 0xFFFFFFFF  # in order, nothing held: the common case
            on_deliver(pdu, header)
            return
        disposition = session.classify(cmdsn, pdu.immediate)
        if disposition is CmdDisposition.DROP:
            log.info(
                "%s: CmdSN 0x%08x outside window [0x%08x, 0x%08x]: dropped",
                self.peer,
                cmdsn,
                session.expcmdsn,
                session.maxcmdsn,
            )
            return
        if disposition is CmdDisposition.HOLD:
            session.held[cmdsn] = functools.partial(on_deliver, pdu, header)
            return
        if not pdu.immediate:
            ready = session.advance()
            on_deliver(pdu, header)
            for deliver in ready:
                deliver()
        else:
            on_deliver(pdu, header)

    # ---- NOP-Out

    def _on_nop_out(self, pdu: P.NopOut, header: bytes) -> None:
        if pdu.ttt != RESERVED_TAG:  # the answer to our ping
            self.timers.ping_answered(pdu.ttt)
            return
        if pdu.itt == RESERVED_TAG:
            if not pdu.immediate:
                self.reject(RejectReason.PROTOCOL_ERROR, header)  # RFC 7143 11.18: must be immediate
            return

        self._check_sn(pdu, header, self._deliver_nop_out)

    def _deliver_nop_out(self, pdu: P.NopOut, header: bytes) -> None:
        self.send_status(P.NopIn(lun=pdu.lun, itt=pdu.itt, ttt=RESERVED_TAG, data=bytes(pdu.data)))

    # ---- SCSI Command

    def _on_scsi_command(self, pdu: P.ScsiCommand, header: bytes) -> None:
        # A rejected command still consumes its CmdSN: it goes through the window like any other, and the
        # checks run when it is delivered in order.  Rejecting on arrival without advancing ExpCmdSN would
        # leave a gap that holds every later command forever (the initiator never resends a rejected one).
        self._check_sn(pdu, header, self._deliver_command)

    def _deliver_command(self, pdu: P.ScsiCommand, header: bytes) -> None:
        reason = self._command_error(pdu)
        if reason is not None:
            self.reject(reason, header)
            return
        cdb = pdu.parse_ahs()[0] if pdu.ahs else pdu.cdb16
        task = TargetTask(
            pdu.itt,
            P.decode_lun(pdu.lun),
            pdu.cmdsn,
            bytes(cdb),
            pdu.flags,
            pdu.expected_data_transfer_length,
            pdu.immediate,
        )
        self._start_command(task, pdu)

    def _command_error(self, pdu: P.ScsiCommand) -> RejectReason | None:
        """Why a SCSI Command PDU must be rejected (RFC 7143 11.17.1), or None."""
        session = self.session
        assert session is not None
        if session.discovery or pdu.itt == RESERVED_TAG:
            return RejectReason.PROTOCOL_ERROR
        if pdu.itt in self.tasks or (
            len(session.connections) > 1 and any(pdu.itt in c.tasks for c in session.connections.values())
        ):
            return RejectReason.TASK_IN_PROGRESS  # an ITT is unique in the session (RFC 7143 11.2.1.8)
        if pdu.immediate and len(self.tasks) >= session.queue_depth:
            # immediate commands bypass the CmdSN window; cap them so tasks cannot pile up without limit
            return RejectReason.IMMEDIATE_COMMAND_REJECT
        if pdu.ahs:
            try:
                pdu.parse_ahs()
            except P.PduError as exc:
                return exc.reason
        params = session.params
        dlen = len(pdu.data)
        # Immediate data rules (RFC 7143 4.2.5.2, 13.13): only with W, within EDTL and FirstBurstLength
        if dlen and (
            not pdu.write
            or not params.immediate_data
            or dlen > pdu.expected_data_transfer_length
            or dlen > params.first_burst_length
        ):
            return RejectReason.PROTOCOL_ERROR
        return None

    def _start_command(self, task: TargetTask, pdu: P.ScsiCommand) -> None:
        session = self.session
        assert session is not None
        if not task.immediate:
            session.outstanding += 1
        self.tasks[task.itt] = task
        if not pdu.write or task.edtl == 0:
            task.state = TaskState.EXECUTING
            self._spawn(task)
            return
        limits = session.target.limits if session.target else None
        if limits is not None and task.edtl > limits.max_write_buffer:
            # too large to buffer: refuse without reading data (the initiator gets no R2T)
            self._ended_early.append(task.itt)
            self._complete(task, ScsiResult(Status.CHECK_CONDITION, _fixed_sense(0x05, 0x24, 0x00)))
            return
        if limits is not None and session.write_buffered + task.edtl > limits.max_session_write_buffer:
            # every write buffer is allocated up front: bound their sum per session (SAM-5 TASK SET FULL,
            # the initiator retries later) so a hostile initiator cannot make us allocate queue depth x EDTL
            self._ended_early.append(task.itt)
            self._complete(task, ScsiResult(Status.TASK_SET_FULL, b""))
            return
        params = session.params
        data = pdu.data
        imm = len(data)
        owner = data.obj if isinstance(data, memoryview) else None
        if imm == task.edtl and type(owner) is bytearray and len(owner) == imm:
            # all the data came as immediate data, in a buffer the framer allocated for this PDU alone:
            # it becomes the write buffer as it is (no second allocation, no copy)
            task.buf = owner
        else:
            task.buf = bytearray(task.edtl)
            if imm:
                task.buf[:imm] = data
        session.write_buffered += task.edtl
        task.received = imm
        unsolicited_end = imm
        if not params.initial_r2t and not pdu.final:
            # RFC 7143 11.3.1: F=0 announces unsolicited Data-Out, up to FirstBurstLength in all; with F=1
            # only the immediate data (if any) was unsolicited and the rest is asked for with R2Ts
            unsolicited_end = max(imm, min(params.first_burst_length, task.edtl))
            if unsolicited_end > imm:
                task.unsolicited = Sequence(RESERVED_TAG, imm, unsolicited_end - imm)
        task.next_r2t_offset = unsolicited_end
        self._send_r2ts(task)
        self._maybe_execute(task)

    def _send_r2ts(self, task: TargetTask) -> None:
        session = self.session
        assert session is not None
        params = session.params
        while task.next_r2t_offset < task.edtl and len(task.r2ts) < params.max_outstanding_r2t:
            offset = task.next_r2t_offset
            length = min(params.max_burst_length, task.edtl - offset)
            ttt = self._new_ttt()
            task.r2ts[ttt] = Sequence(ttt, offset, length, 0, 0, task.r2tsn)
            task.next_r2t_offset = offset + length
            exp, mx = self._window()
            header = P.r2t_header(
                P.encode_lun(task.lun) if task.lun >= 0 else 0,
                task.itt,
                ttt,
                self.statsn,
                exp,
                mx,
                task.r2tsn,
                offset,
                length,
            )
            self._emit(frame_parts(header, b"", self._header_digest, False))
            task.r2tsn += 1

    def _maybe_execute(self, task: TargetTask) -> None:
        if task.state is TaskState.COLLECTING and task.received >= task.edtl:
            task.state = TaskState.EXECUTING
            self._spawn(task)

    # ---- Data-Out

    def _on_data_out(self, pdu: P.DataOut, header: bytes) -> None:
        task = self.tasks.get(pdu.itt)
        if task is None:
            if pdu.itt not in self._ended_early:
                # RFC 7143 11.17.1: an ITT that names no task of this connection is an invalid PDU field
                self.reject(RejectReason.INVALID_PDU_FIELD, header)
            return  # data for a command that ended before its data did: discard (RFC 7143 11.5.1)
        if task.state is not TaskState.COLLECTING:
            return  # all data already arrived (or the task was aborted): discard
        data = pdu.data
        if not isinstance(data, memoryview) or data.obj is not task.buf:
            # not sunk (e.g. offset outside the buffer): validate first, then copy
            sink = task.sink(pdu.buffer_offset, len(data))
            if sink is None:
                self._fail_task(task, SENSE_DATA_PHASE_ERROR, "Data-Out outside the expected transfer")
                return
        try:
            seq = task.accept(pdu.ttt, pdu.datasn, pdu.buffer_offset, len(data), pdu.final)
        except UnknownTransferTag as exc:
            # a Target Transfer Tag of no outstanding R2T of this task (RFC 7143 11.7.4, 11.17.1): Reject;
            # at ErrorRecoveryLevel 0 nothing can resend the burst, so the command ends as well
            self.reject(RejectReason.INVALID_PDU_FIELD, header)
            self._fail_task(task, SENSE_DATA_PHASE_ERROR, str(exc))
            return
        except DataOutError as exc:
            self._fail_task(task, SENSE_DATA_PHASE_ERROR, str(exc))
            return
        if not isinstance(data, memoryview) or data.obj is not task.buf:
            assert task.buf is not None
            task.buf[pdu.buffer_offset : pdu.buffer_offset + len(data)] = data
        if seq.complete and seq.ttt != RESERVED_TAG:
            del task.r2ts[seq.ttt]
            self._send_r2ts(task)
        self._maybe_execute(task)

    def _fail_task(self, task: TargetTask, sense: bytes, why: str = "") -> None:
        if why:
            log.info("%s: ITT 0x%08x failed: %s", self.peer, task.itt, why)
        self._ended_early.append(task.itt)  # its remaining Data-Out may still be on the way
        task.state = TaskState.DONE
        self._complete(task, ScsiResult(Status.CHECK_CONDITION, sense))

    # ---- execution and response

    def _spawn(self, task: TargetTask) -> None:
        run_eager(self._execute(task))

    async def _execute(self, task: TargetTask) -> None:
        session = self.session
        assert session is not None and session.target is not None and session.nexus is not None
        flags = task.flags
        scsi_task = ScsiTask(
            session.nexus,
            task.lun,
            task.cdb,
            task.itt,
            _ATTRIBUTES[flags & 7],
            _DIRECTIONS[(flags >> 5) & 3],
            task.edtl,
            task.buf,
        )
        task.scsi = scsi_task
        try:
            result = await session.target.device.execute(scsi_task)
        except Exception:
            log.exception("%s: device server failed on CDB %s", self.peer, task.cdb[:16].hex())
            result = ScsiResult(
                Status.CHECK_CONDITION, _fixed_sense(0x04, 0x44, 0x00)
            )  # INTERNAL TARGET FAILURE
        if task.aborted or self._closing:
            self._finish(task)
            if task.report_aborted:
                self._send_task_aborted(task)
            return
        if result.data_in is not None and len(result.data_in) > 65536:
            await self.drain()
        self._complete(task, result)

    def _finish(self, task: TargetTask) -> None:
        task.state = TaskState.DONE
        if task.buf is not None and self.session is not None:
            self.session.write_buffered -= len(task.buf)
            task.buf = None  # the device server is done with it (or never got it)
        if self.tasks.get(task.itt) is task:
            del self.tasks[task.itt]
            session = self.session
            if session is not None and not task.immediate:
                session.outstanding -= 1
        if task.done is not None and not task.done.done():
            task.done.set_result(None)

    def _complete(self, task: TargetTask, result: ScsiResult) -> None:
        """Send Data-In (with phase-collapsed status when possible) and/or the SCSI Response."""
        self._finish(task)
        if task.aborted or self._closing:
            return
        edtl = task.edtl
        lun_field = P.encode_lun(task.lun) if task.lun >= 0 else 0
        data = result.data_in
        is_read = bool(task.flags & 0x40)
        sent = min(len(data), edtl) if (data is not None and is_read) else 0
        tl = result.transfer_length
        if is_read:
            wanted = tl if tl is not None else len(data or b"")
            moved = sent
        else:
            wanted = tl if tl is not None else edtl
            moved = min(wanted, edtl)
        rflags, residual = residual_flags(edtl, wanted, moved)
        if sent:
            assert data is not None
            view = data if isinstance(data, memoryview) else memoryview(data)
            if len(view) != sent:
                view = view[:sent]
            if self._erl:
                kept: Retained | None = self._send_data_in_retained(task, lun_field, view, rflags, residual)
                datasn = kept.count()  # type: ignore[union-attr]
            else:
                kept = None
                collapse = result.status == 0 and not result.sense
                datasn = self._send_data_in(task, lun_field, view, collapse, rflags, residual, result.status)
                if collapse:
                    return
        else:
            datasn = 0
            kept = None
        sense = P.sense_segment(result.sense) if result.sense else b""
        exp, mx = self._window()
        statsn = self._next_statsn()
        header = P.scsi_response_header(
            rflags, 0, result.status, task.itt, statsn, exp, mx, datasn, residual, len(sense)
        )
        parts = frame_parts(header, sense, self._header_digest, self._data_digest)
        if self._status_log is not None:
            self._status_log.add(statsn, [bytes(p) for p in parts])
            if kept is not None:
                kept.statsn = statsn
        self._emit(parts)

    def _send_data_in(
        self,
        task: TargetTask,
        lun_field: int,
        view: memoryview,
        collapse: bool,
        rflags: int,
        residual: int,
        status: int,
    ) -> int:
        """Send ``view`` as Data-In PDUs; returns how many (the ExpDataSN of a separate SCSI Response).

        RFC 7143 11.7.1/13.14: a Data-In sequence is at most MaxBurstLength bytes and its last PDU has the
        F bit; no PDU carries more than MaxRecvDataSegmentLength (the initiator's) and none straddles a
        sequence boundary, so a PDU is cut short where a burst ends.  DataSN runs 0, 1, 2... over the command.
        """
        session = self.session
        assert session is not None
        mxl = self._max_xmit
        burst = session.params.max_burst_length
        total = len(view)
        if self._closing or self.transport is None:
            return 0
        hd, dd = self._header_digest, self._data_digest
        itt = task.itt
        if collapse and total <= mxl and total <= burst:  # the common case: one PDU with the status
            exp, mx = self._window()
            flags = FLAG_FINAL | DATAIN_STATUS | (rflags & (RSP_OVERFLOW | RSP_UNDERFLOW))
            header = P.data_in_header(
                flags, status, lun_field, itt, self._next_statsn(), exp, mx, 0, 0, residual, total
            )
            self._emit(frame_parts(header, view, hd, dd))
            return 1
        offset = 0
        datasn = 0
        while offset < total:
            end = min(offset + mxl, total, (offset // burst + 1) * burst)
            last = end >= total
            exp, mx = self._window()
            if last and collapse:
                flags = FLAG_FINAL | DATAIN_STATUS | (rflags & (RSP_OVERFLOW | RSP_UNDERFLOW))
                header = P.data_in_header(
                    flags,
                    status,
                    lun_field,
                    itt,
                    self._next_statsn(),
                    exp,
                    mx,
                    datasn,
                    offset,
                    residual,
                    end - offset,
                )
            else:
                flags = FLAG_FINAL if (last or end % burst == 0) else 0
                header = P.data_in_header(
                    flags, 0, lun_field, itt, 0, exp, mx, datasn, offset, 0, end - offset
                )
            self._emit(frame_parts(header, view[offset:end], hd, dd))
            offset = end
            datasn += 1
        return datasn

    # ---- Task management

    def _on_tmf(self, pdu: P.TaskMgmtRequest, header: bytes) -> None:
        self._check_sn(pdu, header, self._deliver_tmf)

    def _deliver_tmf(self, pdu: P.TaskMgmtRequest, header: bytes) -> None:
        asyncio.get_running_loop().create_task(self._tmf(pdu))

    async def _tmf(self, pdu: P.TaskMgmtRequest) -> None:
        session = self.session
        assert session is not None
        function = pdu.function
        response = TmfResponse.FUNCTION_COMPLETE
        lun = P.decode_lun(pdu.lun)
        target = session.target
        if target is None:
            response = TmfResponse.FUNCTION_REJECTED
        elif function == TmfFunction.ABORT_TASK:
            task = self._session_task(pdu.referenced_task_tag)
            if task is not None and task.lun == lun:
                await self._abort([task])
            elif (
                task is None
                and sn_in_window(pdu.refcmdsn, session.expcmdsn, session.maxcmdsn)
                and sn_lt(pdu.refcmdsn, pdu.cmdsn)
                and pdu.refcmdsn != session.expcmdsn
                and pdu.refcmdsn in session.held
            ):
                session.held.pop(pdu.refcmdsn, None)  # never delivered: consider it received and aborted
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
                await self._abort([t for t in self._all_session_tasks() if t.lun == lun])
                name = {
                    TmfFunction.ABORT_TASK_SET: "ABORT_TASK_SET",
                    TmfFunction.CLEAR_TASK_SET: "CLEAR_TASK_SET",
                    TmfFunction.LOGICAL_UNIT_RESET: "LUN_RESET",
                }[TmfFunction(function)]
                assert session.nexus is not None
                target.device.task_management(name, session.nexus, lun)
        elif function in (TmfFunction.TARGET_WARM_RESET, TmfFunction.TARGET_COLD_RESET):
            others = self.server.sessions_of(target.name)
            tasks = [t for s in others for c in s.connections.values() for t in c.tasks.values()]
            await self._abort(tasks)
            assert session.nexus is not None
            cold = function == TmfFunction.TARGET_COLD_RESET
            target.device.task_management(
                "TARGET_COLD_RESET" if cold else "TARGET_WARM_RESET", session.nexus, None
            )
            self.send_status(P.TaskMgmtResponse(response=int(response), itt=pdu.itt))
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
        elif function == TmfFunction.TASK_REASSIGN:
            response = TmfResponse.TASK_REASSIGN_NOT_SUPPORTED
        else:
            response = TmfResponse.FUNCTION_NOT_SUPPORTED
        self.send_status(P.TaskMgmtResponse(response=int(response), itt=pdu.itt))

    def _session_task(self, itt: int) -> TargetTask | None:
        """The task with this ITT on any connection of the session (ABORT TASK may come on another CID)."""
        task = self.tasks.get(itt)
        if task is None and self.session is not None:
            for conn in self.session.connections.values():
                task = conn.tasks.get(itt)
                if task is not None:
                    break
        return task

    def _all_session_tasks(self) -> list[TargetTask]:
        session = self.session
        assert session is not None
        return [t for c in session.connections.values() for t in c.tasks.values()]

    def abort_tasks_with_status(self, lun: int) -> None:
        """Tasks on ``lun`` aborted by another I_T nexus (PREEMPT AND ABORT).  The control mode page says
        TAS=1, so each ends with TASK ABORTED status rather than silently (SAM-5 5.6, SPC-4 5.13.11.2.6)."""
        for task in list(self.tasks.values()):
            if task.lun != lun or task.aborted:
                continue
            task.report_aborted = True
            task.abort()
            if task.state is TaskState.COLLECTING:
                self._ended_early.append(task.itt)
                self._finish(task)
                self._send_task_aborted(task)
            # an executing task reports TASK ABORTED when the device server returns

    def _send_task_aborted(self, task: TargetTask) -> None:
        if not self._closing:
            self.send_status(P.ScsiResponse(flags=FLAG_FINAL, status=int(Status.TASK_ABORTED), itt=task.itt))

    async def _abort(self, tasks: list[TargetTask]) -> None:
        waits = []
        for task in tasks:
            task.abort()
            if task.state is TaskState.COLLECTING:
                for conn in self.session.connections.values() if self.session else ():
                    if conn.tasks.get(task.itt) is task:
                        conn._ended_early.append(task.itt)
                        conn._finish(task)
            elif task.state is TaskState.EXECUTING:
                if task.done is None:  # created only when someone waits for the task to end
                    task.done = asyncio.get_running_loop().create_future()
                waits.append(task.done)
        if waits:
            await asyncio.wait(waits, timeout=30)

    # ---- Text (SendTargets in full feature phase, RFC 7143 11.10, appendix C)

    def _on_text(self, pdu: P.TextRequest, header: bytes) -> None:
        self._check_sn(pdu, header, self._text)

    def _text(self, pdu: P.TextRequest, header: bytes) -> None:
        """One Text Request.  Long requests arrive in pieces with C=1 (each answered with an empty Text
        Response carrying a TTT to continue with); long answers leave in pieces the initiator asks for
        with empty requests quoting our TTT (RFC 7143 11.10, 11.11).  One exchange at a time per connection."""
        incoming, self._text_in = self._text_in, None
        pending, self._text_pending = self._text_pending, None
        if pdu.ttt != RESERVED_TAG:
            if incoming is not None and incoming[:2] == (pdu.ttt, pdu.itt):
                acc = incoming[2]
            elif pending is not None and pending[:2] == (pdu.ttt, pdu.itt) and not pdu.data:
                self._send_text(pending[2], pdu)
                return
            else:
                self.reject(RejectReason.PROTOCOL_ERROR, header)
                return
        else:
            acc = TextAccumulator(max_total=MAX_FFP_TEXT)
        if pdu.cont and pdu.final:
            self.reject(RejectReason.PROTOCOL_ERROR, header)  # C=1 requires F=0 (RFC 7143 11.10.2)
            return
        try:
            pairs = acc.feed(bytes(pdu.data), final=not pdu.cont)
        except TextError:
            self.reject(RejectReason.PROTOCOL_ERROR, header)
            return
        if pairs is None:
            ttt = self._new_ttt()
            self._text_in = (ttt, pdu.itt, acc)
            self.send_status(P.TextResponse(flags=0, itt=pdu.itt, ttt=ttt, lun=pdu.lun))
            return
        self._send_text(self.server.text_answer(self, pairs), pdu)

    def _send_text(self, text: bytes, pdu: P.TextRequest) -> None:
        limit = self._max_xmit
        if len(text) > limit:
            ttt = self._new_ttt()
            self._text_pending = (ttt, pdu.itt, text[limit:])
            self.send_status(
                P.TextResponse(flags=TEXT_CONTINUE, itt=pdu.itt, ttt=ttt, lun=pdu.lun, data=text[:limit])
            )
        else:
            self.send_status(
                P.TextResponse(flags=FLAG_FINAL, itt=pdu.itt, ttt=RESERVED_TAG, lun=pdu.lun, data=text)
            )

    # ---- Logout

    def _on_logout(self, pdu: P.LogoutRequest, header: bytes) -> None:
        self._check_sn(pdu, header, self._deliver_logout)

    def _deliver_logout(self, pdu: P.LogoutRequest, header: bytes) -> None:
        session = self.session
        assert session is not None
        reason = pdu.reason
        response = LogoutResponse.SUCCESS
        if (
            reason == LogoutReason.CLOSE_CONNECTION
            and pdu.cid != self.cid
            and pdu.cid not in session.connections
        ):
            response = LogoutResponse.CID_NOT_FOUND
        elif reason == LogoutReason.REMOVE_CONNECTION_FOR_RECOVERY:
            response = LogoutResponse.RECOVERY_NOT_SUPPORTED
        elif reason not in (LogoutReason.CLOSE_SESSION, LogoutReason.CLOSE_CONNECTION):
            self.reject(RejectReason.PROTOCOL_ERROR, header)
            return
        params = session.params
        self.send_status(
            P.LogoutResponse(
                response=int(response),
                itt=pdu.itt,
                time2wait=params.default_time2wait,
                time2retain=params.default_time2retain,
            )
        )
        if response == LogoutResponse.SUCCESS:
            if reason == LogoutReason.CLOSE_SESSION:
                self.server.end_session(session, exclude=self)
            elif len(session.connections) <= 1:
                # the logout of the only connection leaves nothing to continue: the session ends now
                self.server.end_session(session, exclude=self, reason="its last connection logged out")
            elif pdu.cid != self.cid:
                # RFC 7143 11.14.1: a logout of another connection, sent on this one; this one stays
                other = session.connections.get(pdu.cid)
                if other is not None:
                    log.info("%s: CID %d logged out from CID %d", self.peer, pdu.cid, self.cid)
                    other.close()
                return
            self.close()

    # ---- Async logout request (shutdown)

    def request_logout(self, seconds: int = 2) -> None:
        if self.session is None or self._logout_sent:
            return
        self._logout_sent = True
        exp, mx = self._window()
        self.send(
            P.AsyncMessage(
                lun=0,
                statsn=self._next_statsn(),
                expcmdsn=exp,
                maxcmdsn=mx,
                async_event=int(AsyncEvent.LOGOUT_REQUEST),
                parameter3=seconds,
            )
        )

    _HANDLERS: dict[type, Callable[[Connection, Any, bytes], None]] = {}


Connection._HANDLERS = {
    P.NopOut: Connection._on_nop_out,
    P.ScsiCommand: Connection._on_scsi_command,
    P.DataOut: Connection._on_data_out,
    P.TaskMgmtRequest: Connection._on_tmf,
    P.TextRequest: Connection._on_text,
    P.LogoutRequest: Connection._on_logout,
    P.SnackRequest: Connection._on_snack,
}
