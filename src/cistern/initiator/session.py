"""The initiator's full feature phase, asyncio side: moves bytes, runs timers, resolves the caller's futures
(RFC 7143 sections 3.2.2 CmdSN, 4.2.2 MC/S, 6.3.4-6.3.5 reinstatement, 7 error recovery, 10/11 PDUs).

The protocol itself — the CmdSN window, ITTs, the task table, connection selection, Data-Out on R2T,
Data-In reassembly, SNACKs, keep-alive and the ERL 2 time windows — is the sans-I/O
:class:`cistern.wire.initiator_session.InitiatorSession` (``session.core``). A :class:`Session` feeds it
every frame, writes what it queues, arms one timer at its ``next_timer()`` and turns its events into
results or exceptions of the caller's futures.

What stays here is what needs I/O: logging connections in (MC/S additions, ERL 2 replacement of a failed
connection with Logout reason 2 or the same CID, session reinstatement with back-off) and waiting for
answers (TMF, Text, Logout, TASK REASSIGN). A command either completes or fails with a clear error
(:class:`SessionFailed`, :class:`ConnectionLost`), never silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, cast

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
from cistern.initiator.task import Command, ScsiResult, raise_for_status
from cistern.wire.constants import LogoutReason, TmfFunction, TmfResponse
from cistern.wire.errors import RemoteProtocolError
from cistern.wire.framing import Frame
from cistern.wire.initiator_session import (
    Event,
    Failure,
    InitiatorSession,
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
from cistern.wire.negotiation import Negotiated
from cistern.wire.pdu import Buffer, LogoutResponse, TaskMgmtResponse
from cistern.wire.text import TextError, encode_text, parse_text

log = logging.getLogger(__name__)

LoginFn = Callable[..., Awaitable[tuple[IscsiProtocol, LoginResult]]]
"""Opens a TCP connection and logs in: (config, tsih, cid=0, cmdsn=0) -> (protocol, result)."""


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
        self._loop = asyncio.get_running_loop()
        #: the machine's clock (seconds): every ``now`` handed to self.core comes from it
        self._clock = time.monotonic
        self.core = InitiatorSession(
            result.negotiated,
            tsih=result.tsih,
            expcmdsn=result.expcmdsn,
            maxcmdsn=result.maxcmdsn,
            load_balance=config.load_balance,
            nop_interval=max(config.nop_interval, 0.0),
            nop_timeout=config.nop_timeout if config.nop_timeout > 0 else 10.0,
            discovery=config.discovery,
        )
        self._protocols: dict[int, IscsiProtocol] = {}
        self._futures: dict[int, asyncio.Future[RequestAnswered]] = {}  # NOP / TMF / Text / Logout
        self._state = State.FULL_FEATURE
        self._failure: BaseException | None = None
        self._recovery: asyncio.Task[None] | None = None
        self._recovery_errors: dict[int, BaseException] = {}  # ERL 2: last error per CID recovered
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self.reconnects = 0
        self.connection_recoveries = 0
        self._link_tasks: set[asyncio.Task[Any]] = set()
        self._leading: IscsiProtocol = protocol
        self._install(protocol, result)

    # ----------------------------------------------------------------------------------------------
    # connections, frames, the outbox and the timer

    def _install(self, protocol: IscsiProtocol, result: LoginResult) -> None:
        """The leading connection of a new (or reinstated) session: CID 0, the session's numbering."""
        self.core.install(
            result.negotiated, tsih=result.tsih, expcmdsn=result.expcmdsn, maxcmdsn=result.maxcmdsn
        )
        self.target_alias = result.target_alias
        self._protocols = {}
        self._leading = protocol
        self._attach(0, protocol, result)

    def _attach(self, cid: int, protocol: IscsiProtocol, result: LoginResult) -> None:
        """Put a logged-in connection into full feature phase as connection ``cid`` of the session."""
        self._protocols[cid] = protocol
        n = result.negotiated
        protocol.enter_full_feature(
            header_digest=n.header_digest,
            data_digest=n.data_digest,
            max_recv_data_segment_length=n.max_recv_data_segment_length,
            on_frame=lambda frame: self._on_frame(frame, cid),
            on_lost=lambda exc: self._on_link_lost(cid, protocol, exc),
            sink=self.core.sink,
        )
        self.core.add_connection(
            cid, result.expstatsn, n, self._clock(), expcmdsn=result.expcmdsn, maxcmdsn=result.maxcmdsn
        )
        self.core.pump()
        self._flush()
        self._arm()

    @property
    def negotiated(self) -> Negotiated:
        return self.core.negotiated

    @property
    def tsih(self) -> int:
        return self.core.tsih

    @property
    def snacks(self) -> int:
        """SNACK Requests sent (ERL 1 recoveries: Data, R2T, Status, DataACK)."""
        return self.core.total_snacks

    @property
    def connection_ids(self) -> list[int]:
        """The CIDs of the session's connections in full feature phase."""
        return sorted(self.core.connections)

    def queue_depth(self, cid: int) -> int:
        """Commands in flight on connection ``cid``."""
        return self.core.queue_depth(cid)

    @property
    def state(self) -> State:
        return self._state

    @property
    def in_flight(self) -> int:
        return len(self.core.tasks)

    @property
    def window(self) -> int:
        """How many more commands the target accepts now (MaxCmdSN - CmdSN + 1)."""
        return self.core.window

    def _on_frame(self, frame: Frame, cid: int) -> None:
        try:
            events = self.core.receive(cid, frame, self._clock())
        except RemoteProtocolError as exc:
            raise ProtocolError(str(exc)) from None  # the protocol drops the connection with it
        if events:
            if len(events) == 1 and type(events[0]) is TaskCompleted:  # the common case, inline
                ev = events[0]
                ev.task.complete(ev.status, ev.residual, ev.sense)  # type: ignore[attr-defined]
            else:
                self._dispatch(events)
        if self.core.ready:
            self._flush()

    def _flush(self) -> None:
        """Write every PDU the core queued, on its connection."""
        ready = self.core.ready
        if not ready:
            return
        protocols = self._protocols
        for conn in ready:
            pdus = conn.outbox  # conn.pdus_to_send(), inlined: the hot path
            conn.outbox = []
            protocol = protocols.get(conn.cid)
            if protocol is None:
                continue
            try:
                for pdu in pdus:
                    protocol.send(pdu)
            except ConnectionLost:
                continue  # on_lost recovers its tasks
        ready.clear()

    def _arm(self) -> None:
        """One timer at the core's next deadline (an earlier one replaces it; a late one re-arms)."""
        due = self.core.next_timer()
        if due is None or self._state in (State.CLOSED, State.CLOSING):
            return
        if self._timer is not None:
            if self._timer_at <= due:
                return
            self._timer.cancel()
        self._timer_at = due
        self._timer = self._loop.call_later(max(due - self._clock(), 0.0), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._state in (State.CLOSED, State.CLOSING):
            return
        events = self.core.handle_timer(self._clock())
        if events:
            self._dispatch(events)
        self._flush()
        self._arm()

    def _dispatch(self, events: list[Event]) -> None:
        for ev in events:
            kind = type(ev)
            if kind is TaskCompleted:
                ev = cast(TaskCompleted, ev)
                cast(Command, ev.task).complete(ev.status, ev.residual, ev.sense)
            elif kind is TaskFailed:
                ev = cast(TaskFailed, ev)
                cast(Command, ev.task).fail(self._task_error(ev))
            elif kind is RequestAnswered:
                ev = cast(RequestAnswered, ev)
                fut = self._futures.pop(ev.itt, None)
                if fut is not None and not fut.done():
                    fut.set_result(ev)
            elif kind is RequestFailed:
                ev = cast(RequestFailed, ev)
                fut = self._futures.pop(ev.itt, None)
                if fut is not None and not fut.done():
                    fut.set_exception(ProtocolError(ev.detail))
            elif kind is LogoutRequested:
                log.info("target requests logout: reconnecting")
                self._abort(cast(LogoutRequested, ev).cid, ConnectionLost("target requested logout"))
            elif kind is PingTimedOut:
                timeout = self.config.nop_timeout
                self._abort(
                    cast(PingTimedOut, ev).cid,
                    ConnectionLost(f"target did not answer a NOP-Out within {timeout}s"),
                )
            elif kind is ReconnectDue:
                self._spawn(self._recover_connection(cast(ReconnectDue, ev).cid))
            elif kind is RetainExpired:
                self._retain_expired(cast(RetainExpired, ev).cid)

    def _task_error(self, ev: TaskFailed) -> BaseException:
        if ev.failure is Failure.SERVICE_RESPONSE:
            return ServiceResponseError(f"target failure ({ev.detail})")
        if ev.failure is Failure.NOT_RECOVERED:
            last = self._recovery_errors.get(ev.task.cid, ev.detail)
            return SessionFailed(f"connection {ev.task.cid} could not be recovered: {last}")
        return ProtocolError(ev.detail)

    def _abort(self, cid: int, exc: BaseException) -> None:
        protocol = self._protocols.get(cid)
        if protocol is not None:
            protocol.abort(exc)

    # ----------------------------------------------------------------------------------------------
    # commands

    def _check_usable(self) -> None:
        if self._state in (State.CLOSED, State.CLOSING):
            raise ConnectionLost("session is closed")
        if self._state is State.FAILED:
            raise SessionFailed(f"session failed: {self._failure}")

    def submit(self, lun: int, cdb: bytes, data_out: Buffer | None = None, read_length: int = 0) -> Command:
        """Queue one SCSI command and return its handle; ``await`` the handle for the result."""
        self._check_usable()
        cmd = Command(lun, cdb, data_out, read_length)
        core = self.core
        core.pending.append(cmd)  # core.submit(cmd), inlined: the hot path
        core.pump()
        self._flush()
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
            self.core.forget(cmd)
            cmd.fail(CommandTimeout(f"command {cmd.cdb[:1].hex()} timed out after {timeout}s"))
            raise CommandTimeout(f"command 0x{cmd.cdb[0]:02x} timed out after {timeout}s") from None

    def release_data_out(self, cmd: Command) -> None:
        """Answer the R2Ts held back for ``cmd`` (fault injection for tests; see ``hold_data_out``)."""
        self.core.release_data_out(cmd)
        self._flush()

    # ----------------------------------------------------------------------------------------------
    # non-SCSI requests: NOP, task management, text, logout

    def _issue(self, make: Callable[[], int]) -> int:
        """Build a request in the core (it picks ITT and connection) or fail like a lost connection."""
        try:
            return make()
        except KeyError:
            raise ConnectionLost("session has no such connection") from None

    async def _answer(self, itt: int, timeout: float | None) -> RequestAnswered:
        """Write the queued request ``itt`` and wait for its answer."""
        fut: asyncio.Future[RequestAnswered] = self._loop.create_future()
        self._futures[itt] = fut
        try:
            self._flush()
            if timeout is None:
                return await fut
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._futures.pop(itt, None)
            self.core.cancel_request(itt)

    def _check_requests(self) -> None:
        self._check_usable()
        if self._state is not State.FULL_FEATURE:
            raise ConnectionLost("session is reconnecting")

    async def nop(self, data: bytes = b"", timeout: float | None = 10.0, cid: int | None = None) -> float:
        """Ping the target with a NOP-Out (on connection ``cid``, default the leading one); return the
        round trip time in seconds."""
        self._check_requests()
        start = self._clock()
        itt = self._issue(lambda: self.core.nop_out(data, cid))
        answer = await self._answer(itt, timeout)
        if answer.data != data:
            raise ProtocolError("NOP-In did not echo the ping data")
        return self._clock() - start

    async def _tmf(self, function: TmfFunction, lun: int = 0, ref: Command | None = None) -> int:
        self._check_requests()
        itt = self._issue(lambda: self.core.tmf(function, lun, ref))
        answer = await self._answer(itt, self.config.nop_timeout + 20)
        return cast(TaskMgmtResponse, answer.pdu).response

    async def abort_task(self, cmd: Command) -> int:
        """ABORT TASK: the command fails with :class:`CommandAborted` unless it completed first."""
        if cmd.done:
            return TmfResponse.TASK_DOES_NOT_EXIST
        if not cmd.sent:
            self.core.forget(cmd)
            cmd.fail(CommandAborted("aborted before it was sent"))
            return TmfResponse.FUNCTION_COMPLETE
        response = await self._tmf(TmfFunction.ABORT_TASK, cmd.lun, cmd)
        if response not in (TmfResponse.FUNCTION_COMPLETE, TmfResponse.TASK_DOES_NOT_EXIST):
            raise TaskManagementError(f"ABORT TASK failed: {_tmf_name(response)}", response)
        if not cmd.done:
            self.core.forget(cmd)
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
        for task in list(self.core.tasks.values()):
            if lun is None or task.lun == lun:
                self.core.forget(task)
                cast(Command, task).fail(CommandAborted(f"aborted by {function.name}"))

    async def text(self, pairs: list[tuple[str, str]], timeout: float = 30.0) -> list[tuple[str, str]]:
        """A Text Request/Response exchange (e.g. SendTargets=All), continuations included."""
        self._check_requests()
        itt = self._issue(lambda: self.core.text(encode_text(pairs)))
        answer = await self._answer(itt, timeout)
        try:
            return parse_text(answer.data)
        except TextError as exc:
            raise ProtocolError(f"malformed text response: {exc}") from exc

    async def logout(self, wait: float = 30.0) -> None:
        """Wait (up to ``wait`` s) for outstanding commands, log out (close the session), close TCP."""
        if self._state in (State.CLOSED, State.CLOSING):
            return
        if self.core.tasks or self.core.pending:
            waiting = [cast(Command, c).future for c in (*self.core.tasks.values(), *self.core.pending)]
            await asyncio.wait(waiting, timeout=wait)
        if self._state is State.RECOVERING and self._recovery is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._recovery), wait)
        state = self._state
        self._state = State.CLOSING
        self._stop_timer()
        try:
            if state is State.FULL_FEATURE and self.core.connections:
                with contextlib.suppress(IscsiError, TimeoutError, KeyError):
                    itt = self.core.logout(LogoutReason.CLOSE_SESSION)
                    await self._answer(itt, self.config.logout_timeout)
        finally:
            self._close(ConnectionLost("session logged out"))

    async def close(self) -> None:
        """Drop the connection without logging out; outstanding commands fail with ConnectionLost."""
        self._state = State.CLOSING
        self._stop_timer()
        self._close(ConnectionLost("session closed"))

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _close(self, exc: BaseException) -> None:
        self._state = State.CLOSED
        self._stop_timer()
        if self._recovery is not None:
            self._recovery.cancel()
        for task in self._link_tasks:
            task.cancel()
        for protocol in {*self._protocols.values(), self._leading}:
            protocol.on_lost = None
            protocol.close()
        self._fail_all(exc)

    def _fail_all(self, exc: BaseException) -> None:
        for task in self.core.clear():
            cast(Command, task).fail(exc)
        for fut in self._futures.values():
            if not fut.done():
                fut.set_exception(exc)
        self._futures.clear()

    # ----------------------------------------------------------------------------------------------
    # failures and recovery

    def _on_link_lost(self, cid: int, protocol: IscsiProtocol, exc: BaseException | None) -> None:
        """A connection failed: at ErrorRecoveryLevel 2 the core keeps its tasks and says when to log it
        in again (:class:`ReconnectDue`, RFC 7143 7.1.1, 6.3.4); below it the session is reinstated."""
        if self._state is not State.FULL_FEATURE or self._protocols.get(cid) is not protocol:
            return
        recovery = self.core.connection_lost(cid, self._clock())
        del self._protocols[cid]
        if recovery is Recovery.CONNECTION:
            reason = exc if isinstance(exc, IscsiError) else ConnectionLost(f"connection lost: {exc}")
            self._recovery_errors[cid] = reason
            log.warning("connection %d lost (%s); recovering it (ERL 2)", cid, reason)
            self._arm()
            return
        for other in self._protocols.values():
            other.on_lost = None
            other.abort()
        self._protocols.clear()
        self._on_lost(exc)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task: asyncio.Task[Any] = self._loop.create_task(coro)
        self._link_tasks.add(task)
        task.add_done_callback(self._link_tasks.discard)

    def _retain_expired(self, cid: int) -> None:
        """DefaultTime2Retain passed for failed connection ``cid`` (its tasks already failed)."""
        if not self.core.connections and not self.core.failed and self._state is State.FULL_FEATURE:
            last = self._recovery_errors.get(cid, "DefaultTime2Retain passed")
            self._state = State.FAILED
            self._failure = SessionFailed(f"connection {cid} could not be recovered: {last}")
            self._fail_all(self._failure)

    async def _recover_connection(self, cid: int) -> None:
        """ERL 2 connection recovery, DefaultTime2Wait after the failure (RFC 7143 7.1.1, 7.2.2, 6.3.4):
        with a surviving connection (and ``connection_recovery="new_cid"``) send Logout reason 2 for
        ``cid`` on it and log in a new CID, else log ``cid`` in again (connection reinstatement); then
        :meth:`_reassign` its tasks. The core fails them if DefaultTime2Retain passes first."""
        delay = self.config.reconnect.initial_delay
        new_cid = cid
        survivor = self.core.primary()
        if self.config.connection_recovery == "new_cid" and survivor is not None:
            # RFC 7143 7.2.2: "remove the connection for recovery" on a surviving connection, then a
            # new CID takes the tasks over
            try:
                itt = self.core.logout(
                    LogoutReason.REMOVE_CONNECTION_FOR_RECOVERY, cid=cid, carrier=survivor.cid
                )
                resp = cast(LogoutResponse, (await self._answer(itt, self.config.logout_timeout + 10)).pdu)
                if resp.response == 0:
                    new_cid = self.core.free_cid(avoid=cid)
                else:
                    log.info("Logout (recovery) of CID %d answered %d: reinstating it", cid, resp.response)
            except (IscsiError, TimeoutError, KeyError) as exc:
                log.info("Logout (recovery) of CID %d failed (%s): reinstating it", cid, exc)
        while cid in self.core.failed:
            if self._state is not State.FULL_FEATURE:
                return
            try:
                protocol, result = await self._login(
                    self.config, self.tsih, cid=new_cid, cmdsn=self.core.cmdsn
                )
            except (IscsiError, OSError) as exc:
                self._recovery_errors[cid] = exc
                log.info("connection %d reinstatement failed: %s", cid, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.reconnect.max_delay)
                continue
            if (
                self._state is not State.FULL_FEATURE
                or cid not in self.core.failed
                or new_cid in self._protocols
            ):
                protocol.close()
                return
            if result.tsih != self.tsih:
                protocol.close()
                self._recovery_errors[cid] = ProtocolError(
                    f"target answered TSIH {result.tsih} for session {self.tsih}"
                )
                self._dispatch(self.core.abandon_recovery(cid))
                return
            self._attach(new_cid, protocol, result)
            self.core.connection_recovered(cid)
            self.connection_recoveries += 1
            try:
                await self._reassign(new_cid, cid)
            finally:
                self.core.recovery_done(cid)
            self._flush()
            return

    async def _reassign(self, new_cid: int, old_cid: int) -> None:
        """TASK REASSIGN each task of the failed connection onto ``new_cid`` (RFC 7143 11.5.1, 7.2.2),
        with ExpDataSN = the next DataSN (reads) or R2TSN (writes) we expect, so the target resends only
        what was lost.

        "Task still allegiant" (the target has not finished cleaning up the old connection) is retried
        until DefaultTime2Retain. The Response code alone is not trusted: Linux LIO (6.1) reports a
        successful TASK REASSIGN as "Function rejected" and an unknown task as "Function complete"
        (it passes iSCSI codes through its generic TMR table). So a task counts as reassigned when the
        target shows it — an R2T, Data-In or status for it on the new connection within
        ``REASSIGN_GRACE`` seconds; otherwise the machine issues it again as a new command (new ITT and
        CmdSN: its command or its status went down with the connection) — see
        :meth:`InitiatorSession.watch_reassigned`."""
        deadline = self.core.retain_deadline(old_cid) or self._clock()
        watch: list[tuple[InitiatorTask, int]] = []
        for task in self.core.tasks_of(old_cid):
            while not task.finished:
                heard = task.heard
                try:
                    itt = self.core.task_reassign(task, new_cid)
                    answer = await self._answer(itt, self.config.nop_timeout + 20)
                except (IscsiError, TimeoutError, KeyError) as exc:
                    log.info("TASK REASSIGN of ITT 0x%x failed: %s", task.itt, exc)
                    return  # the new connection failed too: its own recovery takes over
                response = cast(TaskMgmtResponse, answer.pdu).response
                log.info("TASK REASSIGN of ITT 0x%x: %s", task.itt, _tmf_name(response))
                if response == TmfResponse.TASK_STILL_ALLEGIANT and self._clock() < deadline:
                    await asyncio.sleep(0.2)
                    continue
                watch.append((task, heard))
                break
        self.core.watch_reassigned(watch, self._clock())
        self._arm()

    # -- MC/S: connections added and removed while the session runs

    async def add_connection(self) -> int:
        """Log in one more connection to this session (same ISID and TSIH, a free CID; RFC 7143 6.3.4)
        and start placing commands on it. Returns its CID. Raises LoginError/ConnectionLost, or
        ValueError when MaxConnections is reached."""
        self._check_usable()
        if len(self.core.connections) >= self.negotiated.max_connections:
            raise ValueError(f"the session already has MaxConnections={self.negotiated.max_connections}")
        cid = next(c for c in range(1, 65536) if c not in self.core.connections)
        for attempt in range(10):
            try:
                protocol, result = await self._login(self.config, self.tsih, cid=cid, cmdsn=self.core.cmdsn)
                break
            except LoginError as exc:
                # 0x0206 Too many connections: a connection just logged out may still be counted while
                # the target finishes its cleanup (LIO does it in a kernel thread): retry a few times
                if (exc.status_class, exc.status_detail) != (2, 6) or attempt == 9:
                    raise
                await asyncio.sleep(0.2 * (attempt + 1))
        if self._state is not State.FULL_FEATURE or cid in self.core.connections:
            protocol.close()
            raise ConnectionLost("session changed state while a connection was logging in")
        if result.tsih != self.tsih:
            protocol.close()
            raise ProtocolError(f"target answered TSIH {result.tsih} for session {self.tsih}")
        self._attach(cid, protocol, result)
        return cid

    async def remove_connection(self, cid: int, via: int | None = None, wait: float = 30.0) -> None:
        """Stop placing commands on connection ``cid``, wait for its tasks, and log it out (Logout
        reason 1 "close the connection", RFC 7143 11.14.1) — sent on connection ``via`` if given (the
        RFC lets any connection of the session carry it), else on ``cid`` itself."""
        conn = self.core.connections.get(cid)
        if conn is None:
            raise ValueError(f"no connection with CID {cid}")
        if len(self.core.connections) == 1:
            raise ValueError("the last connection is removed with logout()")
        carrier = via if via is not None else cid
        if carrier not in self.core.connections:
            raise ValueError(f"no connection with CID {via}")
        conn.active = False
        waiting = [cast(Command, t).future for t in self.core.tasks.values() if t.cid == cid]
        if waiting:
            await asyncio.wait(waiting, timeout=wait)
        protocol = self._protocols[cid]
        protocol.on_lost = None
        try:
            itt = self._issue(
                lambda: self.core.logout(LogoutReason.CLOSE_CONNECTION, cid=cid, carrier=carrier)
            )
            resp = cast(LogoutResponse, (await self._answer(itt, self.config.logout_timeout)).pdu)
        finally:
            self.core.remove_connection(cid)
            self._protocols.pop(cid, None)
            protocol.close()
        if resp.response != 0:
            raise ProtocolError(f"Logout of CID {cid} answered with response {resp.response}")

    def _on_lost(self, exc: BaseException | None) -> None:
        """The session lost its connections below ERL 2: reinstate it (RFC 7143 6.3.5), or fail."""
        if self._state is not State.FULL_FEATURE:
            return
        reason = (
            exc
            if isinstance(exc, IscsiError)
            else ConnectionLost(f"connection lost: {exc or 'closed by target'}")
        )
        for fut in self._futures.values():
            if not fut.done():
                fut.set_exception(ConnectionLost(str(reason)))
        self._futures.clear()
        if self.config.reconnect.max_attempts <= 0 or self.config.discovery:
            self._state = State.FAILED
            self._failure = reason
            self._fail_all(reason)
            return
        self._state = State.RECOVERING
        self._stop_timer()
        # every command that had not completed goes back to the queue in CmdSN order
        for ev in self.core.reinstate(self.config.reconnect.max_reissue):
            if isinstance(ev, TaskFailed):
                cast(Command, ev.task).fail(
                    SessionFailed(f"command {ev.detail} without completing: {reason}")
                )
        log.warning("connection lost (%s); reconnecting", reason)
        self._recovery = self._loop.create_task(self._recover(reason))

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
            self._state = State.FULL_FEATURE
            self._install(protocol, result)
            if self.config.connections > 1:
                self._spawn(self.open_connections(self.config.connections))
            return
        self._state = State.FAILED
        self._failure = SessionFailed(f"could not reconnect after {policy.max_attempts} attempts: {last}")
        self._fail_all(self._failure)

    async def open_connections(self, count: int) -> None:
        """Add connections until the session has ``count`` (MC/S); errors are raised."""
        while len(self.core.connections) < count and self._state is State.FULL_FEATURE:
            await self.add_connection()

    def kill_connection(self, cid: int | None = None) -> None:
        """Drop a TCP connection abruptly (RST), as a network failure would (tests, fault drills)."""
        if cid is None:
            self._leading.abort()
        else:
            self._protocols[cid].abort()


def _tmf_name(response: int) -> str:
    try:
        return TmfResponse(response).name
    except ValueError:
        return f"response {response}"
