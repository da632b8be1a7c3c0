"""The target's connection state machine, sans-I/O: one iSCSI connection in full feature phase (RFC 7143).

A :class:`TargetConnection` owns what is per connection: StatSN and the initiator's ExpStatSN, the
connection keys (digests, MaxRecvDataSegmentLength each way), its timers (:mod:`cistern.wire.liveness`:
NOP-In pings, dead-peer timeout), the statuses and read data kept for SNACKs at ErrorRecoveryLevel 1
(:mod:`cistern.wire.recovery`), the one Text exchange in progress, and its outbox.  Session-wide state
(CmdSN window, task table, TTTs) is its :class:`~cistern.wire.target_session.TargetSession`'s.

The I/O layer:

* hands every framed PDU in with :meth:`TargetConnection.receive` (``frame``, ``now``); what it must act
  on appears in ``session.events`` (see :mod:`cistern.wire.target_session`);
* reports results: :meth:`complete` (a command's :class:`~cistern.scsi.task.ScsiResult`: Data-In and SCSI
  Response with the negotiated segmentation), :meth:`tmf_response`, :meth:`text_answer`;
* sends :attr:`out` (framed buffers, header + data views, in order) and empties it; :meth:`pdus_to_send`
  does both for callers that want a list;
* runs :meth:`handle_timer` at :meth:`next_timer`.

Errors: a PDU that breaks a rule is answered as RFC 7143 11.17.1 says (a Reject queued here, reason from
:class:`~cistern.wire.errors.Rejection`); a violation that needs the connection dropped raises
:class:`~cistern.wire.errors.RemoteProtocolError` with a :class:`~cistern.wire.errors.Drop` answer.
A command whose Data-Out breaks the sequence rules ends with CHECK CONDITION and never reaches the medium;
commands outside the CmdSN window are dropped silently (4.2.2.1).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from cistern.scsi.task import ScsiResult, Status
from cistern.wire import pdu as P
from cistern.wire.bhs import data_in_header, decode_lun, encode_lun, r2t_header, scsi_response_header
from cistern.wire.buffers import WRITE_BUFFERS
from cistern.wire.constants import (
    BHS_LEN,
    CMD_WRITE,
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
from cistern.wire.errors import Rejection, RemoteProtocolError
from cistern.wire.framing import Frame, frame_into, frame_parts, frame_pdu
from cistern.wire.liveness import ConnectionTimers, TimerEvent
from cistern.wire.recovery import Retained, RetainedSet, StatusLog, snack_range
from cistern.wire.serial import sn_lt
from cistern.wire.target_session import Logout, OutboxReady, TaskManagement, TextRequest
from cistern.wire.tasks import DataOutError, Sequence, TargetTask, TaskState, UnknownTransferTag
from cistern.wire.text import TextAccumulator, TextError

if TYPE_CHECKING:
    from cistern.wire.params import Negotiated
    from cistern.wire.pdu import Buffer
    from cistern.wire.target_session import TargetSession

__all__ = [
    "MAX_FFP_TEXT",
    "SENSE_CRC_ERROR",
    "SENSE_DATA_PHASE_ERROR",
    "TargetConnection",
    "fixed_sense",
    "residual_flags",
]

log: Final = logging.getLogger("cistern.target")

MAX_FFP_TEXT: Final = 64 * 1024  # largest Text Request assembled in full feature phase
#: ITTs of tasks ended before their data kept: late Data-Out for them is discarded silently
ENDED_EARLY_KEPT: Final = 64


def fixed_sense(key: int, asc: int, ascq: int) -> bytes:
    """Fixed-format sense data, 18 bytes (SPC-4 4.5.3)."""
    sense = bytearray(18)
    sense[0] = 0x70
    sense[2] = key
    sense[7] = 10
    sense[12] = asc
    sense[13] = ascq
    return bytes(sense)


_ABORTED_COMMAND: Final = 0x0B
SENSE_DATA_PHASE_ERROR: Final = fixed_sense(_ABORTED_COMMAND, 0x4B, 0x00)
SENSE_CRC_ERROR: Final = fixed_sense(_ABORTED_COMMAND, 0x47, 0x05)  # PROTOCOL SERVICE CRC ERROR
SENSE_INVALID_FIELD_IN_CDB: Final = fixed_sense(0x05, 0x24, 0x00)


def residual_flags(edtl: int, wanted: int, moved: int) -> tuple[int, int]:
    """SCSI Response flags and Residual Count (RFC 7143 11.4.5): overflow when the command wanted more than
    the Expected Data Transfer Length, underflow when less than EDTL was moved."""
    if wanted > edtl:
        return FLAG_FINAL | RSP_OVERFLOW, wanted - edtl
    if moved < edtl:
        return FLAG_FINAL | RSP_UNDERFLOW, edtl - moved
    return FLAG_FINAL, 0


def _reject(reason: RejectReason, why: str) -> RemoteProtocolError:
    return RemoteProtocolError(why, Rejection(reason))


class TargetConnection:
    """One connection of ``session`` in full feature phase.  ``params``: the session keys with this
    connection's own; ``statsn``: the next StatSN (after the final Login Response); ``timers``: the
    connection's timer state from login on (the login timer stops here); ``owner``: opaque, for the I/O
    layer (its adapter object)."""

    __slots__ = (
        "_text_in",
        "_text_pending",
        "cid",
        "closed",
        "dd",
        "ended_early",
        "erl",
        "hd",
        "logged_out",
        "logout_sent",
        "max_burst",
        "max_xmit",
        "out",
        "owner",
        "params",
        "retained",
        "session",
        "statsn",
        "status_log",
        "timers",
    )

    def __init__(
        self,
        session: TargetSession,
        cid: int,
        params: Negotiated,
        statsn: int,
        timers: ConnectionTimers,
        now: float,
        owner: Any = None,
    ) -> None:
        self.session = session
        self.cid = cid
        self.params = params
        self.statsn = statsn & 0xFFFFFFFF
        self.hd = params.header_digest
        self.dd = params.data_digest
        self.max_xmit = params.max_xmit_data_segment_length
        self.max_burst = params.max_burst_length  # session-wide, fixed at login (read per Data-In)
        self.erl = params.error_recovery_level
        self.status_log: StatusLog | None = StatusLog() if self.erl else None
        self.retained = RetainedSet()
        self.ended_early: collections.deque[int] = collections.deque(maxlen=ENDED_EARLY_KEPT)
        # the rest of a long Text Response / a long Text Request so far: one slot each, RFC 7143 11.10
        # allows a single outstanding Text Request per connection and a new one discards an unfinished one
        self._text_pending: tuple[int, int, bytes] | None = None  # (TTT, ITT, rest of our answer)
        self._text_in: tuple[int, int, TextAccumulator] | None = None  # (TTT, ITT, request so far)
        self.timers = timers
        timers.full_feature(now)
        self.out: list[Buffer] = []
        self.closed = False
        self.logout_sent = False
        self.logged_out = False  # closed by a Logout (reason 0 or 1): its tasks end with it, even at ERL 2
        self.owner = owner

    # ------------------------------------------------------------------ outbox

    def pdus_to_send(self) -> list[Buffer]:
        """The framed buffers queued since the last call (header, data views, digests), in order."""
        out, self.out = self.out, []
        return out

    def _next_statsn(self) -> int:
        statsn = self.statsn
        self.statsn = (statsn + 1) & 0xFFFFFFFF
        return statsn

    def send(self, pdu: P.PDU) -> None:
        """Queue a PDU that takes no StatSN of its own (it carries the current one)."""
        self.out += frame_pdu(pdu, header_digest=self.hd, data_digest=self.dd)

    def send_status(self, pdu: P.PDU) -> None:
        """Queue a PDU that carries status: it takes the next StatSN and the current CmdSN window."""
        session = self.session
        pdu.statsn = statsn = self._next_statsn()  # type: ignore[attr-defined]
        pdu.expcmdsn, pdu.maxcmdsn = session.expcmdsn, session.maxcmdsn  # type: ignore[attr-defined]
        parts = frame_pdu(pdu, header_digest=self.hd, data_digest=self.dd)
        if self.status_log is not None:
            self.status_log.add(statsn, [bytes(p) for p in parts])
        self.out += parts

    def reject(self, reason: RejectReason, header: bytes) -> None:
        """Queue a Reject (RFC 7143 11.17) echoing the offending BHS."""
        log.info("CID %d: Reject reason 0x%02x", self.cid, reason)
        self.send_status(P.Reject(reason=int(reason), data=bytes(header[:BHS_LEN])))

    # ------------------------------------------------------------------ connection keys

    def set_max_xmit(self, length: int) -> None:
        """The initiator declared a new MaxRecvDataSegmentLength in full feature phase (RFC 7143 13.12):
        PDUs queued from now on carry at most ``length`` data bytes."""
        self.max_xmit = length
        self.params = self.params.replace(max_xmit_data_segment_length=length)

    # ------------------------------------------------------------------ timers

    def next_timer(self) -> float | None:
        """When :meth:`handle_timer` must run (the caller's clock), or None."""
        return None if self.closed else self.timers.next_timer()

    def handle_timer(self, now: float) -> TimerEvent | None:
        """Run what is due: SEND_PING queues a NOP-In ping (RFC 7143 11.19) and is returned so the caller
        sends it; PEER_DEAD (a ping unanswered for nop_timeout, 7.1.1) means drop the connection."""
        if self.closed:
            return None
        event = self.timers.handle_timer(now)
        if event is TimerEvent.SEND_PING:
            session = self.session
            ttt = session.new_ttt()
            self.timers.ping_sent(ttt, now)
            self.send(
                P.NopIn(
                    itt=RESERVED_TAG,
                    ttt=ttt,
                    statsn=self.statsn,
                    expcmdsn=session.expcmdsn,
                    maxcmdsn=session.maxcmdsn,
                )
            )
        return event

    # ------------------------------------------------------------------ receive

    def sink(self, pdu: P.PDU) -> memoryview | None:
        """Zero copy (the framer's sink): where a Data-Out payload may land in its command's write buffer."""
        if type(pdu) is P.DataOut:
            task = self.session.tasks.get(pdu.itt)
            if task is not None and task.conn is self:
                return task.sink(pdu.buffer_offset, task.edtl - pdu.buffer_offset)
        return None

    def receive(self, frame: Frame, now: float) -> None:
        """One framed PDU from the initiator, at ``now``.  Answers go to :attr:`out`, work to
        ``session.events``.  Raises RemoteProtocolError (answer Drop) when the connection must go."""
        self.timers.last_rx = now
        pdu = frame.pdu
        if pdu is None:
            assert frame.error is not None
            self.reject(frame.error.reason, frame.header)
            return
        if self.erl:
            expstatsn = getattr(pdu, "expstatsn", None)
            if expstatsn is not None:
                self._acknowledge(expstatsn)
        try:
            if not frame.data_digest_ok:
                self._data_digest_error(pdu, frame.header)
                return
            if isinstance(pdu, P.ScsiCommand):  # the per-command PDUs as direct calls, the rest by the table
                self._on_scsi_command(pdu, frame.header)
                return
            if isinstance(pdu, P.DataOut):
                self._on_data_out(pdu, frame.header)
                return
            handler = _HANDLERS.get(type(pdu))
            if handler is None:
                # initiator opcodes not taken here (Login in full feature phase) and target opcodes sent by
                # the initiator are protocol errors
                raise _reject(RejectReason.PROTOCOL_ERROR, f"{type(pdu).__name__} in full feature phase")
            handler(self, pdu, frame.header)
        except RemoteProtocolError as exc:
            answer = exc.answer
            if not isinstance(answer, Rejection):
                raise
            self.reject(answer.reason, answer.header or frame.header)

    def _data_digest_error(self, pdu: P.PDU, header: bytes) -> None:
        self.reject(RejectReason.DATA_DIGEST_ERROR, header)
        if type(pdu) is P.DataOut:
            task = self.session.tasks.get(pdu.itt)
            if task is not None and task.conn is self and task.state is TaskState.COLLECTING:
                if self.erl:
                    self._recovery_r2t(task, pdu)
                else:
                    self._fail_task(task, SENSE_CRC_ERROR)

    def _check_sn(
        self, pdu: P.PDU, header: bytes, deliver: Callable[[TargetConnection, Any, bytes], None]
    ) -> None:
        """Route a numbered request through the session's CmdSN window (RFC 7143 4.2.2.1, 3.2.2.1):
        ``deliver`` runs now when it is in order (or immediate), later when the gap before it fills (on
        whichever connection carried it), never when it is outside the window."""
        session = self.session
        cmdsn = pdu.cmdsn  # type: ignore[attr-defined]
        if pdu.immediate or session.take_next(cmdsn):  # in order, nothing held: the common case
            deliver(self, pdu, header)
            return
        if cmdsn == session.expcmdsn:
            ready = session.advance()
            deliver(self, pdu, header)
            for fn, conn, held_pdu, held_header in ready:
                fn(conn, held_pdu, held_header)
                if conn is not self:
                    session.events.append(OutboxReady(conn))
            return
        if session.in_window(cmdsn):
            session.held[cmdsn] = (deliver, self, pdu, header)
            return
        log.info(
            "CID %d: CmdSN 0x%08x outside window [0x%08x, 0x%08x]: dropped",
            self.cid,
            cmdsn,
            session.expcmdsn,
            session.maxcmdsn,
        )

    # ---- NOP-Out

    def _on_nop_out(self, pdu: P.NopOut, header: bytes) -> None:
        if pdu.ttt != RESERVED_TAG:  # the answer to our ping
            self.timers.ping_answered(pdu.ttt)
            return
        if pdu.itt == RESERVED_TAG:
            if not pdu.immediate:  # RFC 7143 11.18: a NOP-Out that wants no answer must be immediate
                raise _reject(RejectReason.PROTOCOL_ERROR, "non-immediate NOP-Out with ITT 0xffffffff")
            return
        self._check_sn(pdu, header, TargetConnection._deliver_nop_out)

    def _deliver_nop_out(self, pdu: P.NopOut, header: bytes) -> None:
        self.send_status(P.NopIn(lun=pdu.lun, itt=pdu.itt, ttt=RESERVED_TAG, data=bytes(pdu.data)))

    # ---- SCSI Command

    def _on_scsi_command(self, pdu: P.ScsiCommand, header: bytes) -> None:
        # A rejected command still consumes its CmdSN: it goes through the window like any other, and the
        # checks run when it is delivered in order.  Rejecting on arrival without advancing ExpCmdSN would
        # leave a gap that holds every later command forever (the initiator never resends a rejected one).
        if pdu.immediate or self.session.take_next(pdu.cmdsn):  # _check_sn's common case, as a direct call
            self._deliver_command(pdu, header)
        else:
            self._check_sn(pdu, header, _DELIVER_COMMAND)

    def _deliver_command(self, pdu: P.ScsiCommand, header: bytes) -> None:
        if self.closed:
            return  # held for a gap while its connection went away: its CmdSN is consumed, nothing runs
        reason = self._command_error(pdu)
        if reason is not None:
            self.reject(reason, header)
            return
        cdb = pdu.parse_ahs()[0] if pdu.ahs else pdu.cdb16
        task = TargetTask(
            pdu.itt,
            decode_lun(pdu.lun),
            pdu.cmdsn,
            cdb if type(cdb) is bytes else bytes(cdb),  # decoded CDBs are bytes already: no copy
            pdu.flags,
            pdu.expected_data_transfer_length,
            pdu.immediate,
        )
        task.conn = self
        self._start_command(task, pdu)

    def _command_error(self, pdu: P.ScsiCommand) -> RejectReason | None:
        """Why a SCSI Command PDU must be rejected (RFC 7143 11.17.1), or None."""
        session = self.session
        if session.discovery or pdu.itt == RESERVED_TAG:
            return RejectReason.PROTOCOL_ERROR
        if pdu.itt in session.tasks:
            return RejectReason.TASK_IN_PROGRESS  # an ITT is unique in the session (RFC 7143 11.2.1.8)
        if pdu.immediate and len(session.tasks) >= session.queue_depth:
            # immediate commands bypass the CmdSN window; cap them so tasks cannot pile up without limit
            return RejectReason.IMMEDIATE_COMMAND_REJECT
        if pdu.ahs:
            try:
                pdu.parse_ahs()
            except P.PduError as exc:
                return exc.reason
        dlen = len(pdu.data)
        if dlen:
            # Immediate data rules (RFC 7143 4.2.5.2, 13.13): only with W, within EDTL and FirstBurstLength
            params = session.params.session  # SessionParams: Negotiated's flat properties are interpreted
            if (
                not pdu.flags & CMD_WRITE
                or not params.immediate_data
                or dlen > pdu.expected_data_transfer_length
                or dlen > params.first_burst_length
            ):
                return RejectReason.PROTOCOL_ERROR
        return None

    def _start_command(self, task: TargetTask, pdu: P.ScsiCommand) -> None:
        session = self.session
        if self.erl and len(self.retained):
            # the initiator reuses an ITT only once it has the old command's status: forget its data
            self.retained.discard(task.itt)
        if not task.immediate:
            session.outstanding += 1
        session.tasks[task.itt] = task
        if not pdu.flags & CMD_WRITE or task.edtl == 0:
            task.state = TaskState.EXECUTING
            session.events.append(task)
            return
        edtl = task.edtl
        limit = session.max_write_buffer
        if limit is not None and edtl > limit:
            # too large to buffer: refuse without reading data (the initiator gets no R2T)
            self.ended_early.append(task.itt)
            self.complete(task, ScsiResult(Status.CHECK_CONDITION, SENSE_INVALID_FIELD_IN_CDB))
            return
        cap = session.max_session_write_buffer
        if (
            cap is not None and session.write_buffered + edtl > cap
        ) or not session.budget.reserve_write_buffer(edtl):
            # every write buffer is allocated up front: bound their sum per session and over the whole target
            # (SAM-5 TASK SET FULL, the initiator retries later) so hostile initiators cannot make us allocate
            # sessions x queue depth x EDTL
            self.ended_early.append(task.itt)
            self.complete(task, ScsiResult(Status.TASK_SET_FULL, b""))
            return
        params = session.params.session  # SessionParams: Negotiated's flat properties are interpreted
        data = pdu.data
        imm = len(data)
        owner = data.obj if isinstance(data, memoryview) else data
        task.reserved = edtl
        if imm == edtl and type(owner) is bytearray and len(owner) == imm:
            # all the data came as immediate data, in a buffer the framer allocated for this PDU alone (a
            # bytearray or a view of all of one): it becomes the write buffer as it is (no allocation, no copy)
            task.buf = owner
        elif imm:
            task.buf = buf = WRITE_BUFFERS.take(edtl)  # filled in full before it is executed
            buf[:imm] = data
        # else: allocated when its first Data-Out arrives (TargetTask.sink), not now
        session.write_buffered += edtl
        task.received = imm
        unsolicited_end = imm
        if not params.initial_r2t and not pdu.flags & FLAG_FINAL:
            # RFC 7143 11.3.1: F=0 announces unsolicited Data-Out, up to FirstBurstLength in all; with F=1
            # only the immediate data (if any) was unsolicited and the rest is asked for with R2Ts
            unsolicited_end = max(imm, min(params.first_burst_length, edtl))
            if unsolicited_end > imm:
                task.unsolicited = Sequence(RESERVED_TAG, imm, unsolicited_end - imm)
        task.next_r2t_offset = unsolicited_end
        self._send_r2ts(task)
        self._maybe_execute(task)

    def _send_r2ts(self, task: TargetTask) -> None:
        """R2Ts for the data not yet asked for, up to MaxOutstandingR2T (RFC 7143 11.8, 13.17)."""
        session = self.session
        params = session.params.session
        while task.next_r2t_offset < task.edtl and len(task.r2ts) < params.max_outstanding_r2t:
            offset = task.next_r2t_offset
            length = min(params.max_burst_length, task.edtl - offset)
            ttt = session.new_ttt()
            seq = task.r2ts[ttt] = Sequence(ttt, offset, length, 0, 0, task.r2tsn)
            task.next_r2t_offset = offset + length
            self._emit_r2t(task, seq)
            task.r2tsn += 1

    def _emit_r2t(self, task: TargetTask, seq: Sequence) -> None:
        session = self.session
        lun = encode_lun(task.lun) if task.lun >= 0 else 0
        header = r2t_header(
            lun, task.itt, seq.ttt, self.statsn, session.expcmdsn, session.maxcmdsn, seq.r2tsn, seq.offset,
            seq.length,
        )  # fmt: skip
        frame_into(self.out, header, b"", self.hd, False)

    def _maybe_execute(self, task: TargetTask) -> None:
        if task.state is TaskState.COLLECTING and task.received >= task.edtl:
            task.state = TaskState.EXECUTING
            self.session.events.append(task)

    # ---- Data-Out

    def _on_data_out(self, pdu: P.DataOut, header: bytes) -> None:
        task = self.session.tasks.get(pdu.itt)
        if task is None or task.conn is not self:
            if pdu.itt in self.ended_early:
                return  # data for a command that ended before its data did: discard (RFC 7143 11.5.1)
            # RFC 7143 11.17.1: an ITT that names no task of this connection is an invalid PDU field
            raise _reject(RejectReason.INVALID_PDU_FIELD, f"Data-Out for unknown ITT 0x{pdu.itt:08x}")
        if task.state is not TaskState.COLLECTING:
            return  # all data already arrived (or the task was aborted): discard
        data = pdu.data
        sunk = isinstance(data, memoryview) and data.obj is task.buf
        if not sunk and task.sink(pdu.buffer_offset, len(data)) is None:
            # not sunk (e.g. offset outside the buffer): validate first, then copy
            self._fail_task(task, SENSE_DATA_PHASE_ERROR, "Data-Out outside the expected transfer")
            return
        try:
            seq = task.accept(pdu.ttt, pdu.datasn, pdu.buffer_offset, len(data), bool(pdu.flags & FLAG_FINAL))
        except UnknownTransferTag as unknown:  # not "exc": mypyc types a name by its first except clause
            # a Target Transfer Tag of no outstanding R2T of this task (RFC 7143 11.7.4, 11.17.1): Reject;
            # at ErrorRecoveryLevel 0 nothing can resend the burst, so the command ends as well
            self.reject(RejectReason.INVALID_PDU_FIELD, header)
            self._fail_task(task, SENSE_DATA_PHASE_ERROR, str(unknown))
            return
        except DataOutError as exc:
            self._fail_task(task, SENSE_DATA_PHASE_ERROR, str(exc))
            return
        if not sunk:
            assert task.buf is not None
            task.buf[pdu.buffer_offset : pdu.buffer_offset + len(data)] = data
        if seq.complete and seq.ttt != RESERVED_TAG:
            del task.r2ts[seq.ttt]
            self._send_r2ts(task)
        self._maybe_execute(task)

    def _fail_task(self, task: TargetTask, sense: bytes, why: str = "") -> None:
        if why:
            log.info("CID %d: ITT 0x%08x failed: %s", self.cid, task.itt, why)
        self.ended_early.append(task.itt)  # its remaining Data-Out may still be on the way
        task.state = TaskState.DONE
        self.complete(task, ScsiResult(Status.CHECK_CONDITION, sense))

    # ------------------------------------------------------------------ results from the I/O layer

    def complete(self, task: TargetTask, result: ScsiResult, first_datasn: int = 0) -> None:
        """The device server's result for ``task``: queue Data-In (phase-collapsed status when possible)
        and/or the SCSI Response (RFC 7143 11.4, 11.7), and end the task.  An aborted task ends silently
        (or with TASK ABORTED when another nexus aborted it, TAS=1).  ``first_datasn``: after a TASK
        REASSIGN, the Data-In before it (the initiator's ExpDataSN) are not sent again.  At ERL 2 the
        result of a task whose connection failed is kept for its TASK REASSIGN."""
        if self.closed:
            session = self.session
            if task.itt in session.orphans and session.tasks.get(task.itt) is task and not task.aborted:
                task.result = result
                return
            session.finish(task)
            return
        self.session.finish(task)
        if task.aborted:
            if task.report_aborted:
                self._send_task_aborted(task)
            return
        edtl = task.edtl
        lun_field = encode_lun(task.lun) if task.lun >= 0 else 0
        data = result.data_in
        is_read = bool(task.flags & 0x40)
        sent = 0
        if data is not None and is_read:
            sent = len(data)
            if sent > edtl:
                sent = edtl
        tl = result.transfer_length
        if is_read:
            wanted = tl if tl is not None else len(data or b"")
            moved = sent
        else:
            wanted = tl if tl is not None else edtl
            moved = min(wanted, edtl)
        rflags, residual = residual_flags(edtl, wanted, moved)
        kept: Retained | None = None
        if sent:
            assert data is not None
            if len(data) != sent:
                data = (data if isinstance(data, memoryview) else memoryview(data))[:sent]
            if self.erl:
                view = data if isinstance(data, memoryview) else memoryview(data)
                kept = self._send_data_in_retained(task, lun_field, view, first_datasn)
                datasn = kept.count()
            else:
                collapse = result.status == 0 and not result.sense
                datasn = self._send_data_in(task, lun_field, data, collapse, rflags, residual, result.status)
                if collapse:
                    return
        else:
            datasn = 0
        sense = P.sense_segment(result.sense) if result.sense else b""
        session = self.session
        statsn = self._next_statsn()
        header = scsi_response_header(
            rflags, 0, result.status, task.itt, statsn, session.expcmdsn, session.maxcmdsn, datasn, residual,
            len(sense),
        )  # fmt: skip
        parts = frame_parts(header, sense, self.hd, self.dd)
        if self.status_log is not None:
            self.status_log.add(statsn, [bytes(p) for p in parts])
            if kept is not None:
                kept.statsn = statsn
        self.out += parts

    def _send_data_in(
        self,
        task: TargetTask,
        lun_field: int,
        data: Buffer,
        collapse: bool,
        rflags: int,
        residual: int,
        status: int,
    ) -> int:
        """Queue ``data`` as Data-In PDUs; returns how many (the ExpDataSN of a separate SCSI Response).
        One PDU sends ``data`` as it is; several send slices of a memoryview of it (no copies).

        RFC 7143 11.7.1/13.14: a Data-In sequence is at most MaxBurstLength bytes and its last PDU has the
        F bit; no PDU carries more than MaxRecvDataSegmentLength (the initiator's) and none straddles a
        sequence boundary, so a PDU is cut short where a burst ends.  DataSN runs 0, 1, 2... over the command.
        """
        session = self.session
        mxl = self.max_xmit
        burst = self.max_burst
        total = len(data)
        hd, dd = self.hd, self.dd
        itt = task.itt
        if collapse and total <= mxl and total <= burst:  # the common case: one PDU with the status
            flags = FLAG_FINAL | DATAIN_STATUS | (rflags & (RSP_OVERFLOW | RSP_UNDERFLOW))
            header = data_in_header(
                flags, status, lun_field, itt, self._next_statsn(), session.expcmdsn, session.maxcmdsn, 0, 0,
                residual, total,
            )  # fmt: skip
            frame_into(self.out, header, data, hd, dd)
            return 1
        view = data if isinstance(data, memoryview) else memoryview(data)
        out = self.out
        offset = 0
        datasn = 0
        while offset < total:
            end = min(offset + mxl, total, (offset // burst + 1) * burst)
            last = end >= total
            exp, mx = session.expcmdsn, session.maxcmdsn
            if last and collapse:
                flags = FLAG_FINAL | DATAIN_STATUS | (rflags & (RSP_OVERFLOW | RSP_UNDERFLOW))
                header = data_in_header(
                    flags, status, lun_field, itt, self._next_statsn(), exp, mx, datasn, offset, residual,
                    end - offset,
                )  # fmt: skip
            else:
                flags = FLAG_FINAL if (last or end % burst == 0) else 0
                header = data_in_header(flags, 0, lun_field, itt, 0, exp, mx, datasn, offset, 0, end - offset)
            frame_into(out, header, view[offset:end], hd, dd)
            offset = end
            datasn += 1
        return datasn

    def _send_task_aborted(self, task: TargetTask) -> None:
        self.send_status(P.ScsiResponse(flags=FLAG_FINAL, status=int(Status.TASK_ABORTED), itt=task.itt))

    def abort_lun_with_status(self, lun: int) -> None:
        """Tasks of this connection on ``lun`` aborted by another I_T nexus (PREEMPT AND ABORT).  The control
        mode page says TAS=1, so each ends with TASK ABORTED status rather than silently (SAM-5 5.6, SPC-4
        5.13.11.2.6); an executing one when the device server returns (:meth:`complete`)."""
        session = self.session
        for task in list(session.tasks.values()):
            if task.conn is not self or task.lun != lun or task.aborted:
                continue
            task.report_aborted = True
            task.abort()
            if task.state is TaskState.COLLECTING:
                self.ended_early.append(task.itt)
                session.finish(task)
                if not self.closed:
                    self._send_task_aborted(task)

    def tmf_response(self, pdu: P.TaskMgmtRequest, response: int) -> None:
        """Queue the Task Management Function Response (RFC 7143 11.6) the I/O layer decided."""
        if not self.closed:
            self.send_status(P.TaskMgmtResponse(response=int(response), itt=pdu.itt))

    # ------------------------------------------------------------------ ErrorRecoveryLevel 1 (RFC 7143 7.2-7.4)

    def _acknowledge(self, expstatsn: int) -> None:
        """ExpStatSN from the initiator: statuses (and the read data of commands) before it are no longer
        needed for a SNACK (RFC 7143 4.2.2.2)."""
        status_log = self.status_log
        if status_log is not None and len(status_log):
            status_log.acknowledge(expstatsn)
        if len(self.retained):
            self.retained.acknowledge(lambda statsn: sn_lt(statsn, expstatsn))

    def _recovery_r2t(self, task: TargetTask, pdu: P.DataOut) -> None:
        """A Data-Out whose data digest failed (its header is sound): account it in its sequence, then ask
        for exactly its bytes again with a recovery R2T (RFC 7143 7.2.2 / 7.4 at ERL >= 1)."""
        length = len(pdu.data)
        try:
            seq = task.accept(pdu.ttt, pdu.datasn, pdu.buffer_offset, length, bool(pdu.flags & FLAG_FINAL))
        except DataOutError as exc:
            self._fail_task(task, SENSE_CRC_ERROR, str(exc))
            return
        task.received -= length  # these bytes did not arrive intact
        if seq.complete and seq.ttt != RESERVED_TAG:
            del task.r2ts[seq.ttt]
        if length:
            ttt = self.session.new_ttt()
            recovery = Sequence(ttt, pdu.buffer_offset, length, r2tsn=task.r2tsn)
            task.r2ts[ttt] = recovery
            self._emit_r2t(task, recovery)
            task.r2tsn += 1
        self._send_r2ts(task)
        self._maybe_execute(task)

    def _send_data_in_retained(
        self, task: TargetTask, lun_field: int, view: memoryview, first_datasn: int = 0
    ) -> Retained:
        """ERL >= 1 reads: Data-In without status (a SCSI Response follows), the last PDU asking for a
        DataACK (A bit, RFC 7143 11.7.2); the data is kept for Data/R-Data SNACK until acknowledged."""
        session = self.session
        kept = Retained(lun_field, view, self.max_xmit, session.params.max_burst_length, session.new_ttt())
        self.retained.add(task.itt, kept)
        self._resend_data_in(task.itt, kept, range(first_datasn, kept.count()))
        return kept

    def _resend_data_in(self, itt: int, kept: Retained, numbers: range) -> None:
        session = self.session
        exp, mx = session.expcmdsn, session.maxcmdsn
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
            self.out += frame_pdu(pdu, header_digest=self.hd, data_digest=self.dd)

    def _on_snack(self, pdu: P.SnackRequest, header: bytes) -> None:
        """SNACK (RFC 7143 11.16): only at ErrorRecoveryLevel >= 1; at 0 it is a protocol error."""
        if not self.erl:
            raise _reject(RejectReason.PROTOCOL_ERROR, "SNACK at ErrorRecoveryLevel 0")
        kind = pdu.snack_type
        if kind == SnackType.STATUS:
            assert self.status_log is not None
            found = self.status_log.get(pdu.begrun, pdu.runlength, self.statsn)
            if found is None:
                raise _reject(RejectReason.SNACK_REJECT, "Status SNACK for statuses not kept")
            for parts in found:
                self.out += parts
            return
        if kind == SnackType.DATA_R2T:
            task = self.session.tasks.get(pdu.itt)
            if task is not None and task.conn is self and task.state is TaskState.COLLECTING:
                stop = pdu.begrun + pdu.runlength if pdu.runlength else task.r2tsn
                again = [q for q in task.r2ts.values() if q.r2tsn >= 0 and pdu.begrun <= q.r2tsn < stop]
                if not again:
                    raise _reject(RejectReason.SNACK_REJECT, "R2T SNACK for no outstanding R2T")
                for seq in sorted(again, key=lambda q: q.r2tsn):
                    self._emit_r2t(task, seq)
                return
            kept = self.retained.get(pdu.itt)
            numbers = snack_range(pdu.begrun, pdu.runlength, kept.count()) if kept is not None else None
            if kept is None or numbers is None:
                raise _reject(RejectReason.SNACK_REJECT, "Data SNACK for data not kept")
            self._resend_data_in(pdu.itt, kept, numbers)
            return
        if kind == SnackType.DATA_ACK:
            acked = self.retained.by_ack_ttt(pdu.ttt)
            if acked is None:
                raise _reject(RejectReason.INVALID_DATA_ACK, "DataACK for an unknown TTT")
            if pdu.begrun > acked[1].count():
                raise _reject(RejectReason.PROTOCOL_ERROR, "DataACK beyond the data sent")
            if pdu.begrun == acked[1].count():
                self.retained.discard(acked[0])  # all of it acknowledged: free it
            return
        if kind == SnackType.RDATA:
            kept = self.retained.get(pdu.itt)
            if kept is None or pdu.begrun or pdu.runlength:
                raise _reject(RejectReason.SNACK_REJECT, "R-Data SNACK for data not kept")
            # resegmented to the MaxRecvDataSegmentLength now in force, all of it (RFC 7143 11.16.3)
            kept.mxl = self.max_xmit
            self._resend_data_in(pdu.itt, kept, range(kept.count()))
            return
        raise _reject(RejectReason.PROTOCOL_ERROR, f"SNACK type {kind}")

    # ------------------------------------------------------------------ Task management

    def _on_tmf(self, pdu: P.TaskMgmtRequest, header: bytes) -> None:
        self._check_sn(pdu, header, TargetConnection._deliver_tmf)

    def _deliver_tmf(self, pdu: P.TaskMgmtRequest, header: bytes) -> None:
        if pdu.function == TmfFunction.TASK_REASSIGN:
            self._task_reassign(pdu)  # iSCSI-only: answered here, the device server is not involved
            return
        self.session.events.append(TaskManagement(self, pdu))

    # ------------------------------------------------------------------ ErrorRecoveryLevel 2 (RFC 7143 7.2.3, 6.2)

    def _task_reassign(self, pdu: P.TaskMgmtRequest) -> None:
        """TASK REASSIGN (RFC 7143 11.5.1): the task ReferencedTaskTag names, of a failed connection, becomes
        allegiant to this one; what the initiator has not got is sent again (Data-In from ExpDataSN and the
        status; R2Ts for write data not received), or its status goes here when the device server returns."""
        session = self.session
        itt = pdu.referenced_task_tag
        if self.erl < 2:
            self.tmf_response(pdu, TmfResponse.TASK_REASSIGN_NOT_SUPPORTED)
            return
        task = session.adopt(itt)
        if task is None:
            live = session.tasks.get(itt)
            allegiant = live is not None and live.conn is not None and not live.conn.closed
            self.tmf_response(
                pdu, TmfResponse.TASK_STILL_ALLEGIANT if allegiant else TmfResponse.TASK_DOES_NOT_EXIST
            )
            return
        log.info(
            "CID %d: ITT 0x%08x reassigned from CID %d", self.cid, itt, task.conn.cid if task.conn else -1
        )
        task.conn = self
        self.tmf_response(pdu, TmfResponse.FUNCTION_COMPLETE)
        result = task.result
        if result is not None:
            task.result = None
            self.complete(task, result, first_datasn=pdu.expdatasn)
        elif task.state is TaskState.COLLECTING:
            # every byte not received yet is asked for again (new TTTs and R2TSNs); bursts in flight on the
            # failed connection are gone
            missing = [
                (q.offset + q.received, q.length - q.received)
                for q in [*task.r2ts.values(), *([task.unsolicited] if task.unsolicited else [])]
                if q.received < q.length
            ]
            task.r2ts.clear()
            task.unsolicited = None
            for offset, length in sorted(missing):
                seq = Sequence(session.new_ttt(), offset, length, 0, 0, task.r2tsn)
                task.r2ts[seq.ttt] = seq
                self._emit_r2t(task, seq)
                task.r2tsn += 1
            self._send_r2ts(task)
            self._maybe_execute(task)
        # executing: the device server's result is sent here (complete() follows task.conn)

    # ------------------------------------------------------------------ Text (RFC 7143 11.10, appendix C)

    def _on_text(self, pdu: P.TextRequest, header: bytes) -> None:
        self._check_sn(pdu, header, TargetConnection._deliver_text)

    def _deliver_text(self, pdu: P.TextRequest, header: bytes) -> None:
        """One Text Request.  Long requests arrive in pieces with C=1 (each answered with an empty Text
        Response carrying a TTT to continue with); long answers leave in pieces the initiator asks for
        with empty requests quoting our TTT (RFC 7143 11.10, 11.11).  One exchange at a time."""
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
            ttt = self.session.new_ttt()
            self._text_in = (ttt, pdu.itt, acc)
            self.send_status(P.TextResponse(flags=0, itt=pdu.itt, ttt=ttt, lun=pdu.lun))
            return
        self.session.events.append(TextRequest(self, pdu, pairs))

    def text_answer(self, pdu: P.TextRequest, text: bytes) -> None:
        """Queue the answer to a :class:`TextRequest` event (in pieces of MaxRecvDataSegmentLength)."""
        if not self.closed:
            self._send_text(text, pdu)

    def _send_text(self, text: bytes, pdu: P.TextRequest) -> None:
        limit = self.max_xmit
        if len(text) > limit:
            ttt = self.session.new_ttt()
            self._text_pending = (ttt, pdu.itt, text[limit:])
            self.send_status(
                P.TextResponse(flags=TEXT_CONTINUE, itt=pdu.itt, ttt=ttt, lun=pdu.lun, data=text[:limit])
            )
        else:
            self.send_status(
                P.TextResponse(flags=FLAG_FINAL, itt=pdu.itt, ttt=RESERVED_TAG, lun=pdu.lun, data=text)
            )

    # ------------------------------------------------------------------ Logout (RFC 7143 11.14)

    def _on_logout(self, pdu: P.LogoutRequest, header: bytes) -> None:
        self._check_sn(pdu, header, TargetConnection._deliver_logout)

    def _deliver_logout(self, pdu: P.LogoutRequest, header: bytes) -> None:
        session = self.session
        response = session.logout_response(self, pdu.reason, pdu.cid)
        if response is None:
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
            # closed by a logout, its tasks end with it, even at ERL 2 (only a failure orphans them)
            if pdu.reason == LogoutReason.CLOSE_SESSION:
                for conn in session.connections.values():
                    conn.logged_out = True
            elif pdu.reason == LogoutReason.CLOSE_CONNECTION:
                target = self if pdu.cid == self.cid else session.connections.get(pdu.cid)
                if target is not None:
                    target.logged_out = True
        session.events.append(Logout(self, pdu.reason, pdu.cid, response))

    def request_logout(self, seconds: int = 2) -> None:
        """Queue an Asynchronous Message asking the initiator to log out within ``seconds`` (11.9.1)."""
        if self.logout_sent or self.closed:
            return
        self.logout_sent = True
        session = self.session
        self.send(
            P.AsyncMessage(
                lun=0,
                statsn=self._next_statsn(),
                expcmdsn=session.expcmdsn,
                maxcmdsn=session.maxcmdsn,
                async_event=int(AsyncEvent.LOGOUT_REQUEST),
                parameter3=seconds,
            )
        )

    # ------------------------------------------------------------------ the end

    def close(self, now: float) -> bool:
        """The connection is gone (closed, dropped, reinstated).  Its tasks are aborted (ERL 0/1, or closed
        by a Logout: they end with it; those collecting data end now) or, when it failed at ERL 2, wait for
        TASK REASSIGN (:meth:`TargetSession.orphan`); it leaves the session; True when the session must end
        now too (see :meth:`TargetSession.detach`).  Idempotent."""
        if self.closed:
            return False
        self.closed = True
        self.out = []
        session = self.session
        mine = [t for t in session.tasks.values() if t.conn is self]
        if self.erl >= 2 and not self.logged_out and not session.ended:
            # ERL 2 (RFC 7143 7.2.3): a failed connection's tasks wait for TASK REASSIGN on another one
            for task in mine:
                session.orphan(task, now)
            if mine:
                log.info("CID %d failed at ERL 2: %d task(s) wait for TASK REASSIGN", self.cid, len(mine))
            return session.detach(self, now)
        for task in mine:
            task.abort()
            if task.state is TaskState.COLLECTING:
                session.finish(task)  # never executed: its write buffer goes back now
            else:
                # executing: it leaves the task table now (its ITT is free for the initiator again); its
                # write buffer goes back when the device server returns (complete -> finish)
                del session.tasks[task.itt]
                if not task.immediate:
                    session.outstanding -= 1
        return session.detach(self, now)


_DELIVER_COMMAND: Final = TargetConnection._deliver_command  # a static, not a class lookup per command
# the other initiator PDUs of full feature phase (receive() calls the SCSI Command and Data-Out ones directly)
_HANDLERS: Final[dict[type, Callable[[TargetConnection, Any, bytes], None]]] = {
    P.NopOut: TargetConnection._on_nop_out,
    P.TaskMgmtRequest: TargetConnection._on_tmf,
    P.TextRequest: TargetConnection._on_text,
    P.LogoutRequest: TargetConnection._on_logout,
    P.SnackRequest: TargetConnection._on_snack,
}
