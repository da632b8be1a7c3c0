"""The target's session state machine, sans-I/O: what RFC 7143 makes session-wide, in one object.

A :class:`TargetSession` owns the CmdSN window (ExpCmdSN/MaxCmdSN, commands held until a gap fills,
RFC 7143 4.2.2.1 and 3.2.2.1), the task table keyed by ITT (an ITT is unique in the session, 11.2.1.8), the
Target Transfer Tag space, the connection set (CID -> :class:`~cistern.wire.target_connection.TargetConnection`),
the negotiated session keys, the write-buffer accounting, and the DefaultTime2Retain timer that keeps a
session without connections alive for the initiator to return (6.3.5, 7.1.4).

No sockets, no asyncio, no clock: times are the caller's ``now`` (seconds, any monotonic base). The
connection machines append what the I/O layer must act on to :attr:`TargetSession.events`, in order:

* a :class:`~cistern.wire.tasks.TargetTask`: a command ready to execute (its ``conn`` is the connection
  it is allegiant to); the I/O layer runs it and calls ``task.conn.complete(task, result)``;
* :class:`TaskManagement`: perform a TMF, then ``conn.tmf_response(pdu, response)``;
* :class:`TextRequest`: answer the key=value pairs, then ``conn.text_answer(pdu, text)``;
* :class:`Logout`: the Logout Response is queued; close what :attr:`Logout.response` says;
* :class:`OutboxReady`: another connection of the session has PDUs to send (a held command delivered).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cistern.wire import pdu as P
from cistern.wire.buffers import MIN_POOLED, WRITE_BUFFERS
from cistern.wire.constants import RESERVED_TAG, LogoutReason, LogoutResponse
from cistern.wire.errors import LocalProtocolError
from cistern.wire.serial import sn_add, sn_in_window, sn_lt
from cistern.wire.tasks import TargetTask, TaskState

if TYPE_CHECKING:
    from collections.abc import Callable

    from cistern.wire.params import Negotiated
    from cistern.wire.target_connection import TargetConnection

__all__ = [
    "Event",
    "Logout",
    "OutboxReady",
    "TargetSession",
    "TaskManagement",
    "TextRequest",
    "WriteBudget",
]


class WriteBudget:
    """The target-wide data-buffer budget, bytes: one per target server (``TargetServer.write_budget``),
    shared by all its sessions; beyond ``limit`` commands are answered TASK SET FULL (SAM-5 5.3.1).  A
    write's buffer is charged from its command until it ends, a large read's data until the connection has
    taken it.  ``limit`` None: unbounded (a session built without a server, in tests)."""

    __slots__ = ("buffered", "limit")

    def __init__(self, limit: int | None = None) -> None:
        self.buffered = 0  # bytes charged now
        self.limit = limit

    def reserve_write_buffer(self, size: int) -> bool:
        """Charge ``size`` bytes; False (nothing charged) when that would pass the limit."""
        limit = self.limit
        if limit is not None and self.buffered + size > limit:
            return False
        self.buffered += size
        return True

    def release_write_buffer(self, size: int) -> None:
        """Give back ``size`` bytes charged by :meth:`reserve_write_buffer`."""
        self.buffered -= size


# The events are plain classes, not dataclasses: under mypyc a dataclass puts the types of its fields into
# ``__annotations__`` at import, and ``TargetConnection``'s type object does not exist yet then
# (:mod:`cistern.wire.target_connection` imports this module first).


class TaskManagement:
    """A Task Management Function Request delivered in CmdSN order (RFC 7143 11.5): perform it."""

    __slots__ = ("conn", "pdu")

    def __init__(self, conn: TargetConnection, pdu: P.TaskMgmtRequest) -> None:
        self.conn = conn
        self.pdu = pdu


class TextRequest:
    """A complete Text Request in full feature phase (RFC 7143 11.10): answer ``pairs``."""

    __slots__ = ("conn", "pairs", "pdu")

    def __init__(self, conn: TargetConnection, pdu: P.TextRequest, pairs: list[tuple[str, str]]) -> None:
        self.conn = conn
        self.pdu = pdu
        self.pairs = pairs


class Logout:
    """A Logout Request was answered (RFC 7143 11.14): on SUCCESS, close the session (reason 0), the
    connection ``cid`` (reason 1, maybe another connection than ``conn``) or the last connection."""

    __slots__ = ("cid", "conn", "reason", "response")

    def __init__(self, conn: TargetConnection, reason: int, cid: int, response: LogoutResponse) -> None:
        self.conn = conn
        self.reason = reason
        self.cid = cid
        self.response = response


class OutboxReady:
    """``conn`` (not the one that received) queued PDUs: a held command was delivered on it."""

    __slots__ = ("conn",)

    def __init__(self, conn: TargetConnection) -> None:
        self.conn = conn


Event = TargetTask | TaskManagement | TextRequest | Logout | OutboxReady

#: a numbered request waiting for the CmdSN gap before it: (deliver function, connection, PDU, BHS)
Held = tuple["Callable[[TargetConnection, P.PDU, bytes], None]", "TargetConnection", P.PDU, bytes]


class TargetSession:
    """Session-wide state of one target session.  ``expcmdsn``: the CmdSN of the leading login;
    ``queue_depth``: commands the window admits (MaxCmdSN = ExpCmdSN + free slots - 1);
    ``max_write_buffer`` / ``max_session_write_buffer``: bytes one write / all writes of the session may
    buffer (None: unbounded); ``budget``: the target-wide write-buffer budget."""

    __slots__ = (
        "_maxcmdsn",
        "_ttt",
        "budget",
        "connections",
        "discovery",
        "ended",
        "events",
        "expcmdsn",
        "held",
        "max_session_write_buffer",
        "max_write_buffer",
        "orphans",
        "outstanding",
        "params",
        "queue_depth",
        "retain_deadline",
        "tasks",
        "write_buffered",
    )

    def __init__(
        self,
        params: Negotiated,
        expcmdsn: int,
        *,
        queue_depth: int = 128,
        discovery: bool = False,
        max_write_buffer: int | None = None,
        max_session_write_buffer: int | None = None,
        budget: WriteBudget | None = None,
    ) -> None:
        if queue_depth < 1:
            raise LocalProtocolError("queue_depth must be >= 1")
        self.params = params
        self.expcmdsn = expcmdsn & 0xFFFFFFFF
        self.queue_depth = queue_depth
        self._maxcmdsn = sn_add(self.expcmdsn, queue_depth - 1)
        self.discovery = discovery
        self.max_write_buffer = max_write_buffer
        self.max_session_write_buffer = max_session_write_buffer
        self.budget = budget if budget is not None else WriteBudget()
        self.outstanding = 0  # non-immediate commands delivered and not yet completed
        self.write_buffered = 0  # bytes of write buffers of this session's commands not yet completed
        self.held: dict[int, Held] = {}  # CmdSN -> a request received ahead of ExpCmdSN
        self.tasks: dict[int, TargetTask] = {}  # ITT -> task, all connections
        self.connections: dict[int, TargetConnection] = {}  # CID -> connection in full feature phase
        self.events: list[Event] = []
        #: ERL 2: ITT -> deadline of the tasks of failed connections waiting for TASK REASSIGN (RFC 7143 6.2)
        self.orphans: dict[int, float] = {}
        self._ttt = 0x100
        self.retain_deadline: float | None = None
        self.ended = False

    # ---- the CmdSN window (RFC 7143 4.2.2.1)

    @property
    def maxcmdsn(self) -> int:
        """ExpCmdSN + free slots - 1, never decreasing (initiators ignore a MaxCmdSN that goes back)."""
        free = self.queue_depth - self.outstanding - len(self.held)
        candidate = (self.expcmdsn + free - 1) & 0xFFFFFFFF if free > 1 else self.expcmdsn
        current = self._maxcmdsn
        # sn_lt(current, candidate), inlined: this runs for every status the target sends
        if candidate != current and ((candidate - current) & 0xFFFFFFFF) < 0x80000000:
            self._maxcmdsn = current = candidate
        return current

    def in_window(self, cmdsn: int) -> bool:
        """Inside [ExpCmdSN, MaxCmdSN] and not already held: a command that may be held."""
        return sn_in_window(cmdsn, self.expcmdsn, self._maxcmdsn) and cmdsn not in self.held

    def take_next(self, cmdsn: int) -> bool:
        """The common case of the CmdSN window (RFC 7143 3.2.2.1): ``cmdsn`` is ExpCmdSN and nothing is held.
        Then ExpCmdSN moves past it and True (deliver it now); otherwise nothing changes and False."""
        if cmdsn != self.expcmdsn or self.held:
            return False
        self.expcmdsn = (cmdsn + 1) & 0xFFFFFFFF
        return True

    def advance(self) -> list[Held]:
        """ExpCmdSN moves past a delivered command; returns held requests that are now in order."""
        self.expcmdsn = sn_add(self.expcmdsn, 1)
        ready: list[Held] = []
        while self.expcmdsn in self.held:
            ready.append(self.held.pop(self.expcmdsn))
            self.expcmdsn = sn_add(self.expcmdsn, 1)
        return ready

    def abort_held(self, refcmdsn: int, cmdsn: int) -> bool:
        """ABORT TASK for a command not delivered yet (RFC 7143 11.5.1): if RefCmdSN names a held request
        before the TMF's CmdSN, forget it (it counts as received and aborted); True if one was."""
        if (
            sn_in_window(refcmdsn, self.expcmdsn, self._maxcmdsn)
            and sn_lt(refcmdsn, cmdsn)
            and refcmdsn != self.expcmdsn
            and refcmdsn in self.held
        ):
            del self.held[refcmdsn]
            return True
        return False

    # ---- tags

    def new_ttt(self) -> int:
        """A Target Transfer Tag (R2T, NOP-In ping, DataACK, Text continuation), never 0xffffffff."""
        ttt = (self._ttt + 1) & 0xFFFFFFFF
        if ttt == RESERVED_TAG:
            ttt = 0x100
        self._ttt = ttt
        return ttt

    # ---- tasks

    def tasks_of(self, conn: TargetConnection) -> dict[int, TargetTask]:
        """The tasks allegiant to ``conn`` (RFC 7143 5.1), by ITT."""
        return {itt: t for itt, t in self.tasks.items() if t.conn is conn}

    def finish(self, task: TargetTask) -> None:
        """``task`` is over: its write buffer goes back to both budgets and it leaves the task table."""
        task.state = TaskState.DONE
        reserved = task.reserved
        if reserved:
            task.reserved = 0
            self.write_buffered -= reserved
            self.budget.release_write_buffer(reserved)
        buf = task.buf
        if buf is not None:
            # the device server is done with it (or never got it): large ones are reused
            task.buf = None
            scsi = task.scsi
            if scsi is not None:
                scsi.data_out = None
            if len(buf) >= MIN_POOLED:  # only large ones are pooled (the pool's rule, checked here to save
                WRITE_BUFFERS.give(buf)  # an interpreted call per small write)
        if self.tasks.get(task.itt) is task:
            del self.tasks[task.itt]
            if not task.immediate:
                self.outstanding -= 1

    def abort_tasks(self, tasks: list[TargetTask]) -> list[TargetTask]:
        """Abort ``tasks`` (ABORT TASK, ABORT TASK SET, LU/target reset, RFC 7143 11.5.1): those still
        collecting data end now (their late Data-Out is discarded); returns those the device server is
        executing, which end when it returns (their response suppressed)."""
        executing = []
        for task in tasks:
            task.abort()
            if task.state is TaskState.COLLECTING:
                if task.conn is not None:
                    task.conn.ended_early.append(task.itt)
                self.finish(task)
            elif task.result is not None:  # ERL 2: finished while orphaned, its result waiting for a reassign
                task.result = None
                self.finish(task)
            elif task.state is TaskState.EXECUTING:
                executing.append(task)
        return executing

    # ---- connections and DefaultTime2Retain (RFC 7143 6.3.5, 7.1.4)

    def attach(self, conn: TargetConnection) -> TargetConnection | None:
        """``conn`` entered full feature phase; returns the connection it reinstates (same CID, RFC 7143
        6.3.4), which the I/O layer must drop, or None."""
        old = self.connections.get(conn.cid)
        self.connections[conn.cid] = conn
        self.retain_deadline = None
        return old if old is not conn else None

    def detach(self, conn: TargetConnection, now: float) -> bool:
        """``conn`` is gone.  True when the session must end now (no connection left and no
        DefaultTime2Retain to wait, or a discovery session); with Time2Retain > 0 :meth:`next_timer` says
        when it ends unless a login continues it."""
        if self.connections.get(conn.cid) is conn:
            del self.connections[conn.cid]
        if self.connections or self.ended:
            return False
        retain = self.params.default_time2retain
        if retain == 0 or self.discovery:
            return True
        self.retain_deadline = now + retain
        return False

    def orphan(self, task: TargetTask, now: float) -> None:
        """ERL 2 (RFC 7143 7.2.3, 6.2): ``task``'s connection failed; it waits for a TASK REASSIGN on
        another connection for DefaultTime2Wait + DefaultTime2Retain seconds, then it is cleaned up."""
        params = self.params
        self.orphans[task.itt] = now + params.default_time2wait + params.default_time2retain

    def adopt(self, itt: int) -> TargetTask | None:
        """The orphaned task ``itt`` for a TASK REASSIGN, or None (no such task, or not orphaned)."""
        if self.orphans.pop(itt, None) is None:
            return None
        return self.tasks.get(itt)

    def next_timer(self) -> float | None:
        """When :meth:`handle_timer` must run (DefaultTime2Retain of a session without connections, or of
        the tasks of a failed connection at ERL 2), or None."""
        deadline = self.retain_deadline
        if self.orphans:
            first = min(self.orphans.values())
            deadline = first if deadline is None else min(deadline, first)
        return deadline

    def handle_timer(self, now: float) -> bool:
        """Clean up orphaned tasks whose time ran out (aborted; those the device server still runs end
        when it returns); True when DefaultTime2Retain ran out with no connection: the session ends."""
        if self.orphans:
            for itt, due in list(self.orphans.items()):
                if now >= due:
                    del self.orphans[itt]
                    task = self.tasks.get(itt)
                    if task is not None:
                        task.abort()
                        if task.state is not TaskState.EXECUTING or task.result is not None:
                            task.result = None
                            self.finish(task)
        deadline = self.retain_deadline
        if deadline is None or now < deadline or self.connections or self.ended:
            return False
        self.retain_deadline = None
        return True

    def logout_response(self, conn: TargetConnection, reason: int, cid: int) -> LogoutResponse | None:
        """The answer to a Logout Request (RFC 7143 11.14.1, 11.15.1), None for an unknown reason code.
        Reason 2 (remove the connection for recovery) only at ErrorRecoveryLevel 2, for a live CID or one
        whose tasks wait for TASK REASSIGN."""
        if reason == LogoutReason.CLOSE_CONNECTION and cid != conn.cid and cid not in self.connections:
            return LogoutResponse.CID_NOT_FOUND
        if reason == LogoutReason.REMOVE_CONNECTION_FOR_RECOVERY:
            if self.params.error_recovery_level < 2:
                return LogoutResponse.RECOVERY_NOT_SUPPORTED
            orphaned = any(
                (t := self.tasks.get(itt)) is not None and t.conn is not None and t.conn.cid == cid
                for itt in self.orphans
            )
            if cid not in self.connections and not orphaned:
                return LogoutResponse.CID_NOT_FOUND
            return LogoutResponse.SUCCESS
        if reason not in (LogoutReason.CLOSE_SESSION, LogoutReason.CLOSE_CONNECTION):
            return None
        return LogoutResponse.SUCCESS
