"""Sans-I/O initiator session: the full feature phase of RFC 7143 as a state machine (aioquic/h11 shape).

One :class:`InitiatorSession` owns everything session-wide on the initiator side: the command window
(CmdSN, ExpCmdSN, MaxCmdSN, RFC 7143 4.2.2.1), the ITT space, the task table, the queue of commands
waiting for a CmdSN slot, the connection set (:class:`~cistern.wire.initiator_connection.
InitiatorConnection`, MC/S 4.2.2) and the negotiated session keys. The I/O layer
(:mod:`cistern.initiator.session`) only moves bytes and runs timers:

* it calls :meth:`submit` / :meth:`nop_out` / :meth:`tmf` / :meth:`text` / :meth:`logout` /
  :meth:`task_reassign`, then writes each connection's :meth:`pdus_to_send`;
* it feeds every received frame to :meth:`receive` ``(cid, frame, now)`` and acts on the returned events
  (defined, with the task record :class:`InitiatorTask`, in :mod:`cistern.wire.initiator_events`:
  :class:`TaskCompleted`, :class:`TaskFailed`, :class:`RequestAnswered`, :class:`RequestFailed`,
  :class:`LogoutRequested`);
* it arms one timer at :meth:`next_timer` and calls :meth:`handle_timer` ``(now)``, which yields
  :class:`PingTimedOut` (NOP-Out unanswered, 7.1.1), :class:`ReconnectDue` (DefaultTime2Wait after a
  connection failure at ERL 2, 7.1.4) and :class:`RetainExpired` (DefaultTime2Retain passed before the
  tasks were reassigned, 6.3.4 / 7.2.2; they fail with :class:`TaskFailed`);
* it reports a dropped connection with :meth:`connection_lost`, whose :class:`Recovery` says whether the
  connection alone is recovered (ErrorRecoveryLevel 2) or the session is reinstated.

ERL 1 (RFC 7143 7.4-7.8, 11.16): a Data-In DataSN gap or data digest error asks a Data SNACK, an R2TSN
gap an R2T SNACK, a StatSN gap or damaged status a Status SNACK (the connection's), a DataACK is
answered; the status waits for the data asked again. A peer's violation raises
:class:`~cistern.wire.errors.RemoteProtocolError` (answer: drop the connection). No sockets, no asyncio,
no clock reads: times are the caller's ``now`` in seconds.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

from cistern.wire.constants import (
    CMD_READ,
    CMD_WRITE,
    DATAIN_ACK,
    FLAG_FINAL,
    RESERVED_TAG,
    RSP_OVERFLOW,
    RSP_UNDERFLOW,
    AsyncEvent,
    LogoutReason,
    RejectReason,
    SnackType,
    TmfFunction,
)
from cistern.wire.errors import RemoteProtocolError
from cistern.wire.framing import Frame
from cistern.wire.initiator_connection import MAX_SNACK_RUN, InitiatorConnection, TimerEvent
from cistern.wire.initiator_events import (
    Event,
    Failure,
    InitiatorTask,
    LogoutRequested,
    PingTimedOut,
    ReconnectDue,
    Recovery,
    RequestAnswered,
    RequestFailed,
    RetainExpired,
    TaskCompleted,
    TaskFailed,
)
from cistern.wire.params import Negotiated
from cistern.wire.pdu import (
    PDU,
    R2T,
    AsyncMessage,
    Buffer,
    DataIn,
    DataOut,
    LogoutRequest,
    LogoutResponse,
    NopIn,
    NopOut,
    Reject,
    ScsiCommand,
    ScsiResponse,
    SnackRequest,
    TaskMgmtRequest,
    TaskMgmtResponse,
    TextRequest,
    TextResponse,
    encode_lun,
)
from cistern.wire.serial import MASK, sn_add, sn_le, sn_lt

__all__ = [
    "Event",
    "Failure",
    "InitiatorSession",
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

TASK_ATTR_SIMPLE = 1
_HALF = 1 << 31
#: the longest text response we reassemble (bytes)
MAX_TEXT_RESPONSE = 1 << 20
#: DataSNs one task may have outstanding in Data SNACKs before the stream counts as unrecoverable
MAX_MISSING = 4096
#: seconds a reassigned task has to show an R2T, Data-In or status before it is issued again
REASSIGN_GRACE = 3.0


class _Failed:
    __slots__ = ("announced", "reconnect_at", "recovered", "retain_until")

    def __init__(self, reconnect_at: float, retain_until: float) -> None:
        self.reconnect_at = reconnect_at
        self.retain_until = retain_until
        self.announced = False
        self.recovered = False


def _residual(flags: int, count: int) -> int:
    if flags & RSP_UNDERFLOW:
        return count
    if flags & RSP_OVERFLOW:
        return -count
    return 0


class InitiatorSession:
    """The session-wide state of one initiator session (see the module docstring).

    ``load_balance``: "round_robin" or "least_queue_depth" (which connection a new command goes on);
    ``nop_interval`` / ``nop_timeout``: the keep-alive of every connection, seconds (0: no pings).
    """

    def __init__(
        self,
        negotiated: Negotiated,
        *,
        tsih: int,
        expcmdsn: int,
        maxcmdsn: int,
        load_balance: str = "round_robin",
        nop_interval: float = 0.0,
        nop_timeout: float = 10.0,
        discovery: bool = False,
    ) -> None:
        if load_balance not in ("round_robin", "least_queue_depth"):
            raise ValueError(f"load_balance={load_balance!r}: round_robin or least_queue_depth")
        self.load_balance = load_balance
        self.nop_interval = nop_interval
        self.nop_timeout = nop_timeout
        self.discovery = discovery
        self.tasks: dict[int, InitiatorTask] = {}  # sent, not completed, by ITT
        self.pending: deque[InitiatorTask] = deque()  # waiting for a CmdSN slot
        self.connections: dict[int, InitiatorConnection] = {}
        self.failed: dict[int, _Failed] = {}  # ERL 2: connections being recovered, by CID
        self.snacks = 0  # SNACK Requests sent for tasks (Data / R2T / DataACK)
        self._retired_snacks = 0  # Status SNACKs of connections since removed
        self._requests: set[int] = set()  # NOP / TMF / Text / Logout ITTs awaiting an answer
        self._pings: dict[int, int] = {}  # our keep-alive NOP-Out ITT -> CID
        self._text_parts: dict[int, bytearray] = {}
        self._next_itt = 1
        self._rr = 0
        #: connections whose outbox has PDUs (see pdus_to_send)
        self.ready: list[InitiatorConnection] = []
        #: reassigned tasks waiting to show life: (deadline, [(task, its ``heard`` count before), ...])
        self._watches: list[tuple[float, list[tuple[InitiatorTask, int]]]] = []
        self.install(negotiated, tsih=tsih, expcmdsn=expcmdsn, maxcmdsn=maxcmdsn)

    def install(self, negotiated: Negotiated, *, tsih: int, expcmdsn: int, maxcmdsn: int) -> None:
        """A new (or reinstated, RFC 7143 6.3.5) session: its keys and numbering from the leading login."""
        self.negotiated = negotiated
        self.tsih = tsih
        self.cmdsn = expcmdsn
        self.expcmdsn = expcmdsn
        self.maxcmdsn = maxcmdsn
        if hasattr(self, "connections"):
            self._drop_connections()
        self.connections = {}
        self.failed = {}

    # ---- connections ----------------------------------------------------------------------------------

    def add_connection(
        self, cid: int, expstatsn: int, negotiated: Negotiated, now: float, *, expcmdsn: int, maxcmdsn: int
    ) -> InitiatorConnection:
        """A connection that just logged in (leading or MC/S, RFC 7143 6.3.4) enters full feature phase
        with the session's SW keys and its own CO keys (``negotiated.connection``).
        ``expcmdsn``/``maxcmdsn``: the window its final Login Response carried."""
        if cid in self.connections:
            raise ValueError(f"CID {cid} is already a connection of the session")
        conn = InitiatorConnection(
            cid, now, nop_interval=self.nop_interval, nop_timeout=self.nop_timeout, ready=self.ready
        )
        # session-wide (SW) keys are the leading login's; a later login only settles the CO keys
        conn.full_feature(expstatsn, Negotiated(self.negotiated.session, negotiated.connection), now)
        self.connections[cid] = conn
        self.update_window(expcmdsn, maxcmdsn)
        return conn

    def remove_connection(self, cid: int) -> None:
        """Forget connection ``cid`` (logged out); its keep-alive stops."""
        conn = self.connections.pop(cid, None)
        if conn is not None:
            conn.pdus_to_send()  # never written: the connection is gone
            self._retired_snacks += conn.snacks
            for itt in [i for i, c in self._pings.items() if c == cid]:
                del self._pings[itt]

    def _drop_connections(self) -> None:
        for cid in list(self.connections):
            self.remove_connection(cid)
        self._pings.clear()

    @property
    def total_snacks(self) -> int:
        """SNACK Requests sent in this session: Data / R2T / DataACK and Status."""
        return self.snacks + self._retired_snacks + sum(c.snacks for c in self.connections.values())

    def free_cid(self, *, avoid: int | None = None) -> int:
        """The lowest CID not in use (nor being recovered, nor ``avoid``)."""
        return next(
            c for c in range(1, 65536) if c not in self.connections and c not in self.failed and c != avoid
        )

    def queue_depth(self, cid: int) -> int:
        """Commands in flight on connection ``cid``."""
        return sum(1 for t in self.tasks.values() if t.cid == cid)

    @property
    def window(self) -> int:
        """How many more commands the target accepts now (MaxCmdSN - CmdSN + 1)."""
        return (self.maxcmdsn - self.cmdsn + 1) & MASK if sn_le(self.cmdsn, self.maxcmdsn) else 0

    def primary(self) -> InitiatorConnection | None:
        """The connection requests go on by default: CID 0 if usable, else any active one."""
        conn = self.connections.get(0)
        if conn is None or not conn.active:
            conn = next((x for x in self.connections.values() if x.active), None) or next(
                iter(self.connections.values()), None
            )
        return conn

    def _pick(self) -> InitiatorConnection | None:
        """The connection the next command goes on (RFC 7143 leaves the choice to the initiator)."""
        conns = self.connections
        if len(conns) == 1:
            (only,) = conns.values()
            return only if only.active else None
        active = [x for x in conns.values() if x.active]
        if len(active) <= 1:
            return active[0] if active else None
        if self.load_balance == "least_queue_depth":
            depth = {x.cid: 0 for x in active}
            for t in self.tasks.values():
                if t.cid in depth:
                    depth[t.cid] += 1
            return min(active, key=lambda x: (depth[x.cid], x.cid))
        self._rr += 1
        return active[self._rr % len(active)]

    def pdus_to_send(self) -> list[tuple[int, list[PDU]]]:
        """Every connection's queued PDUs: ``[(cid, [pdu, ...]), ...]`` (connections with none omitted).
        :attr:`ready` is non-empty exactly when there may be some (a cheap test for the I/O layer)."""
        ready = self.ready
        if not ready:
            return []
        out = []
        for conn in ready:
            pdus = conn.pdus_to_send()
            if pdus and self.connections.get(conn.cid) is conn:
                out.append((conn.cid, pdus))
        ready.clear()
        return out

    # ---- ITTs and the window --------------------------------------------------------------------------

    def alloc_itt(self) -> int:
        """A free Initiator Task Tag (never 0xffffffff, RFC 7143 11.1.1)."""
        while True:
            itt = self._next_itt
            self._next_itt = (itt + 1) & MASK
            if itt != RESERVED_TAG and itt not in self.tasks and itt not in self._requests:
                return itt

    def update_window(self, expcmdsn: int, maxcmdsn: int) -> None:
        """ExpCmdSN/MaxCmdSN from a target PDU (RFC 7143 4.2.2.1; MaxCmdSN < ExpCmdSN - 1 is ignored)."""
        # serial arithmetic (wire.serial.sn_lt) inlined: this runs for every PDU the target sends
        if 0 < ((expcmdsn - 1 - maxcmdsn) & MASK) < _HALF:  # MaxCmdSN < ExpCmdSN - 1
            return
        if 0 < ((expcmdsn - self.expcmdsn) & MASK) < _HALF:
            self.expcmdsn = expcmdsn
        if 0 < ((maxcmdsn - self.maxcmdsn) & MASK) < _HALF:
            self.maxcmdsn = maxcmdsn
            self.pump()

    # ---- commands -------------------------------------------------------------------------------------

    def submit(self, task: InitiatorTask) -> None:
        """Queue a SCSI command; it goes out (:meth:`pdus_to_send`) when its CmdSN fits the window."""
        self.pending.append(task)
        self.pump()

    def pump(self) -> None:
        """Send queued commands while their CmdSN fits in the window ExpCmdSN..MaxCmdSN."""
        pending = self.pending
        while pending and sn_le(self.cmdsn, self.maxcmdsn):
            conn = self._pick()
            if conn is None:
                return
            task = pending.popleft()
            if task.finished:
                continue
            task.cid = conn.cid
            task.itt = self.alloc_itt()
            task.cmdsn = self.cmdsn
            self.cmdsn = sn_add(self.cmdsn, 1)
            self.tasks[task.itt] = task
            task.sent = True
            task.in_received = 0
            task.exp_datasn = 0
            task.missing = None
            task.held_status = None
            self._send_command(task, conn)

    def _send_command(self, task: InitiatorTask, conn: InitiatorConnection) -> None:
        """SCSI Command with immediate data, then the unsolicited Data-Out burst (RFC 7143 3.2.4.2)."""
        n = self.negotiated
        flags = TASK_ATTR_SIMPLE
        immediate: Buffer = b""
        unsolicited_end = 0
        data_out = task.data_out
        if data_out is not None and len(data_out):
            flags |= CMD_WRITE
            first_burst = min(n.first_burst_length, len(data_out))
            if n.immediate_data:
                immediate = data_out[: min(first_burst, conn.negotiated.max_xmit_data_segment_length)]
            unsolicited_end = len(immediate) if n.initial_r2t else first_burst
        if task.read_length:
            flags |= CMD_READ
        if unsolicited_end <= len(immediate):
            flags |= FLAG_FINAL
        lun_field = encode_lun(task.lun)
        out = conn.outbox  # conn.send(), inlined: the hot path
        if not out:
            self.ready.append(conn)
        out.append(
            ScsiCommand(
                flags,
                lun_field,
                task.itt,
                task.expected_length,
                task.cmdsn,
                conn.expstatsn,
                task.cdb.ljust(16, b"\0"),
                data=immediate,
            )
        )
        if unsolicited_end > len(immediate):
            self._send_data_out(task, RESERVED_TAG, len(immediate), unsolicited_end - len(immediate), conn)

    def _send_data_out(
        self, task: InitiatorTask, ttt: int, offset: int, length: int, conn: InitiatorConnection
    ) -> None:
        """One Data-Out sequence: PDUs of at most the target's MaxRecvDataSegmentLength, F on the last."""
        data = task.data_out
        assert data is not None
        seg = conn.negotiated.max_xmit_data_segment_length
        lun_field = encode_lun(task.lun)
        end = offset + length
        datasn = 0
        while offset < end:
            n = min(seg, end - offset)
            conn.send(
                DataOut(
                    FLAG_FINAL if offset + n >= end else 0,
                    lun_field,
                    task.itt,
                    ttt,
                    conn.expstatsn,
                    datasn,
                    offset,
                    data=data[offset : offset + n],
                )
            )
            offset += n
            datasn += 1

    def release_data_out(self, task: InitiatorTask) -> None:
        """Answer the R2Ts held back for ``task`` (fault injection, see ``hold_data_out``)."""
        task.hold_data_out = False
        held, task.held_r2ts = task.held_r2ts, []
        conn = self.connections.get(task.cid)
        for r2t in held:
            if self.tasks.get(task.itt) is task and conn is not None:
                self._send_data_out(task, r2t.ttt, r2t.buffer_offset, r2t.desired_data_transfer_length, conn)

    def forget(self, task: InitiatorTask) -> None:
        """The I/O layer ended ``task`` itself (aborted, timed out): stop tracking it."""
        task.finished = True
        if self.tasks.get(task.itt) is task:
            del self.tasks[task.itt]
        else:
            try:
                self.pending.remove(task)
            except ValueError:
                pass

    def reissue(self, tasks: Iterable[InitiatorTask]) -> None:
        """Issue ``tasks`` again as new commands (new ITT and CmdSN), ahead of those never sent."""
        again = []
        for task in tasks:
            if self.tasks.get(task.itt) is task:
                del self.tasks[task.itt]
            task.sent = False
            task.attempts += 1
            again.append(task)
        self.pending.extendleft(reversed(again))
        self.pump()

    def sink(self, pdu: PDU) -> memoryview | None:
        """Where a Data-In's data segment should land (the framer reads it straight there)."""
        if type(pdu) is DataIn:
            task = self.tasks.get(pdu.itt)
            if task is not None and task.read_buffer is not None:
                return task.read_buffer[pdu.buffer_offset :]
        return None

    # ---- requests: NOP, TMF, Text, Logout -------------------------------------------------------------

    def _request(self, conn: InitiatorConnection, pdu: Any) -> int:
        self._requests.add(pdu.itt)
        conn.send(pdu)
        return int(pdu.itt)

    def _conn(self, cid: int | None) -> InitiatorConnection:
        conn = self.connections.get(cid) if cid is not None else self.primary()
        if conn is None:
            raise KeyError(f"no connection {cid}")
        return conn

    def nop_out(self, data: bytes = b"", cid: int | None = None) -> int:
        """A NOP-Out ping asking for a NOP-In (RFC 7143 11.18); returns its ITT."""
        conn = self._conn(cid)
        pdu = NopOut(
            FLAG_FINAL, 0, self.alloc_itt(), RESERVED_TAG, self.cmdsn, conn.expstatsn, immediate=True
        )
        pdu.data = data
        return self._request(conn, pdu)

    def tmf(
        self, function: TmfFunction, lun: int = 0, ref: InitiatorTask | None = None, cid: int | None = None
    ) -> int:
        """A Task Management Function Request (RFC 7143 11.5); returns its ITT."""
        conn = self._conn(cid)
        return self._request(
            conn,
            TaskMgmtRequest(
                FLAG_FINAL | function,
                encode_lun(lun),
                self.alloc_itt(),
                ref.itt if ref is not None else RESERVED_TAG,
                self.cmdsn,
                conn.expstatsn,
                ref.cmdsn if ref is not None else 0,
                0,
                immediate=True,
            ),
        )

    def task_reassign(self, task: InitiatorTask, cid: int) -> int:
        """TASK REASSIGN ``task`` onto connection ``cid`` (RFC 7143 11.5.1, 7.2.2) with ExpDataSN = the
        next DataSN (reads) / R2TSN (writes) we expect, so the target resends only what was lost."""
        conn = self._conn(cid)
        task.cid = cid  # its R2Ts, Data-In and status now come on the new connection
        if task.data_out is not None:
            task.resync = True
            task.missing = None  # R2Ts asked before are void: the target solicits what it lacks anew
        return self._request(
            conn,
            TaskMgmtRequest(
                FLAG_FINAL | TmfFunction.TASK_REASSIGN,
                encode_lun(task.lun),
                self.alloc_itt(),
                task.itt,
                self.cmdsn,
                conn.expstatsn,
                task.cmdsn,
                task.exp_datasn,
                immediate=True,
            ),
        )

    def text(self, data: bytes, cid: int | None = None) -> int:
        """A Text Request (RFC 7143 11.10) carrying ``data`` (encoded key=value pairs); returns its ITT."""
        conn = self._conn(cid)
        pdu = TextRequest(
            FLAG_FINAL, 0, self.alloc_itt(), RESERVED_TAG, self.cmdsn, conn.expstatsn, immediate=True
        )
        pdu.data = data
        return self._request(conn, pdu)

    def logout(self, reason: LogoutReason, cid: int = 0, carrier: int | None = None) -> int:
        """A Logout Request (RFC 7143 11.14) for connection ``cid`` sent on ``carrier`` (default the
        primary connection); returns its ITT."""
        conn = self._conn(carrier)
        return self._request(
            conn,
            LogoutRequest(
                FLAG_FINAL | reason, self.alloc_itt(), cid, self.cmdsn, conn.expstatsn, immediate=True
            ),
        )

    def cancel_request(self, itt: int) -> None:
        """The I/O layer gave up on request ``itt`` (timeout): its answer, if any, is dropped."""
        self._requests.discard(itt)
        self._text_parts.pop(itt, None)

    # ---- receiving ------------------------------------------------------------------------------------

    def receive(self, cid: int, frame: Frame, now: float) -> list[Event]:
        """One frame from connection ``cid`` at ``now``; returns what happened. Raises
        RemoteProtocolError (drop the connection) for a PDU the target must not send."""
        conn = self.connections.get(cid)
        if conn is None:
            return []
        conn.timers.last_rx = now
        pdu = frame.pdu
        if pdu is None:
            raise RemoteProtocolError(f"undecodable PDU from the target: {frame.error}")
        events: list[Event] = []
        if isinstance(pdu, DataIn):
            self._on_data_in(pdu, frame, conn, events)
        elif isinstance(pdu, ScsiResponse):
            self._on_scsi_response(pdu, frame, conn, events)
        elif isinstance(pdu, R2T):
            self._on_r2t(pdu, conn)
        elif isinstance(pdu, NopIn):
            self._on_nop_in(pdu, conn, events)
        elif isinstance(pdu, (TaskMgmtResponse, LogoutResponse)):
            conn.status_seen(pdu.statsn)
            self.update_window(pdu.expcmdsn, pdu.maxcmdsn)
            if pdu.itt in self._requests:
                self._requests.discard(pdu.itt)
                events.append(RequestAnswered(pdu.itt, pdu))
        elif isinstance(pdu, TextResponse):
            self._on_text_response(pdu, conn, events)
        elif isinstance(pdu, Reject):
            self._on_reject(pdu, conn, events)
        elif isinstance(pdu, AsyncMessage):
            conn.status_seen(pdu.statsn)
            self.update_window(pdu.expcmdsn, pdu.maxcmdsn)
            if pdu.async_event == AsyncEvent.LOGOUT_REQUEST:
                events.append(LogoutRequested(cid))
        else:
            raise RemoteProtocolError(
                f"unexpected {type(pdu).__name__} from the target in full feature phase"
            )
        return events

    def _ask_data(self, task: InitiatorTask, conn: InitiatorConnection, begrun: int, runlength: int) -> None:
        """Data/R2T SNACK (RFC 7143 11.16, type 0): resend DataSN (reads) or R2TSN (writes) ``begrun`` ..
        ``begrun+runlength-1`` (RunLength 0: that one and all after it)."""
        if task.missing is None:
            task.missing = set()
        task.missing.update(sn_add(begrun, i) for i in range(min(max(runlength, 1), MAX_SNACK_RUN)))
        if len(task.missing) > MAX_MISSING:  # a target skipping numbers without end
            raise RemoteProtocolError(f"more than {MAX_MISSING} PDUs missing for ITT 0x{task.itt:x}")
        self.snacks += 1
        conn.send(
            SnackRequest(
                FLAG_FINAL | SnackType.DATA_R2T,
                encode_lun(task.lun),
                task.itt,
                RESERVED_TAG,
                conn.expstatsn,
                begrun,
                runlength,
            )
        )

    def _on_data_in(self, pdu: DataIn, frame: Frame, conn: InitiatorConnection, events: list[Event]) -> None:
        self.update_window(pdu.expcmdsn, pdu.maxcmdsn)
        task = self.tasks.get(pdu.itt)
        if task is None:
            return  # a task we aborted, or garbage: nothing to place it in
        erl1 = self.negotiated.error_recovery_level >= 1
        sn = pdu.datasn
        if not frame.data_digest_ok:
            if not erl1:
                raise RemoteProtocolError("data digest error in Data-In at ErrorRecoveryLevel 0")
            # ERL 1 (RFC 7143 7.8): the header is sound, ask this DataSN again (a status it carried comes
            # back with it). RunLength 0: LIO 6.1 refuses a run reaching its last DataSN (off by one)
            self._ask_data(task, conn, sn, 0)
            if sn == task.exp_datasn:
                task.exp_datasn = sn_add(sn, 1)
            return
        task.heard += 1
        if sn == task.exp_datasn:
            task.exp_datasn = (sn + 1) & MASK
        elif sn_lt(task.exp_datasn, sn):
            if erl1:  # a DataSN gap: Data SNACK for the run we did not get
                self._ask_data(task, conn, task.exp_datasn, (sn - task.exp_datasn) & MASK)
            task.exp_datasn = sn_add(sn, 1)
        if task.missing:
            task.missing.discard(sn)
        n = len(pdu.data)
        off = pdu.buffer_offset
        buf = task.read_buffer
        if n:
            if buf is None or off + n > len(buf):
                raise RemoteProtocolError(f"Data-In beyond the expected transfer length (ITT 0x{pdu.itt:x})")
            if not frame.sunk:
                buf[off : off + n] = pdu.data
            if off + n > task.in_received:
                task.in_received = off + n
        if pdu.flags & DATAIN_ACK and erl1 and pdu.ttt != RESERVED_TAG and not task.missing:
            # DataACK (A bit, RFC 7143 11.7.2): acknowledge every DataSN up to this one (SNACK type 2)
            self.snacks += 1
            conn.send(
                SnackRequest(
                    FLAG_FINAL | SnackType.DATA_ACK,
                    encode_lun(task.lun),
                    task.itt,
                    pdu.ttt,
                    conn.expstatsn,
                    sn_add(sn, 1),
                    0,
                )
            )
        if pdu.has_status:
            conn.status_seen(pdu.statsn)
            task.held_status = (pdu.status, _residual(pdu.flags, pdu.residual_count), b"")
        held = task.held_status
        if held is not None and not task.missing:
            del self.tasks[task.itt]
            task.finished = True
            events.append(TaskCompleted(task, held[0], held[1], held[2]))

    def _complete(self, task: InitiatorTask, events: list[Event]) -> None:
        del self.tasks[task.itt]
        task.finished = True
        status = task.held_status
        assert status is not None
        events.append(TaskCompleted(task, *status))

    def _on_scsi_response(
        self, pdu: ScsiResponse, frame: Frame, conn: InitiatorConnection, events: list[Event]
    ) -> None:
        if not frame.data_digest_ok and self.negotiated.error_recovery_level >= 1:
            conn.status_damaged(pdu.statsn)  # ERL 1: sense damaged, header sound: ask it again (7.5)
            return
        conn.status_seen(pdu.statsn)
        self.update_window(pdu.expcmdsn, pdu.maxcmdsn)
        task = self.tasks.get(pdu.itt)
        if task is None:
            return
        if not frame.data_digest_ok:
            raise RemoteProtocolError("data digest error in SCSI Response at ErrorRecoveryLevel 0")
        if pdu.response != 0:
            del self.tasks[pdu.itt]
            task.finished = True
            events.append(TaskFailed(task, Failure.SERVICE_RESPONSE, f"iSCSI Response 0x{pdu.response:02x}"))
            return
        task.held_status = (pdu.status, _residual(pdu.flags, pdu.residual_count), pdu.sense())
        if task.missing and task.data_out is None:
            return  # Data-In asked again with a Data SNACK is still to come
        self._complete(task, events)

    def _on_r2t(self, pdu: R2T, conn: InitiatorConnection) -> None:
        self.update_window(pdu.expcmdsn, pdu.maxcmdsn)
        task = self.tasks.get(pdu.itt)
        if task is None:
            return
        task.heard += 1
        sn = pdu.r2tsn
        if task.resync:
            task.resync = False  # the first R2T after a TASK REASSIGN
            task.exp_datasn = sn
        elif task.missing and sn in task.missing:
            task.missing.discard(sn)  # an R2T asked again with an R2T SNACK
        elif sn_lt(task.exp_datasn, sn) and self.negotiated.error_recovery_level >= 1:
            # an R2TSN gap (e.g. an R2T lost to a header digest error): R2T SNACK for the run (11.16.1)
            self._ask_data(task, conn, task.exp_datasn, (sn - task.exp_datasn) & MASK)
        if sn_le(task.exp_datasn, sn):
            task.exp_datasn = sn_add(sn, 1)
        data = task.data_out
        off, length = pdu.buffer_offset, pdu.desired_data_transfer_length
        if data is None or length == 0 or off + length > len(data):
            raise RemoteProtocolError(
                f"R2T for bytes {off}+{length} outside the command's data (ITT 0x{pdu.itt:x})"
            )
        if task.hold_data_out:
            task.held_r2ts.append(pdu)
            return
        self._send_data_out(task, pdu.ttt, off, length, conn)

    def _on_nop_in(self, pdu: NopIn, conn: InitiatorConnection, events: list[Event]) -> None:
        self.update_window(pdu.expcmdsn, pdu.maxcmdsn)
        itt = pdu.itt
        if itt != RESERVED_TAG:
            conn.status_seen(pdu.statsn)
            if itt in self._pings:
                self.connections[self._pings.pop(itt)].timers.ping_answered(itt)
            elif itt in self._requests:
                self._requests.discard(itt)
                events.append(RequestAnswered(itt, pdu, bytes(pdu.data)))
        if pdu.ttt != RESERVED_TAG:  # the target pings us: answer (RFC 7143 11.18)
            conn.send(
                NopOut(FLAG_FINAL, pdu.lun, RESERVED_TAG, pdu.ttt, self.cmdsn, conn.expstatsn, immediate=True)
            )

    def _on_text_response(self, pdu: TextResponse, conn: InitiatorConnection, events: list[Event]) -> None:
        conn.status_seen(pdu.statsn)
        self.update_window(pdu.expcmdsn, pdu.maxcmdsn)
        if pdu.itt not in self._requests:
            return
        parts = self._text_parts.setdefault(pdu.itt, bytearray())
        parts += pdu.data
        if len(parts) > MAX_TEXT_RESPONSE:
            raise RemoteProtocolError("text response longer than 1 MiB")
        if pdu.cont or not pdu.final:
            # RFC 7143 11.10.4: ask for the rest with an empty Text Request echoing the TTT
            conn.send(
                TextRequest(FLAG_FINAL, 0, pdu.itt, pdu.ttt, self.cmdsn, conn.expstatsn, immediate=True)
            )
            return
        self._requests.discard(pdu.itt)
        events.append(RequestAnswered(pdu.itt, pdu, bytes(self._text_parts.pop(pdu.itt))))

    def _on_reject(self, pdu: Reject, conn: InitiatorConnection, events: list[Event]) -> None:
        conn.status_seen(pdu.statsn)
        self.update_window(pdu.expcmdsn, pdu.maxcmdsn)
        header = bytes(pdu.data)
        if len(header) < 48:
            return
        itt = int.from_bytes(header[16:20], "big")
        opcode = header[0] & 0x3F
        if (
            opcode == 0x05
            and pdu.reason == RejectReason.DATA_DIGEST_ERROR
            and self.negotiated.error_recovery_level >= 1
        ):
            # ERL 1 (RFC 7143 7.8, 11.17.1): a Data-Out the target got corrupted; it asks for the data
            # again with a recovery R2T, which the task answers like any other R2T
            return
        if opcode == 0x10 and pdu.reason == RejectReason.SNACK_REJECT:
            task = self.tasks.get(itt)
            if task is not None and task.data_out is not None:
                # an R2T SNACK the target cannot honour: none of those R2Ts is outstanding any more
                # (satisfied, or superseded by recovery R2Ts): nothing is missing (RFC 7143 11.16.1)
                task.missing = None
                return
        detail = f"target rejected our PDU (opcode 0x{opcode:02x}, reason 0x{pdu.reason:02x})"
        task = self.tasks.pop(itt, None)
        if task is not None:
            task.finished = True
            events.append(TaskFailed(task, Failure.REJECTED, detail))
        if itt in self._requests:
            self._requests.discard(itt)
            self._text_parts.pop(itt, None)
            events.append(RequestFailed(itt, Failure.REJECTED, detail))

    # ---- failures and recovery ------------------------------------------------------------------------

    def connection_lost(self, cid: int, now: float) -> Recovery:
        """Connection ``cid`` failed at ``now``. ErrorRecoveryLevel 2 (not discovery): it alone is
        recovered — :class:`ReconnectDue` after DefaultTime2Wait, its tasks kept until DefaultTime2Retain
        (RFC 7143 7.1.1, 7.1.4, 6.3.4). Below: every connection is gone and the caller reinstates the
        session (:meth:`reinstate`)."""
        if cid not in self.connections:
            return Recovery.NONE
        self.remove_connection(cid)
        n = self.negotiated
        if n.error_recovery_level >= 2 and not self.discovery:
            self.failed[cid] = _Failed(now + n.default_time2wait, now + max(n.default_time2retain, 1))
            return Recovery.CONNECTION
        self._drop_connections()
        return Recovery.SESSION

    def connection_recovered(self, old_cid: int) -> None:
        """The replacement of ``old_cid`` logged in: its tasks are reassigned by the caller
        (:meth:`task_reassign`) until :meth:`retain_deadline`; :meth:`recovery_done` ends it."""
        failed = self.failed.get(old_cid)
        if failed is not None:
            failed.recovered = True

    def retain_deadline(self, old_cid: int) -> float | None:
        """Until when the tasks of failed connection ``old_cid`` may be reassigned (DefaultTime2Retain)."""
        failed = self.failed.get(old_cid)
        return failed.retain_until if failed is not None else None

    def recovery_done(self, old_cid: int) -> None:
        self.failed.pop(old_cid, None)

    def watch_reassigned(self, watch: list[tuple[InitiatorTask, int]], now: float) -> None:
        """Tasks just TASK REASSIGNed, each with its ``heard`` count from before the request. The TMF
        response code alone is not trusted (LIO 6.1 answers a successful reassign "function rejected"):
        a task counts as reassigned when the target shows it — an R2T, Data-In or status — within
        :data:`REASSIGN_GRACE` seconds; at that deadline (:meth:`handle_timer`) the others are issued again
        as new commands (new ITT and CmdSN: their command or status went down with the connection)."""
        if watch:
            self._watches.append((now + REASSIGN_GRACE, watch))

    def tasks_of(self, cid: int) -> list[InitiatorTask]:
        """The tasks allegiant to connection ``cid``, oldest CmdSN first."""
        return sorted(
            (t for t in self.tasks.values() if t.cid == cid),
            key=lambda t: (self.cmdsn - t.cmdsn) & MASK,
            reverse=True,
        )

    def reinstate(self, max_reissue: int) -> list[Event]:
        """Session reinstatement (RFC 7143 6.3.5) begins: every command that had not completed goes back
        to the head of the queue in CmdSN order; one re-issued more than ``max_reissue`` times fails.
        Pending requests are forgotten (the I/O layer fails them)."""
        inflight = self.tasks_of_all()
        self.tasks.clear()
        self._requests.clear()
        self._text_parts.clear()
        self._drop_connections()
        self.failed.clear()
        self._watches.clear()
        events: list[Event] = []
        requeue = []
        for task in inflight:
            task.attempts += 1
            task.sent = False
            if task.attempts > max_reissue:
                task.finished = True
                events.append(
                    TaskFailed(task, Failure.REISSUE_EXHAUSTED, f"re-issued {task.attempts - 1} times")
                )
            else:
                requeue.append(task)
        self.pending.extendleft(reversed(requeue))
        return events

    def tasks_of_all(self) -> list[InitiatorTask]:
        """Every task in flight, oldest CmdSN first (serial arithmetic, RFC 1982)."""
        return sorted(self.tasks.values(), key=lambda t: (self.cmdsn - t.cmdsn) & MASK, reverse=True)

    def clear(self) -> list[InitiatorTask]:
        """The session ends: every task (in flight and queued) is returned and forgotten."""
        out = [*self.tasks.values(), *self.pending]
        for task in out:
            task.finished = True
        self.tasks.clear()
        self.pending.clear()
        self._requests.clear()
        self._text_parts.clear()
        self._pings.clear()
        return out

    # ---- time -----------------------------------------------------------------------------------------

    def next_timer(self) -> float | None:
        """When :meth:`handle_timer` is due next (absolute seconds, the caller's clock), or None."""
        due: float | None = None
        for conn in self.connections.values():
            t = conn.next_timer()
            if t is not None and (due is None or t < due):
                due = t
        for t, _ in self._watches:
            if due is None or t < due:
                due = t
        for failed in self.failed.values():
            if failed.recovered:
                continue  # the caller reassigns its tasks against retain_deadline()
            t = failed.retain_until if failed.announced else failed.reconnect_at
            if due is None or t < due:
                due = t
        return due

    def handle_timer(self, now: float) -> list[Event]:
        """Everything due at ``now``: keep-alive pings sent (in the outboxes), dead connections, ERL 2
        reconnects due and tasks whose DefaultTime2Retain passed."""
        events: list[Event] = []
        for conn in list(self.connections.values()):
            ev = conn.handle_timer(now)
            if ev is TimerEvent.SEND_PING:
                itt = self.alloc_itt()
                conn.send(
                    NopOut(FLAG_FINAL, 0, itt, RESERVED_TAG, self.cmdsn, conn.expstatsn, immediate=True)
                )
                conn.timers.ping_sent(itt, now)
                self._pings[itt] = conn.cid
            elif ev is TimerEvent.PEER_DEAD:
                events.append(PingTimedOut(conn.cid))
        if self._watches:
            due_now = [w for t, w in self._watches if now >= t]
            self._watches = [(t, w) for t, w in self._watches if now < t]
            for watch in due_now:
                tasks = self.tasks
                self.reissue(t for t, h in watch if not t.finished and t.heard == h and tasks.get(t.itt) is t)
        for cid, failed in list(self.failed.items()):
            if not failed.announced and not failed.recovered and now >= failed.reconnect_at:
                failed.announced = True
                events.append(ReconnectDue(cid))
            if now >= failed.retain_until and not failed.recovered:
                events += self.abandon_recovery(cid)
        return events

    def abandon_recovery(self, cid: int) -> list[Event]:
        """Connection ``cid`` will not be recovered (DefaultTime2Retain passed, or the target answered
        another session): its tasks fail (:class:`TaskFailed`), then :class:`RetainExpired`."""
        self.failed.pop(cid, None)
        events: list[Event] = []
        detail = f"connection {cid} not recovered within DefaultTime2Retain"
        for task in self.tasks_of(cid):
            del self.tasks[task.itt]
            task.finished = True
            events.append(TaskFailed(task, Failure.NOT_RECOVERED, detail))
        events.append(RetainExpired(cid))
        return events
