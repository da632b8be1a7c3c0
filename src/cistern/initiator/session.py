"""The initiator's full feature phase: command window, data transfer, task management, keep-alive and
recovery (RFC 7143 sections 3.2.2 CmdSN, 3.2.2.3 window, 10 PDUs, 6.3.5 session reinstatement, 7).

A :class:`Session` owns one connection at a time.  Commands wait in FIFO order until their CmdSN fits the
window ExpCmdSN..MaxCmdSN the target advertises, then go out with immediate data and unsolicited Data-Out
as FirstBurstLength/ImmediateData/InitialR2T allow; R2Ts are answered with Data-Out sequences cut at the
target's MaxRecvDataSegmentLength; Data-In lands in the command's buffer (the framer's sink) and may carry
the status (phase collapse).

When the connection drops (TCP error, digest error, a silent target caught by the NOP keep-alive) the
session logs in again with the same ISID and TSIH 0, which reinstates the session on the target and ends
the old one's tasks, and re-issues every command that had not completed, in CmdSN order.  A command either
completes or fails with a clear error (:class:`SessionFailed`, :class:`ConnectionLost`), never silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from cistern.initiator.connection import IscsiProtocol
from cistern.initiator.errors import (
    CommandAborted,
    CommandTimeout,
    ConnectionLost,
    IscsiError,
    LoginError,
    ProtocolError,
    ServiceResponseError,
    SessionFailed,
    TaskManagementError,
    UnitAttention,
)
from cistern.initiator.params import LoginResult, SessionConfig
from cistern.initiator.task import TASK_ATTR_SIMPLE, Command, ScsiResult, raise_for_status
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
    TmfResponse,
)
from cistern.wire.framing import Frame
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
from cistern.wire.serial import sn_add, sn_le, sn_lt
from cistern.wire.text import TextError, encode_text, parse_text

log = logging.getLogger(__name__)

LoginFn = Callable[..., Awaitable[tuple[IscsiProtocol, LoginResult]]]
"""Opens a TCP connection and logs in: (config, tsih, cid=0, cmdsn=0) -> (protocol, result)."""


class Link:
    """One connection of the session (MC/S, RFC 7143 4.2.2): its CID, its StatSN/ExpStatSN and whether
    new commands may be placed on it."""

    __slots__ = ("active", "cid", "expstatsn", "high", "missing", "protocol")

    def __init__(self, cid: int, protocol: IscsiProtocol, expstatsn: int) -> None:
        self.cid = cid
        self.protocol = protocol
        self.expstatsn = expstatsn
        self.active = True
        self.high = sn_add(expstatsn, -1 & 0xFFFFFFFF)  # highest StatSN seen
        self.missing: set[int] = set()  # StatSNs asked again with a Status SNACK (ERL 1)


#: seconds a reassigned task has to show an R2T, Data-In or status before it is issued again
REASSIGN_GRACE = 3.0


class State(enum.Enum):
    FULL_FEATURE = "full feature"
    RECOVERING = "recovering"
    CLOSING = "closing"
    CLOSED = "closed"
    FAILED = "failed"


class Session:
    """A logged-in iSCSI session.  Use :func:`cistern.initiator.connect` to make one."""

    def __init__(
        self, config: SessionConfig, login: LoginFn, protocol: IscsiProtocol, result: LoginResult
    ) -> None:
        self.config = config
        self._login = login
        self._pending: deque[Command] = deque()  # waiting for a CmdSN slot
        self._tasks: dict[int, Command] = {}  # sent, not completed, by ITT
        self._requests: dict[int, asyncio.Future[Any]] = {}  # NOP / TMF / Text / Logout, by ITT
        self._text_parts: dict[int, bytearray] = {}
        self._next_itt = 1
        self._state = State.FULL_FEATURE
        self._failure: BaseException | None = None
        self._recovery: asyncio.Task[None] | None = None
        self._keepalive: asyncio.Task[None] | None = None
        self.reconnects = 0
        self.connection_recoveries = 0
        self.snacks = 0  # SNACK Requests sent (ERL 1 recoveries)
        self._links: dict[int, Link] = {}
        self._link_tasks: set[asyncio.Task[Any]] = set()
        self._rr = 0
        self._conn: IscsiProtocol = protocol
        self._install(protocol, result)
        if config.nop_interval > 0:
            self._keepalive = asyncio.get_running_loop().create_task(self._keepalive_loop())

    # ----------------------------------------------------------------------------------------------
    # connection installation and dispatch

    def _install(self, protocol: IscsiProtocol, result: LoginResult) -> None:
        """The leading connection of a new (or reinstated) session: CID 0, the session's numbering."""
        self.negotiated = result.negotiated
        self.tsih = result.tsih
        self.target_alias = result.target_alias
        self._cmdsn = result.expcmdsn
        self._expcmdsn = result.expcmdsn
        self._maxcmdsn = result.maxcmdsn
        self._links = {}
        self._attach(0, protocol, result)
        self._handlers: dict[type[PDU], Callable[[Any, Frame, Link], None]] = {
            DataIn: self._on_data_in,
            ScsiResponse: self._on_scsi_response,
            R2T: self._on_r2t,
            NopIn: self._on_nop_in,
            TaskMgmtResponse: self._on_reply,
            LogoutResponse: self._on_reply,
            TextResponse: self._on_text_response,
            Reject: self._on_reject,
            AsyncMessage: self._on_async,
        }

    def _attach(self, cid: int, protocol: IscsiProtocol, result: LoginResult) -> Link:
        """Put a logged-in connection into full feature phase as connection ``cid`` of the session."""
        link = Link(cid, protocol, result.expstatsn)
        self._links[cid] = link
        if cid == 0 or len(self._links) == 1:
            self._conn = protocol
        n = result.negotiated
        protocol.enter_full_feature(
            header_digest=n.header_digest,
            data_digest=n.data_digest,
            max_recv_data_segment_length=n.max_recv_data_segment_length,
            on_frame=lambda frame: self._on_frame(frame, link),
            on_lost=lambda exc: self._on_link_lost(link, exc),
            sink=self._sink,
        )
        return link

    @property
    def connection_ids(self) -> list[int]:
        """The CIDs of the session's connections in full feature phase."""
        return sorted(self._links)

    def queue_depth(self, cid: int) -> int:
        """Commands in flight on connection ``cid``."""
        return sum(1 for c in self._tasks.values() if c.cid == cid)

    @property
    def _expstatsn(self) -> int:
        link = self._links.get(0) or next(iter(self._links.values()), None)
        return link.expstatsn if link is not None else 0

    def _primary(self) -> Link:
        link = self._links.get(0)
        if link is None or not link.active:
            link = next((x for x in self._links.values() if x.active), None) or next(
                iter(self._links.values()), None
            )
        if link is None:
            raise ConnectionLost("session has no connection")
        return link

    def _pick(self) -> Link | None:
        """The connection the next command goes on (RFC 7143 leaves the choice to the initiator)."""
        if len(self._links) == 1:
            (only,) = self._links.values()
            return only if only.active else None
        links = [x for x in self._links.values() if x.active]
        if len(links) <= 1:
            return links[0] if links else None
        if self.config.load_balance == "least_queue_depth":
            depth = {x.cid: 0 for x in links}
            for c in self._tasks.values():
                if c.cid in depth:
                    depth[c.cid] += 1
            return min(links, key=lambda x: (depth[x.cid], x.cid))
        self._rr += 1
        return links[self._rr % len(links)]

    @property
    def state(self) -> State:
        return self._state

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    @property
    def window(self) -> int:
        """How many more commands the target accepts now (MaxCmdSN - CmdSN + 1)."""
        return (self._maxcmdsn - self._cmdsn + 1) & 0xFFFFFFFF if sn_le(self._cmdsn, self._maxcmdsn) else 0

    def _sink(self, pdu: PDU) -> memoryview | None:
        if type(pdu) is DataIn:
            cmd = self._tasks.get(pdu.itt)
            if cmd is not None and cmd.read_buffer is not None:
                return cmd.read_buffer[pdu.buffer_offset :]
        return None

    def _on_frame(self, frame: Frame, link: Link) -> None:
        pdu = frame.pdu
        if pdu is None:
            raise ProtocolError(f"undecodable PDU from the target: {frame.error}")
        handler = self._handlers.get(type(pdu))
        if handler is None:
            raise ProtocolError(f"unexpected {type(pdu).__name__} from the target in full feature phase")
        handler(pdu, frame, link)

    def _update_sn(self, expcmdsn: int, maxcmdsn: int) -> None:
        # RFC 7143 4.2.2.1: ignore a window with MaxCmdSN < ExpCmdSN - 1
        if sn_lt(maxcmdsn, sn_add(expcmdsn, -1 & 0xFFFFFFFF)):
            return
        if sn_lt(self._expcmdsn, expcmdsn):
            self._expcmdsn = expcmdsn
        if sn_lt(self._maxcmdsn, maxcmdsn):
            self._maxcmdsn = maxcmdsn
            self._pump()

    def _status_seen(self, statsn: int, link: Link) -> None:
        if not link.missing and statsn == (link.high + 1) & 0xFFFFFFFF:  # in order: the common case
            link.high = statsn
            link.expstatsn = (statsn + 1) & 0xFFFFFFFF
            return
        if link.missing:
            link.missing.discard(statsn)
        if sn_lt(link.high, statsn):
            gap = (statsn - link.high - 1) & 0xFFFFFFFF
            if gap and self.negotiated.error_recovery_level >= 1 and gap < 1024:
                # a StatSN gap: Status SNACK for the run we did not get (RFC 7143 7.5, 11.16 type 1);
                # ExpStatSN stays below it so the target keeps those statuses
                begrun = sn_add(link.high, 1)
                link.missing.update(sn_add(begrun, i) for i in range(gap))
                self._ask_status(link, begrun, gap)
            link.high = statsn
        if link.missing:
            link.expstatsn = min(link.missing, key=lambda sn: (sn - link.expstatsn) & 0xFFFFFFFF)
        elif sn_lt(link.expstatsn, sn_add(link.high, 1)):
            link.expstatsn = sn_add(link.high, 1)

    # ----------------------------------------------------------------------------------------------
    # commands

    def _alloc_itt(self) -> int:
        while True:
            itt = self._next_itt
            self._next_itt = (itt + 1) & 0xFFFFFFFF
            if itt != RESERVED_TAG and itt not in self._tasks and itt not in self._requests:
                return itt

    def _check_usable(self) -> None:
        if self._state in (State.CLOSED, State.CLOSING):
            raise ConnectionLost("session is closed")
        if self._state is State.FAILED:
            raise SessionFailed(f"session failed: {self._failure}")

    def submit(self, lun: int, cdb: bytes, data_out: Buffer | None = None, read_length: int = 0) -> Command:
        """Queue one SCSI command and return its handle; ``await`` the handle for the result."""
        self._check_usable()
        if data_out is not None and read_length:
            raise ValueError("bidirectional commands are not supported")
        cmd = Command(lun, cdb, data_out, read_length)
        self._pending.append(cmd)
        self._pump()
        return cmd

    async def execute(
        self,
        lun: int,
        cdb: bytes,
        data_out: Buffer | None = None,
        read_length: int = 0,
        *,
        timeout: float | None = None,
        check: bool = True,
    ) -> ScsiResult:
        """Run one SCSI command; raise the mapped :class:`ScsiError` unless ``check`` is False.

        UNIT ATTENTION is retried ``config.retry_unit_attention`` times (it reports a past event, e.g.
        the I_T nexus loss a reconnect causes, not a failure of this command).
        """
        attempts = self.config.retry_unit_attention
        while True:
            cmd = self.submit(lun, cdb, data_out, read_length)
            result = await self._wait(cmd, timeout)
            if not check:
                return result
            try:
                return raise_for_status(result)
            except UnitAttention:
                if attempts <= 0:
                    raise
                attempts -= 1

    async def _wait(self, cmd: Command, timeout: float | None) -> ScsiResult:
        if timeout is None:
            return await cmd.future
        try:
            return await asyncio.wait_for(asyncio.shield(cmd.future), timeout)
        except TimeoutError:
            with contextlib.suppress(IscsiError):
                await self.abort_task(cmd)
            cmd.fail(CommandTimeout(f"command {cmd.cdb[:1].hex()} timed out after {timeout}s"))
            raise CommandTimeout(f"command 0x{cmd.cdb[0]:02x} timed out after {timeout}s") from None

    def _pump(self) -> None:
        """Send queued commands while their CmdSN fits in the window."""
        if self._state is not State.FULL_FEATURE:
            return
        pending = self._pending
        while pending and sn_le(self._cmdsn, self._maxcmdsn):
            link = self._pick()
            if link is None:
                return
            cmd = pending.popleft()
            if cmd.done:
                continue
            cmd.cid = link.cid
            cmd.itt = self._alloc_itt()
            cmd.cmdsn = self._cmdsn
            self._cmdsn = sn_add(self._cmdsn, 1)
            self._tasks[cmd.itt] = cmd
            cmd.sent = True
            cmd.in_received = 0
            cmd.exp_datasn = 0
            try:
                self._send_command(cmd, link)
            except ConnectionLost:
                return  # on_lost will requeue it

    def _send_command(self, cmd: Command, link: Link) -> None:
        n = self.negotiated
        flags = TASK_ATTR_SIMPLE
        immediate: Buffer = b""
        unsolicited_end = 0
        data_out = cmd.data_out
        if data_out is not None and len(data_out):
            flags |= CMD_WRITE
            total = len(data_out)
            first_burst = min(n.first_burst_length, total)
            if n.immediate_data:
                immediate = data_out[: min(first_burst, n.max_xmit_data_segment_length)]
            unsolicited_end = len(immediate) if n.initial_r2t else first_burst
        if cmd.read_length:
            flags |= CMD_READ
        if unsolicited_end <= len(immediate):
            flags |= FLAG_FINAL
        lun_field = encode_lun(cmd.lun)
        pdu = ScsiCommand(
            flags,
            lun_field,
            cmd.itt,
            cmd.expected_length,
            cmd.cmdsn,
            link.expstatsn,
            cmd.cdb.ljust(16, b"\0"),
            data=immediate,
        )
        link.protocol.send(pdu)
        if unsolicited_end > len(immediate):
            assert data_out is not None
            self._send_data_out(
                cmd, lun_field, RESERVED_TAG, len(immediate), unsolicited_end - len(immediate), link
            )

    def _send_data_out(
        self, cmd: Command, lun_field: int, ttt: int, offset: int, length: int, link: Link
    ) -> None:
        """One Data-Out sequence: PDUs of at most MaxRecvDataSegmentLength, F on the last."""
        data = cmd.data_out
        assert data is not None
        seg = self.negotiated.max_xmit_data_segment_length
        end = offset + length
        datasn = 0
        conn = link.protocol
        while offset < end:
            n = min(seg, end - offset)
            conn.send(
                DataOut(
                    FLAG_FINAL if offset + n >= end else 0,
                    lun_field,
                    cmd.itt,
                    ttt,
                    link.expstatsn,
                    datasn,
                    offset,
                    data=data[offset : offset + n],
                )
            )
            offset += n
            datasn += 1

    # ----------------------------------------------------------------------------------------------
    # responses

    def _on_data_in(self, pdu: DataIn, frame: Frame, link: Link) -> None:
        self._update_sn(pdu.expcmdsn, pdu.maxcmdsn)
        cmd = self._tasks.get(pdu.itt)
        if cmd is None:
            return  # a task we aborted, or garbage: nothing to place it in
        erl1 = self.negotiated.error_recovery_level >= 1
        sn = pdu.datasn
        if not frame.data_digest_ok:
            if not erl1:
                raise ConnectionLost("data digest error in Data-In")  # ERL 0: recover by reinstatement
            # ERL 1 (RFC 7143 7.8, 11.16): the header is sound, so ask for this DataSN again; a status
            # it carried comes back with the retransmission. RunLength 0 ("this one and all after it"):
            # LIO 6.1 refuses a run that reaches its last DataSN sent (off by one), and a few duplicates
            # cost nothing (they land on the same bytes)
            self._ask_data(cmd, link, sn, 0)
            if sn == cmd.exp_datasn:
                cmd.exp_datasn = sn_add(sn, 1)
            return
        cmd.heard += 1
        if sn == cmd.exp_datasn:
            cmd.exp_datasn = (sn + 1) & 0xFFFFFFFF
        elif sn_lt(cmd.exp_datasn, sn):
            if erl1:  # a DataSN gap: Data SNACK for the run we did not get (BegRun, RunLength)
                self._ask_data(cmd, link, cmd.exp_datasn, (sn - cmd.exp_datasn) & 0xFFFFFFFF)
            cmd.exp_datasn = sn_add(sn, 1)
        if cmd.missing:
            cmd.missing.discard(sn)
        n = len(pdu.data)
        off = pdu.buffer_offset
        buf = cmd.read_buffer
        if n:
            if buf is None or off + n > len(buf):
                raise ProtocolError(f"Data-In beyond the expected transfer length (ITT 0x{pdu.itt:x})")
            if not frame.sunk:
                buf[off : off + n] = pdu.data
            cmd.in_received = max(cmd.in_received, off + n)
        if pdu.flags & DATAIN_ACK and erl1 and pdu.ttt != RESERVED_TAG and not cmd.missing:
            # the target asks for a DataACK (A bit, RFC 7143 11.7.2): acknowledge every DataSN up to
            # this one so it may free them (SNACK type 2, BegRun = next DataSN, RunLength 0)
            self.snacks += 1
            link.protocol.send(
                SnackRequest(
                    FLAG_FINAL | SnackType.DATA_ACK,
                    encode_lun(cmd.lun),
                    cmd.itt,
                    pdu.ttt,
                    link.expstatsn,
                    sn_add(sn, 1),
                    0,
                )
            )
        if pdu.has_status:
            self._status_seen(pdu.statsn, link)
            cmd.held_status = (pdu.status, _residual(pdu.flags, pdu.residual_count), b"")
        if cmd.held_status is not None and not cmd.missing:
            del self._tasks[pdu.itt]
            cmd.complete(*cmd.held_status)

    def _ask_status(self, link: Link, begrun: int, runlength: int) -> None:
        """Status SNACK (RFC 7143 11.16, type 1): resend the statuses StatSN begrun..+runlength-1."""
        self.snacks += 1
        link.protocol.send(
            SnackRequest(
                FLAG_FINAL | SnackType.STATUS,
                0,
                RESERVED_TAG,
                RESERVED_TAG,
                link.expstatsn,
                begrun,
                runlength,
            )
        )

    def _ask_data(self, cmd: Command, link: Link, begrun: int, runlength: int) -> None:
        """Data SNACK (RFC 7143 11.16, type 0): resend Data-In DataSN begrun..begrun+runlength-1."""
        if cmd.missing is None:
            cmd.missing = set()
        cmd.missing.update(sn_add(begrun, i) for i in range(min(max(runlength, 1), 1024)))
        if len(cmd.missing) > 4096:  # a target skipping DataSNs without end: not a recoverable stream
            raise ProtocolError(f"more than 4096 Data-In PDUs missing for ITT 0x{cmd.itt:x}")
        self.snacks += 1
        link.protocol.send(
            SnackRequest(
                FLAG_FINAL | SnackType.DATA_R2T,
                encode_lun(cmd.lun),
                cmd.itt,
                RESERVED_TAG,
                link.expstatsn,
                begrun,
                runlength,
            )
        )

    def _on_scsi_response(self, pdu: ScsiResponse, frame: Frame, link: Link) -> None:
        if not frame.data_digest_ok and self.negotiated.error_recovery_level >= 1:
            # ERL 1: the sense data is damaged, the header sound: ask this status again (RFC 7143 7.5)
            begrun, count = pdu.statsn, 1
            if sn_lt(link.high, pdu.statsn):  # also ask any gap before it, in the same SNACK
                begrun = sn_add(link.high, 1)
                count = min((pdu.statsn - link.high) & 0xFFFFFFFF, 1024)
                link.high = pdu.statsn
            link.missing.update(sn_add(begrun, i) for i in range(count))
            link.expstatsn = min(link.missing, key=lambda sn: (sn - link.expstatsn) & 0xFFFFFFFF)
            self._ask_status(link, begrun, count)
            return
        self._status_seen(pdu.statsn, link)
        self._update_sn(pdu.expcmdsn, pdu.maxcmdsn)
        cmd = self._tasks.get(pdu.itt)
        if cmd is None:
            return
        if not frame.data_digest_ok:
            raise ConnectionLost("data digest error in SCSI Response")
        if pdu.response != 0:
            del self._tasks[pdu.itt]
            cmd.fail(ServiceResponseError(f"target failure (iSCSI Response 0x{pdu.response:02x})"))
            return
        cmd.held_status = (pdu.status, _residual(pdu.flags, pdu.residual_count), pdu.sense())
        if cmd.missing:
            return  # Data-In asked again with a Data SNACK is still to come
        del self._tasks[pdu.itt]
        cmd.complete(*cmd.held_status)

    def _on_r2t(self, pdu: R2T, frame: Frame, link: Link) -> None:
        self._update_sn(pdu.expcmdsn, pdu.maxcmdsn)
        cmd = self._tasks.get(pdu.itt)
        if cmd is None:
            return
        cmd.heard += 1
        if sn_le(cmd.exp_datasn, pdu.r2tsn):
            cmd.exp_datasn = sn_add(pdu.r2tsn, 1)
        data = cmd.data_out
        off, length = pdu.buffer_offset, pdu.desired_data_transfer_length
        if data is None or length == 0 or off + length > len(data):
            raise ProtocolError(
                f"R2T for bytes {off}+{length} outside the command's data (ITT 0x{pdu.itt:x})"
            )
        if cmd.hold_data_out:
            cmd.held_r2ts.append(pdu)
            return
        self._send_data_out(cmd, encode_lun(cmd.lun), pdu.ttt, off, length, link)

    def release_data_out(self, cmd: Command) -> None:
        """Answer the R2Ts held back for ``cmd`` (fault injection for tests; see ``Command``)."""
        cmd.hold_data_out = False
        held, cmd.held_r2ts = cmd.held_r2ts, []
        for r2t in held:
            link = self._links.get(cmd.cid)
            if cmd.itt in self._tasks and link is not None:
                self._send_data_out(
                    cmd,
                    encode_lun(cmd.lun),
                    r2t.ttt,
                    r2t.buffer_offset,
                    r2t.desired_data_transfer_length,
                    link,
                )

    def _on_nop_in(self, pdu: NopIn, frame: Frame, link: Link) -> None:
        self._update_sn(pdu.expcmdsn, pdu.maxcmdsn)
        if pdu.itt != RESERVED_TAG:
            self._status_seen(pdu.statsn, link)
            fut = self._requests.pop(pdu.itt, None)
            if fut is not None and not fut.done():
                fut.set_result(bytes(pdu.data))
        if pdu.ttt != RESERVED_TAG:  # the target pings us: answer (RFC 7143 11.18)
            link.protocol.send(
                NopOut(
                    FLAG_FINAL, pdu.lun, RESERVED_TAG, pdu.ttt, self._cmdsn, link.expstatsn, immediate=True
                )
            )

    def _on_reply(self, pdu: TaskMgmtResponse | LogoutResponse, frame: Frame, link: Link) -> None:
        self._status_seen(pdu.statsn, link)
        self._update_sn(pdu.expcmdsn, pdu.maxcmdsn)
        fut = self._requests.pop(pdu.itt, None)
        if fut is not None and not fut.done():
            fut.set_result(pdu)

    def _on_text_response(self, pdu: TextResponse, frame: Frame, link: Link) -> None:
        self._status_seen(pdu.statsn, link)
        self._update_sn(pdu.expcmdsn, pdu.maxcmdsn)
        fut = self._requests.get(pdu.itt)
        if fut is None:
            return
        parts = self._text_parts.setdefault(pdu.itt, bytearray())
        parts += pdu.data
        if len(parts) > 1 << 20:
            raise ProtocolError("text response longer than 1 MiB")
        if pdu.cont or not pdu.final:
            # RFC 7143 11.10.4: ask for the rest with an empty Text Request echoing the TTT
            link.protocol.send(
                TextRequest(FLAG_FINAL, 0, pdu.itt, pdu.ttt, self._cmdsn, link.expstatsn, immediate=True)
            )
            return
        del self._requests[pdu.itt]
        data = bytes(self._text_parts.pop(pdu.itt))
        if not fut.done():
            fut.set_result(data)

    def _on_reject(self, pdu: Reject, frame: Frame, link: Link) -> None:
        self._status_seen(pdu.statsn, link)
        self._update_sn(pdu.expcmdsn, pdu.maxcmdsn)
        header = bytes(pdu.data)
        if len(header) < 48:
            return
        itt = int.from_bytes(header[16:20], "big")
        if (
            header[0] & 0x3F == 0x05
            and pdu.reason == RejectReason.DATA_DIGEST_ERROR
            and self.negotiated.error_recovery_level >= 1
        ):
            # ERL 1 (RFC 7143 7.8, 11.17.1): a Data-Out the target got corrupted; it asks for the data
            # again with a recovery R2T, which the task answers like any other R2T
            log.info("Data-Out of ITT 0x%x rejected (data digest): waiting for the recovery R2T", itt)
            return
        err = ProtocolError(
            f"target rejected our PDU (opcode 0x{header[0] & 0x3F:02x}, reason 0x{pdu.reason:02x})"
        )
        cmd = self._tasks.pop(itt, None)
        if cmd is not None:
            cmd.fail(err)
        fut = self._requests.pop(itt, None)
        if fut is not None and not fut.done():
            fut.set_exception(err)

    def _on_async(self, pdu: AsyncMessage, frame: Frame, link: Link) -> None:
        self._status_seen(pdu.statsn, link)
        self._update_sn(pdu.expcmdsn, pdu.maxcmdsn)
        event = pdu.async_event
        if event == AsyncEvent.LOGOUT_REQUEST:
            log.info("target requests logout: reconnecting")
            link.protocol.abort(ConnectionLost("target requested logout"))
        elif event in (AsyncEvent.CONNECTION_DROP, AsyncEvent.SESSION_DROP):
            log.info("target announces it drops the connection")

    # ----------------------------------------------------------------------------------------------
    # non-SCSI requests: NOP, task management, text, logout

    async def _request(self, pdu: PDU, timeout: float | None, link: Link | None = None) -> Any:
        if not isinstance(pdu, LogoutRequest):  # logout() itself marks the session CLOSING first
            self._check_usable()
        if self._state is not State.FULL_FEATURE and not isinstance(pdu, LogoutRequest):
            raise ConnectionLost("session is reconnecting")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._requests[pdu.itt] = fut  # type: ignore[attr-defined]
        try:
            link = link or self._primary()
            if hasattr(pdu, "expstatsn"):
                pdu.expstatsn = link.expstatsn
            link.protocol.send(pdu)
            if timeout is None:
                return await fut
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._requests.pop(pdu.itt, None)  # type: ignore[attr-defined]

    async def nop(self, data: bytes = b"", timeout: float | None = 10.0, cid: int | None = None) -> float:
        """Ping the target with a NOP-Out (on connection ``cid``, default the leading one); return the
        round trip time in seconds."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        pdu = NopOut(
            FLAG_FINAL, 0, self._alloc_itt(), RESERVED_TAG, self._cmdsn, self._expstatsn, immediate=True
        )
        pdu.data = data
        echoed = await self._request(pdu, timeout, self._links.get(cid) if cid is not None else None)
        if echoed != data:
            raise ProtocolError("NOP-In did not echo the ping data")
        return loop.time() - start

    async def _tmf(self, function: TmfFunction, lun: int = 0, ref: Command | None = None) -> int:
        pdu = TaskMgmtRequest(
            FLAG_FINAL | function,
            encode_lun(lun),
            self._alloc_itt(),
            ref.itt if ref is not None else RESERVED_TAG,
            self._cmdsn,
            self._expstatsn,
            ref.cmdsn if ref is not None else 0,
            0,
            immediate=True,
        )
        resp: TaskMgmtResponse = await self._request(pdu, self.config.nop_timeout + 20)
        return resp.response

    async def abort_task(self, cmd: Command) -> int:
        """ABORT TASK: the command fails with :class:`CommandAborted` unless it completed first."""
        if cmd.done:
            return TmfResponse.TASK_DOES_NOT_EXIST
        if not cmd.sent:
            with contextlib.suppress(ValueError):
                self._pending.remove(cmd)
            cmd.fail(CommandAborted("aborted before it was sent"))
            return TmfResponse.FUNCTION_COMPLETE
        response = await self._tmf(TmfFunction.ABORT_TASK, cmd.lun, cmd)
        if response not in (TmfResponse.FUNCTION_COMPLETE, TmfResponse.TASK_DOES_NOT_EXIST):
            raise TaskManagementError(f"ABORT TASK failed: {_tmf_name(response)}", response)
        if not cmd.done:
            self._tasks.pop(cmd.itt, None)
            cmd.fail(CommandAborted("aborted by ABORT TASK"))
        return response

    async def lun_reset(self, lun: int) -> None:
        """LOGICAL UNIT RESET: commands outstanding on ``lun`` fail with :class:`CommandAborted`."""
        await self._reset(TmfFunction.LOGICAL_UNIT_RESET, lun)

    async def target_reset(self, cold: bool = False) -> None:
        """TARGET WARM (or COLD) RESET: every outstanding command fails with :class:`CommandAborted`."""
        await self._reset(TmfFunction.TARGET_COLD_RESET if cold else TmfFunction.TARGET_WARM_RESET, None)

    async def _reset(self, function: TmfFunction, lun: int | None) -> None:
        response = await self._tmf(function, lun or 0)
        if response != TmfResponse.FUNCTION_COMPLETE:
            raise TaskManagementError(f"{function.name} failed: {_tmf_name(response)}", response)
        for itt, cmd in list(self._tasks.items()):
            if lun is None or cmd.lun == lun:
                del self._tasks[itt]
                cmd.fail(CommandAborted(f"aborted by {function.name}"))

    async def text(self, pairs: list[tuple[str, str]], timeout: float = 30.0) -> list[tuple[str, str]]:
        """A Text Request/Response exchange (e.g. SendTargets=All), continuations included."""
        pdu = TextRequest(
            FLAG_FINAL, 0, self._alloc_itt(), RESERVED_TAG, self._cmdsn, self._expstatsn, immediate=True
        )
        pdu.data = encode_text(pairs)
        raw = await self._request(pdu, timeout)
        try:
            return parse_text(raw)
        except TextError as exc:
            raise ProtocolError(f"malformed text response: {exc}") from exc

    async def logout(self, wait: float = 30.0) -> None:
        """Wait (up to ``wait`` s) for outstanding commands, log out (close the session), close TCP."""
        if self._state in (State.CLOSED, State.CLOSING):
            return
        if self._tasks or self._pending:
            waiting = [c.future for c in (*self._tasks.values(), *self._pending)]
            await asyncio.wait(waiting, timeout=wait)
        if self._state is State.RECOVERING and self._recovery is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._recovery), wait)
        state = self._state
        self._state = State.CLOSING
        self._stop_keepalive()
        try:
            if state is State.FULL_FEATURE:
                pdu = LogoutRequest(
                    FLAG_FINAL | LogoutReason.CLOSE_SESSION,
                    self._alloc_itt(),
                    0,
                    self._cmdsn,
                    self._expstatsn,
                    immediate=True,
                )
                with contextlib.suppress(IscsiError, TimeoutError):
                    await self._request(pdu, self.config.logout_timeout)
        finally:
            self._close(ConnectionLost("session logged out"))

    async def close(self) -> None:
        """Drop the connection without logging out; outstanding commands fail with ConnectionLost."""
        self._state = State.CLOSING
        self._stop_keepalive()
        self._close(ConnectionLost("session closed"))

    def _close(self, exc: BaseException) -> None:
        self._state = State.CLOSED
        if self._recovery is not None:
            self._recovery.cancel()
        for task in self._link_tasks:
            task.cancel()
        for link in (*self._links.values(), Link(0, self._conn, 0)):
            link.protocol.on_lost = None
            link.protocol.close()
        self._fail_all(exc)

    def _fail_all(self, exc: BaseException) -> None:
        for cmd in (*self._tasks.values(), *self._pending):
            cmd.fail(exc)
        self._tasks.clear()
        self._pending.clear()
        for fut in self._requests.values():
            if not fut.done():
                fut.set_exception(exc)
        self._requests.clear()
        self._text_parts.clear()

    # ----------------------------------------------------------------------------------------------
    # keep-alive and recovery

    def _stop_keepalive(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None

    async def _keepalive_loop(self) -> None:
        interval, timeout = self.config.nop_interval, self.config.nop_timeout
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval / 2)
            if self._state is not State.FULL_FEATURE:
                continue
            for link in list(self._links.values()):
                if loop.time() - link.protocol.last_receive < interval:
                    continue
                conn = link.protocol
                try:
                    await self.nop(timeout=timeout, cid=link.cid)
                except TimeoutError:
                    conn.abort(ConnectionLost(f"target did not answer a NOP-Out within {timeout}s"))
                except IscsiError:
                    pass

    def _on_link_lost(self, link: Link, exc: BaseException | None) -> None:
        """A connection failed: at ErrorRecoveryLevel 2 recover that connection alone (RFC 7143 7.1.1,
        6.3.4 connection reinstatement + TASK REASSIGN); below it the session is reinstated."""
        if self._state is not State.FULL_FEATURE or self._links.get(link.cid) is not link:
            return
        if self.negotiated.error_recovery_level >= 2 and not self.config.discovery:
            del self._links[link.cid]
            reason = exc if isinstance(exc, IscsiError) else ConnectionLost(f"connection lost: {exc}")
            log.warning("connection %d lost (%s); recovering it (ERL 2)", link.cid, reason)
            self._spawn(self._recover_connection(link.cid, reason))
            return
        for other in self._links.values():
            if other is not link:
                other.protocol.on_lost = None
                other.protocol.abort()
        self._on_lost(exc)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coro)
        self._link_tasks.add(task)
        task.add_done_callback(self._link_tasks.discard)

    async def _recover_connection(self, cid: int, reason: BaseException) -> None:
        """ERL 2 connection recovery (RFC 7143 7.1.1, 7.2.2, 6.3.4): wait DefaultTime2Wait; with a
        surviving connection (and ``connection_recovery="new_cid"``) send Logout reason 2 for ``cid`` on
        it and log in a new CID, else log ``cid`` in again (connection reinstatement); then
        :meth:`_reassign` its tasks. All within DefaultTime2Retain, else they fail with SessionFailed."""
        loop = asyncio.get_running_loop()
        n = self.negotiated
        deadline = loop.time() + max(n.default_time2retain, 1)
        await asyncio.sleep(n.default_time2wait)
        last: BaseException = reason
        delay = self.config.reconnect.initial_delay
        new_cid = cid
        survivor = next((x for x in self._links.values() if x.active), None)
        if self.config.connection_recovery == "new_cid" and survivor is not None:
            # RFC 7143 7.2.2: "remove the connection for recovery" on a surviving connection, then a
            # new CID takes the tasks over
            pdu = LogoutRequest(
                FLAG_FINAL | LogoutReason.REMOVE_CONNECTION_FOR_RECOVERY,
                self._alloc_itt(),
                cid,
                self._cmdsn,
                0,
                immediate=True,
            )
            try:
                resp: LogoutResponse = await self._request(pdu, self.config.logout_timeout + 10, survivor)
                if resp.response == 0:
                    new_cid = next(c for c in range(1, 65536) if c not in self._links and c != cid)
                else:
                    log.info("Logout (recovery) of CID %d answered %d: reinstating it", cid, resp.response)
            except (IscsiError, TimeoutError) as exc:
                log.info("Logout (recovery) of CID %d failed (%s): reinstating it", cid, exc)
        while loop.time() < deadline:
            if self._state not in (State.FULL_FEATURE,):
                return
            try:
                protocol, result = await self._login(self.config, self.tsih, cid=new_cid, cmdsn=self._cmdsn)
            except (IscsiError, OSError) as exc:
                last = exc
                log.info("connection %d reinstatement failed: %s", cid, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.reconnect.max_delay)
                continue
            if self._state is not State.FULL_FEATURE:
                protocol.close()
                return
            if result.tsih != self.tsih:
                protocol.close()
                last = ProtocolError(f"target answered TSIH {result.tsih} for session {self.tsih}")
                break
            link = self._attach(new_cid, protocol, result)
            self._update_sn(result.expcmdsn, result.maxcmdsn)
            self.connection_recoveries += 1
            await self._reassign(link, cid)
            self._pump()
            return
        failure = SessionFailed(f"connection {cid} could not be recovered: {last}")
        for itt, cmd in list(self._tasks.items()):
            if cmd.cid == cid:
                del self._tasks[itt]
                cmd.fail(failure)
        if not self._links:
            self._state = State.FAILED
            self._failure = failure
            self._fail_all(failure)

    async def _reassign(self, link: Link, old_cid: int) -> None:
        """TASK REASSIGN each task of the failed connection onto ``link`` (RFC 7143 11.5.1, 7.2.2), with
        ExpDataSN = the next DataSN (reads) or R2TSN (writes) we expect, so the target resends only
        what was lost.

        "Task still allegiant" (the target has not finished cleaning up the old connection) is retried
        until DefaultTime2Retain. The Response code alone is not trusted: Linux LIO (6.1) reports a
        successful TASK REASSIGN as "Function rejected" and an unknown task as "Function complete"
        (it passes iSCSI codes through its generic TMR table). So a task counts as reassigned when the
        target shows it — an R2T, Data-In or status for it on the new connection within
        ``REASSIGN_GRACE`` seconds; otherwise it is issued again as a new command (new ITT and CmdSN:
        its command or its status went down with the connection)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(self.negotiated.default_time2retain, 1)
        watch: list[tuple[Command, int]] = []
        for cmd in sorted(
            (c for c in self._tasks.values() if c.cid == old_cid),
            key=lambda c: (self._cmdsn - c.cmdsn) & 0xFFFFFFFF,
            reverse=True,
        ):
            cmd.cid = link.cid  # its R2Ts, Data-In and status now come on the new connection
            while not cmd.done:
                heard = cmd.heard
                pdu = TaskMgmtRequest(
                    FLAG_FINAL | TmfFunction.TASK_REASSIGN,
                    encode_lun(cmd.lun),
                    self._alloc_itt(),
                    cmd.itt,
                    self._cmdsn,
                    link.expstatsn,
                    cmd.cmdsn,
                    cmd.exp_datasn,
                    immediate=True,
                )
                try:
                    resp: TaskMgmtResponse = await self._request(pdu, self.config.nop_timeout + 20, link)
                except (IscsiError, TimeoutError) as exc:
                    log.info("TASK REASSIGN of ITT 0x%x failed: %s", cmd.itt, exc)
                    return  # the new connection failed too: its own recovery takes over
                log.info("TASK REASSIGN of ITT 0x%x: %s", cmd.itt, _tmf_name(resp.response))
                if resp.response == TmfResponse.TASK_STILL_ALLEGIANT and loop.time() < deadline:
                    await asyncio.sleep(0.2)
                    continue
                watch.append((cmd, heard))
                break
        grace_end = loop.time() + REASSIGN_GRACE
        while loop.time() < grace_end and any(
            not c.done and c.heard == h and self._tasks.get(c.itt) is c for c, h in watch
        ):
            await asyncio.sleep(0.05)
        reissue: list[Command] = []
        for cmd, heard in watch:
            if cmd.done or cmd.heard != heard or self._tasks.get(cmd.itt) is not cmd:
                continue
            log.info("ITT 0x%x not resumed after TASK REASSIGN: issuing it again", cmd.itt)
            del self._tasks[cmd.itt]
            cmd.sent = False
            cmd.attempts += 1
            reissue.append(cmd)
        self._pending.extendleft(reversed(reissue))

    # -- MC/S: connections added and removed while the session runs

    async def add_connection(self) -> int:
        """Log in one more connection to this session (same ISID and TSIH, a free CID; RFC 7143 6.3.4)
        and start placing commands on it. Returns its CID. Raises LoginError/ConnectionLost, or
        ValueError when MaxConnections is reached."""
        self._check_usable()
        if len(self._links) >= self.negotiated.max_connections:
            raise ValueError(f"the session already has MaxConnections={self.negotiated.max_connections}")
        cid = next(c for c in range(1, 65536) if c not in self._links)
        for attempt in range(10):
            try:
                protocol, result = await self._login(self.config, self.tsih, cid=cid, cmdsn=self._cmdsn)
                break
            except LoginError as exc:
                # 0x0206 Too many connections: a connection just logged out may still be counted while
                # the target finishes its cleanup (LIO does it in a kernel thread): retry a few times
                if (exc.status_class, exc.status_detail) != (2, 6) or attempt == 9:
                    raise
                await asyncio.sleep(0.2 * (attempt + 1))
        if self._state is not State.FULL_FEATURE or cid in self._links:
            protocol.close()
            raise ConnectionLost("session changed state while a connection was logging in")
        if result.tsih != self.tsih:
            protocol.close()
            raise ProtocolError(f"target answered TSIH {result.tsih} for session {self.tsih}")
        self._attach(cid, protocol, result)
        self._update_sn(result.expcmdsn, result.maxcmdsn)
        self._pump()
        return cid

    async def remove_connection(self, cid: int, via: int | None = None, wait: float = 30.0) -> None:
        """Stop placing commands on connection ``cid``, wait for its tasks, and log it out (Logout
        reason 1 "close the connection", RFC 7143 11.14.1) — sent on connection ``via`` if given (the
        RFC lets any connection of the session carry it), else on ``cid`` itself."""
        link = self._links.get(cid)
        if link is None:
            raise ValueError(f"no connection with CID {cid}")
        if len(self._links) == 1:
            raise ValueError("the last connection is removed with logout()")
        carrier = self._links.get(via if via is not None else cid)
        if carrier is None:
            raise ValueError(f"no connection with CID {via}")
        link.active = False
        waiting = [c.future for c in self._tasks.values() if c.cid == cid]
        if waiting:
            await asyncio.wait(waiting, timeout=wait)
        pdu = LogoutRequest(
            FLAG_FINAL | LogoutReason.CLOSE_CONNECTION, self._alloc_itt(), cid, self._cmdsn, 0, immediate=True
        )
        link.protocol.on_lost = None
        try:
            resp: LogoutResponse = await self._request(pdu, self.config.logout_timeout, carrier)
        finally:
            self._links.pop(cid, None)
            link.protocol.close()
        if resp.response != 0:
            raise ProtocolError(f"Logout of CID {cid} answered with response {resp.response}")

    def _on_lost(self, exc: BaseException | None) -> None:
        if self._state is not State.FULL_FEATURE:
            return
        reason = (
            exc
            if isinstance(exc, IscsiError)
            else ConnectionLost(f"connection lost: {exc or 'closed by target'}")
        )
        for fut in self._requests.values():
            if not fut.done():
                fut.set_exception(ConnectionLost(str(reason)))
        self._requests.clear()
        self._text_parts.clear()
        if self.config.reconnect.max_attempts <= 0 or self.config.discovery:
            self._state = State.FAILED
            self._failure = reason
            self._fail_all(reason)
            return
        self._state = State.RECOVERING
        # re-issue every command that had not completed, in CmdSN order, ahead of those never sent
        # oldest first: the farthest behind the next CmdSN to assign (serial arithmetic, RFC 1982)
        inflight = sorted(
            self._tasks.values(), key=lambda c: (self._cmdsn - c.cmdsn) & 0xFFFFFFFF, reverse=True
        )
        self._tasks.clear()
        requeue: list[Command] = []
        for cmd in inflight:
            cmd.attempts += 1
            cmd.sent = False
            if cmd.attempts > self.config.reconnect.max_reissue:
                cmd.fail(
                    SessionFailed(f"command re-issued {cmd.attempts - 1} times without completing: {reason}")
                )
            else:
                requeue.append(cmd)
        self._pending.extendleft(reversed(requeue))
        log.warning("connection lost (%s); reconnecting", reason)
        self._recovery = asyncio.get_running_loop().create_task(self._recover(reason))

    async def _recover(self, reason: BaseException) -> None:
        policy = self.config.reconnect
        last: BaseException = reason
        for attempt, delay in enumerate(policy.delays(), 1):
            await asyncio.sleep(delay)
            if self._state is not State.RECOVERING:
                return
            try:
                # TSIH 0 with the same ISID: session reinstatement (RFC 7143 6.3.5)
                protocol, result = await self._login(self.config, 0)
            except LoginError as exc:
                last = exc
                if not exc.retryable:
                    break
                continue
            except (IscsiError, OSError) as exc:
                last = exc
                log.info("reconnect attempt %d failed: %s", attempt, exc)
                continue
            if self._state is not State.RECOVERING:
                protocol.close()
                return
            self.reconnects += 1
            self._install(protocol, result)
            self._state = State.FULL_FEATURE
            self._pump()
            if self.config.connections > 1:
                self._spawn(self.open_connections(self.config.connections))
            return
        self._state = State.FAILED
        self._failure = SessionFailed(f"could not reconnect after {policy.max_attempts} attempts: {last}")
        self._fail_all(self._failure)

    async def open_connections(self, count: int) -> None:
        """Add connections until the session has ``count`` (MC/S); errors are raised."""
        while len(self._links) < count and self._state is State.FULL_FEATURE:
            await self.add_connection()

    def kill_connection(self, cid: int | None = None) -> None:
        """Drop a TCP connection abruptly (RST), as a network failure would (tests, fault drills)."""
        if cid is None:
            self._conn.abort()
        else:
            self._links[cid].protocol.abort()


def _residual(flags: int, count: int) -> int:
    if flags & RSP_UNDERFLOW:
        return count
    if flags & RSP_OVERFLOW:
        return -count
    return 0


def _tmf_name(response: int) -> str:
    try:
        return TmfResponse(response).name
    except ValueError:
        return f"response {response}"
