"""The door of every portal: admission before login, and TLS before the first iSCSI byte.

:class:`GatedConnection` is the target's :class:`~cistern.target.connection.Connection` plus the
bookkeeping of :class:`~cistern.security.admission.Admission`: a connection counts as *pending* from
accept until it reaches full feature phase or closes; one refused on arrival (rate, caps, lockout) is
closed at once with one log line, before anything is read from it.

On a TLS portal the listener's protocol is :class:`TlsAcceptor`: it admits the connection, runs the TLS
handshake (``loop.start_tls``, TLS 1.3, client certificate checked against the CA and CRL), and only then
hands the decrypted stream to a ``GatedConnection``.  A plaintext, wrong-CA, expired, revoked or
certificate-less client therefore never reaches the PDU framer; its refusal is one WARNING line naming
the peer address and the reason.  Bytes that arrive with the end of the handshake are held and replayed
to the connection through its ``get_buffer``/``buffer_updated`` interface.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, cast

from cistern.security.tls import certificate_names, refusal_reason
from cistern.target.connection import Connection

if TYPE_CHECKING:
    from cistern.target.server import TargetServer

log = logging.getLogger("cistern.target")

#: bytes a connection may send along with the end of its TLS handshake before it is served (a Login PDU)
_HOLD_LIMIT = 1024 * 1024


def _peer(transport: asyncio.BaseTransport) -> tuple[str, str]:
    peer = transport.get_extra_info("peername")
    if not peer:
        return "?", "?"
    return str(peer[0]), f"{peer[0]}:{peer[1]}"


class GatedConnection(Connection):
    """A target connection that takes part in admission control (and knows its TLS client certificate)."""

    def __init__(self, server: TargetServer, portal: tuple[str, int]) -> None:
        super().__init__(server, portal)
        #: names in the verified TLS client certificate; None on a plaintext portal
        self.tls_names: frozenset[str] | None = None
        self.admitted = False
        self._raw_transport: asyncio.Transport | None = None

    def admit(self, transport: asyncio.BaseTransport) -> bool:
        """Ask admission whether this new connection may proceed; False: it was closed (and logged)."""
        address, peer = _peer(transport)
        self._raw_transport = cast(asyncio.Transport, transport)
        refusal, evict = self.server.admission.connection_opened(self, address, time.monotonic())
        if refusal is not None:
            self.server.log_refusal(peer, self.portal, refusal)
            self._raw_transport.abort()
            return False
        self.admitted = True
        for victim in evict:
            if isinstance(victim, GatedConnection):
                self.server.log_refusal(
                    victim.peer, victim.portal, "evicted: too many connections before login"
                )
                victim.evict()
        return True

    def evict(self) -> None:
        if self.transport is not None:
            self.abort()
        elif self._raw_transport is not None:
            self._raw_transport.abort()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self.admitted and not self.admit(transport):
            return
        super().connection_made(transport)

    def enter_full_feature(self, session: Any, cid: int) -> None:
        super().enter_full_feature(session, cid)
        self.server.admission.connection_done(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.admission.connection_done(self)
        if self.transport is not None:
            super().connection_lost(exc)


class _Holding(asyncio.BufferedProtocol):
    """The TLS transport's protocol until the handshake result is known: keeps what arrives."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.lost = False
        self.transport: asyncio.Transport | None = None
        self._buffer: bytearray | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._buffer is None:
            self._buffer = bytearray(16384)
        return memoryview(self._buffer)

    def buffer_updated(self, nbytes: int) -> None:
        assert self._buffer is not None
        self.data += self._buffer[:nbytes]
        if len(self.data) > _HOLD_LIMIT and self.transport is not None:
            self.transport.abort()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


class TlsAcceptor(asyncio.Protocol):
    """The listener protocol of a TLS portal (see the module docstring)."""

    def __init__(self, server: TargetServer, portal: tuple[str, int]) -> None:
        self.server = server
        self.portal = portal
        self.conn = GatedConnection(server, portal)
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self.conn.admit(transport):
            return
        # nothing may be read in the clear: start_tls takes the transport over before reading resumes
        raw = cast(asyncio.Transport, transport)
        raw.pause_reading()
        self._task = asyncio.get_running_loop().create_task(self._handshake(raw))
        self.server.background.add(self._task)
        self._task.add_done_callback(self.server.background.discard)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.admission.connection_done(self.conn)

    async def _handshake(self, transport: asyncio.Transport) -> None:
        conn = self.conn
        _, peer = _peer(transport)
        context = self.server.tls_context
        holding = _Holding()
        try:
            if context is None:
                raise RuntimeError("TLS is not configured")
            tls = await asyncio.get_running_loop().start_tls(
                transport,
                holding,
                context,
                server_side=True,
                ssl_handshake_timeout=self.server.tls_handshake_timeout,
            )
        except asyncio.CancelledError:
            transport.abort()
            self.server.admission.connection_done(conn)
            raise
        except Exception as exc:
            self.server.log_refusal(peer, self.portal, f"TLS refused: {refusal_reason(exc)}")
            transport.abort()
            self.server.admission.connection_done(conn)
            return
        if tls is None or holding.lost or tls.is_closing():
            self.server.admission.connection_done(conn)
            return
        conn.tls_names = certificate_names(tls.get_extra_info("peercert"))
        tls.set_protocol(conn)
        conn.connection_made(tls)
        data = holding.data
        while data and not tls.is_closing():
            buffer = conn.get_buffer(len(data))
            n = min(len(buffer), len(data))
            buffer[:n] = data[:n]
            del data[:n]
            conn.buffer_updated(n)
