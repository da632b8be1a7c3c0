"""The bytes of one target connection between its socket and its machine: the per-read path, compiled.

:class:`Pump` is what the event loop calls for every read of a
:class:`~cistern.target.connection.Connection` (its ``buffer_updated``, bound at the connection's
construction, as ``get_buffer`` is the framer's): the framed PDUs go to the login driver or, in full
feature phase, to the :class:`~cistern.target.engine.CommandEngine`; what they produced leaves in one
``transport.writelines`` at the end of the read; then the connection may busy-poll its socket for the
initiator's next command (:mod:`cistern.target.busypoll`).  Responses produced outside a read (thread-pool
completions, task management, pings) are gathered to the end of the loop iteration (:meth:`Pump.kick`), so
a burst of them costs one ``writev``.

It is a plain class, not the ``asyncio.BufferedProtocol`` subclass, so that the optional accelerator
(:mod:`cistern.accel`) compiles it to a native class: the read path then runs compiled from the event
loop's callback to the ``writelines`` (the file store's inline I/O calls aside), which at queue depth 1
was about 2 µs of server CPU per command (bench/RESULTS.md, eighth session).  The asyncio connection keeps
what is not per read: login, timers, backpressure, task management, logout.

State it owns: whether the connection is closing, whether a read is being handled (``in_batch``), the
gathering of responses, and the busy-poll state of the connection.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING, Final

from cistern.target.busypoll import POLL_SLICE, BusyPoll, PollGovernor, PollSet
from cistern.wire.errors import RemoteProtocolError
from cistern.wire.framing import PduReader
from cistern.wire.pdu import Buffer

if TYPE_CHECKING:
    from cistern.target.connection import Connection
    from cistern.target.engine import CommandEngine
    from cistern.wire.target_connection import TargetConnection

__all__ = ["GATHER_ALONE", "GATHER_SKIP", "Pump"]

log: Final = logging.getLogger("cistern.target")

#: after GATHER_ALONE gathers in a row of a loop iteration's responses to large PDUs each sent one response
#: alone, GATHER_SKIP responses go at once before gathering is tried again (at depth 1 waiting for the end
#: of the iteration costs an epoll_pwait per command and gathers nothing)
GATHER_ALONE: Final = 8
GATHER_SKIP: Final = 63


class Pump:
    """Moves the bytes of ``conn``: reads framed by ``reader``, responses out through ``transport``.

    ``governor`` and ``pollset``: the server's busy-poll decision and its epoll of pollable sockets.
    """

    def __init__(self, conn: Connection, reader: PduReader, governor: PollGovernor, pollset: PollSet) -> None:
        self.conn = conn
        self.reader = reader
        self.governor = governor
        self.pollset = pollset
        self.transport: asyncio.Transport | None = None  # from connection_made
        self.machine: TargetConnection | None = None  # from full feature phase on
        self.engine: CommandEngine | None = None  # from full feature phase on
        self.out: list[Buffer] = []  # the outbox during login (the machine's afterwards)
        self.closing = False
        self.in_batch = False  # inside buffer_updated: what is queued leaves at its end
        self.flush_scheduled = False
        # responses to large PDUs: gathered to the end of the loop iteration (True while one such gather is
        # scheduled), unless gathering has been gathering nothing (GATHER_ALONE)
        self.bulk_gather = False
        self.gathered_alone = 0  # such gathers in a row that sent one response alone
        self.gather_skip = 0
        # adaptive busy polling: plain TCP sockets in full feature phase only
        self.fd = -1  # the socket's descriptor when it carries plain iSCSI (not TLS)
        self.poll: BusyPoll | None = None
        self.polling = False
        self.poll_resume = False  # a poll stretch ended at POLL_SLICE and continues after a loop visit

    def enter_full_feature(self, machine: TargetConnection, engine: CommandEngine) -> None:
        """From now on PDUs go to ``engine`` and responses come from ``machine``'s outbox (what login
        queued leaves first)."""
        machine.out = self.out
        self.out = []
        self.machine = machine
        self.engine = engine

    # ------------------------------------------------------------------ receiving

    def buffer_updated(self, nbytes: int) -> None:
        """``asyncio.BufferedProtocol.buffer_updated``: ``nbytes`` more bytes are in the framer's buffer."""
        reader = self.reader
        reader.buffer_filled(nbytes)
        self.poll_resume = False
        self.in_batch = True
        try:
            engine = self.engine
            if engine is None:
                if not self._login_frames():
                    return
                engine = self.engine
                assert engine is not None
            engine.receive(reader, time.monotonic())
        except RemoteProtocolError as exc:  # FramingError too: bytes that are no PDU
            log.warning("%s: dropping connection: %s", self.conn.peer, exc)
            self.conn.close()
        except Exception:  # a bug of ours: never let it kill the server, but drop this connection
            frame = self.engine.frame if self.engine is not None else None
            log.exception(
                "%s: internal error handling %s",
                self.conn.peer,
                type(frame.pdu).__name__ if frame is not None else "received bytes",
            )
            self.conn.close()
        finally:
            self.in_batch = False
            if reader.bulk and not self.closing and self.outbox() and self._gather():
                # large PDUs come one per read: gather the responses of this loop iteration's reads (the
                # event loop reads a socket up to 32 times per iteration)
                self.bulk_gather = True
                self.kick()
            else:
                self.flush()
                if not self.polling:  # a poll in progress goes on by itself (no call to decide it again)
                    self.maybe_poll()

    def _login_frames(self) -> bool:
        """Hand the framer's whole PDUs to the login driver until the connection enters full feature phase
        (True: the rest is the engine's) or the framer needs more bytes (False).  Raises FramingError."""
        reader = self.reader
        conn = self.conn
        while not self.closing:
            frame = reader.next_frame()
            if frame is None:
                return False
            conn.login_frame(frame)
            if self.engine is not None:
                return True
        return False

    # ------------------------------------------------------------------ sending

    def outbox(self) -> list[Buffer]:
        """What waits to be sent: the machine's outbox, or the login outbox before full feature phase."""
        machine = self.machine
        return machine.out if machine is not None else self.out

    def kick(self) -> None:
        """Something was queued outside a received chunk: send it at the end of this loop iteration."""
        if not self.in_batch and not self.flush_scheduled:
            self.flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush_gathered)

    def flush_gathered(self) -> None:
        """The end of a loop iteration: what was gathered leaves (one ``writev``), then the connection may
        poll (responses to large PDUs and thread-pool completions leave this way)."""
        if self.bulk_gather:
            self.bulk_gather = False
            if len(self.outbox()) >= 2:
                self.gathered_alone = 0
            else:
                self.gathered_alone += 1
                if self.gathered_alone >= GATHER_ALONE:
                    # gathering gathers nothing here (depth 1): the next responses leave at once, one loop
                    # iteration (an epoll_pwait) earlier each
                    self.gathered_alone = 0
                    self.gather_skip = GATHER_SKIP
        self.flush()
        self.maybe_poll()

    def _gather(self) -> bool:
        """Whether a large PDU's response waits for the end of the loop iteration (see flush_gathered)."""
        if self.gather_skip:
            self.gather_skip -= 1
            return False
        return True

    def flush(self) -> None:
        """Hand everything queued to the transport now, in one ``writelines``."""
        self.flush_scheduled = False
        machine = self.machine
        if machine is not None:
            out = machine.out
            if not out:
                return
            machine.out = []
        else:
            out = self.out
            if not out:
                return
            self.out = []
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.writelines(out)

    # ------------------------------------------------------------------ busy polling

    def set_busy_poll(self, budget: float) -> None:
        """Poll for up to ``budget`` seconds after each batch of responses (0: never); plain-TCP
        connections in full feature phase only."""
        if budget > 0 and self.fd >= 0 and self.machine is not None and not self.closing:
            poll = self.poll
            if poll is None:
                if not self.pollset.register(self.fd):
                    return
                self.poll = BusyPoll(budget)
            else:
                poll.budget = budget
        else:
            self.stop_polling()

    def stop_polling(self) -> None:
        """This connection polls no more (its socket leaves the poll set)."""
        if self.poll is not None:
            self.poll = None
            self.pollset.unregister(self.fd)

    def maybe_poll(self) -> None:
        """Our responses have left: poll for the initiator's next command if that pays (busypoll)."""
        poll = self.poll
        if poll is not None and not self.polling and self._may_poll() and self._governed() and poll.idle():
            self._busy_poll(poll)

    def _governed(self) -> bool:
        """This connection waits for its initiator: count the wait with the server's governor; True if
        connections poll now (:class:`cistern.target.busypoll.PollGovernor`)."""
        governor = self.governor
        if governor.wait():
            governor.measure(time.process_time())
        return governor.polling

    def _may_poll(self) -> bool:
        """Whether this connection now only waits for the initiator: everything it sent is answered and
        sent, reading is not paused (backpressure, gated reads) and nothing is queued for later."""
        machine = self.machine
        transport = self.transport
        return (
            machine is not None
            and not self.closing
            and not self.flush_scheduled
            and machine.session.outstanding == 0
            and not machine.session.held
            and transport is not None
            and transport.is_reading()
            and transport.get_write_buffer_size() == 0
        )

    def _busy_poll(self, poll: BusyPoll) -> None:
        """Poll the socket for the initiator's next bytes for up to ``poll.budget`` seconds (see
        :mod:`cistern.target.busypoll`), handing what arrives to :meth:`buffer_updated` as the event loop
        would; stop when another connection has data or when this connection no longer only waits for
        its initiator.  Every :data:`POLL_SLICE` the event loop gets one turn (without sleeping) before
        the poll goes on."""
        fd = self.fd
        pollset = self.pollset
        reader = self.reader
        started = time.monotonic()
        deadline = started + poll.budget
        end = started + POLL_SLICE
        self.polling = True
        try:
            while True:
                state = pollset.ready(fd)
                if state < 0:
                    return
                if state == 0:
                    if time.monotonic() >= deadline:
                        poll.timed_out()
                        pollset.empty += 1
                        return
                    os.sched_yield()  # a runnable initiator on this CPU gets it
                    continue
                try:
                    nbytes = os.readv(fd, [reader.get_buffer()])
                except BlockingIOError:
                    continue
                except OSError:
                    return  # the event loop sees the error or EOF on its next read and closes
                if nbytes == 0:
                    return
                poll.caught()
                pollset.caught += 1
                self.buffer_updated(nbytes)
                now = time.monotonic()
                if not self._may_poll() or not self._governed():
                    return
                if now >= end:
                    # visit the event loop (timers, other sockets, thread-pool completions) without
                    # sleeping in it: a ready callback makes its epoll_wait return at once
                    self.poll_resume = True
                    asyncio.get_running_loop().call_soon(self._resume_poll)
                    return
                deadline = now + poll.budget
        finally:
            self.polling = False

    def _resume_poll(self) -> None:
        """Continue a poll stretch cut at :data:`POLL_SLICE`, unless bytes came through the loop since."""
        poll = self.poll
        if self.poll_resume and poll is not None and not self.polling and self._may_poll():
            self.poll_resume = False
            self._busy_poll(poll)
