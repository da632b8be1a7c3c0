"""The door of every portal: admission before login, and TLS before the first iSCSI byte.

:class:`GatedConnection` is the target's :class:`~cistern.target.connection.Connection` plus the
bookkeeping of :class:`~cistern.security.admission.Admission`: a connection counts as *pending* from
accept until it reaches full feature phase or closes; one refused on arrival (rate, caps, lockout) is
closed at once with one log line, before anything is read from it.

A connection that would leave fewer than :data:`FD_RESERVE` file descriptors free below the open-file
limit (RLIMIT_NOFILE) is refused the same way: closed at once with one WARNING line, so the process never
reaches the limit itself, where the event loop would accept and reset connections without a word.

On a TLS portal the listener is a :class:`TlsListener`: it accepts the socket, admits the connection, runs
the TLS handshake (TLS 1.3, client certificate checked against the CA and CRL), and only then hands the
decrypted stream to a ``GatedConnection``.  A plaintext, wrong-CA, expired, revoked or certificate-less
client therefore never reaches the PDU framer; its refusal is one WARNING line naming the peer address and
the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from typing import TYPE_CHECKING, Any, cast

from cistern.security.tls import certificate_names, refusal_reason
from cistern.target.connection import Connection

if TYPE_CHECKING:
    from cistern.target.server import TargetServer

log = logging.getLogger("cistern.target")

#: descriptors kept free below RLIMIT_NOFILE for everything that is not a client connection (the accept()
#: itself, a store or log file opened later, a TLS handshake, the admin socket)
FD_RESERVE = 32


def descriptor_refusal(server: TargetServer, fileno: int) -> str | None:
    """Why a new connection (its socket is descriptor ``fileno``) must be closed to keep FD_RESERVE
    descriptors free, or None.  Descriptors in use are at least ``fileno + 1`` (the kernel hands out the
    lowest free one) and at least those open at start plus one per connection."""
    limit = server.nofile_limit
    if limit <= 0:
        return None
    in_use = max(fileno + 1, server.base_descriptors + len(server.connections) + 1)
    if in_use <= limit - FD_RESERVE:
        return None
    return (
        f"open-file limit reached: {in_use} of {limit} descriptors in use "
        f"(RLIMIT_NOFILE; {FD_RESERVE} are kept free)"
    )


def _fileno(transport: asyncio.BaseTransport) -> int:
    sock = transport.get_extra_info("socket")
    try:
        return int(sock.fileno()) if sock is not None else -1
    except (OSError, ValueError):
        return -1


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
        #: the accepted socket while its TLS handshake runs (so an eviction can end it)
        self.raw_socket: socket.socket | None = None

    def admit(self, transport: asyncio.BaseTransport) -> bool:
        """Ask admission whether this new connection may proceed; False: it was closed (and logged)."""
        address, peer = _peer(transport)
        refusal = descriptor_refusal(self.server, _fileno(transport))
        if refusal is not None:
            self.server.log_refusal(peer, self.portal, refusal)
            cast(asyncio.Transport, transport).abort()
            return False
        refusal, evict = self.server.admission.connection_opened(self, address, time.monotonic())
        if refusal is not None:
            self.server.log_refusal(peer, self.portal, refusal)
            cast(asyncio.Transport, transport).abort()
            return False
        self.admitted = True
        self.evict_others(evict)
        return True

    def evict_others(self, victims: list[Any]) -> None:
        for victim in victims:
            if isinstance(victim, GatedConnection):
                self.server.log_refusal(
                    victim.peer, victim.portal, "evicted: too many connections before login"
                )
                victim.evict()

    def evict(self) -> None:
        if self.transport is not None:
            self.abort()
        elif self.raw_socket is not None:  # still in its TLS handshake
            with contextlib.suppress(OSError):
                self.raw_socket.shutdown(socket.SHUT_RDWR)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self.admitted and not self.admit(transport):
            return
        if transport.get_extra_info("ssl_object") is not None:
            self.tls_names = certificate_names(transport.get_extra_info("peercert"))
        self.raw_socket = None
        super().connection_made(transport)

    def enter_full_feature(self, session: Any, cid: int, params: Any) -> None:
        super().enter_full_feature(session, cid, params)
        self.server.admission.connection_done(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.admission.connection_done(self)
        if self.transport is not None:
            super().connection_lost(exc)


class TlsListener:
    """A TLS portal: accepts TCP connections itself, admits them, then runs the TLS handshake with
    ``loop.connect_accepted_socket(..., ssl=...)``, which reports a failed handshake to us (a listener made
    by ``create_server(ssl=...)`` would drop it silently).  Quacks like the ``asyncio.Server`` the target
    keeps per portal (``sockets``, ``close``, ``wait_closed``)."""

    def __init__(self, server: TargetServer, portal: tuple[str, int], sock: socket.socket) -> None:
        self.server = server
        self.portal = portal
        self.sockets = [sock]
        self._task = asyncio.get_running_loop().create_task(self._accept_loop(sock))

    @classmethod
    def listen(cls, server: TargetServer, portal: tuple[str, int], backlog: int) -> TlsListener:
        """Bind and listen on ``portal``; raises OSError."""
        host, port = portal
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family, backlog=backlog)
        sock.setblocking(False)
        return cls(server, portal, sock)

    async def _accept_loop(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                client, address = await loop.sock_accept(sock)
            except OSError as exc:  # EMFILE/ENFILE: wait for descriptors rather than spin
                log.error("accepting on %s:%d: %s", *self.portal, exc.strerror or exc)
                await asyncio.sleep(0.1)
                continue
            task = loop.create_task(self._serve(client, address))
            self.server.background.add(task)
            task.add_done_callback(self.server.background.discard)

    async def _serve(self, client: socket.socket, address: Any) -> None:
        server = self.server
        conn = GatedConnection(server, self.portal)
        peer = f"{address[0]}:{address[1]}"
        conn.peer = peer
        conn.raw_socket = client
        refusal = descriptor_refusal(server, client.fileno())
        if refusal is not None:
            server.log_refusal(peer, self.portal, refusal)
            client.close()
            return
        refusal, evict = server.admission.connection_opened(conn, str(address[0]), time.monotonic())
        if refusal is not None:
            server.log_refusal(peer, self.portal, refusal)
            client.close()
            return
        conn.admitted = True
        conn.evict_others(evict)
        context = server.tls_context
        try:
            if context is None:
                raise RuntimeError("TLS is not configured")
            await asyncio.get_running_loop().connect_accepted_socket(
                lambda: conn, client, ssl=context, ssl_handshake_timeout=server.tls_handshake_timeout
            )
        except asyncio.CancelledError:
            server.admission.connection_done(conn)
            client.close()
            raise
        except Exception as exc:
            server.admission.connection_done(conn)
            server.log_refusal(peer, self.portal, f"TLS refused: {refusal_reason(exc)}")
            client.close()

    def close(self) -> None:
        self._task.cancel()
        for sock in self.sockets:
            sock.close()

    async def wait_closed(self) -> None:
        return None
