"""The admin API's listening sockets, bound at start; aiohttp and the application load on the first client.

The admin API is on by default (a Unix socket), but most servers are never asked anything: importing
aiohttp (and prometheus-client behind ``/metrics``) at start would cost every idle target ~10 MiB of RSS
(bench/RESULTS.md, "Idle memory, third session").  So :class:`AdminListeners` binds the Unix socket and
the optional TCP listener at start, exactly as aiohttp's ``UnixSite``/``TCPSite`` would
(``loop.create_unix_server`` / ``loop.create_server`` with the same backlog, TLS context and address
reuse), so a socket in use or a bad certificate still fails the start with one named error.  Its protocol
factory answers with aiohttp's low-level server (``AppRunner.server``: a ``RequestHandler`` per connection)
once :mod:`cistern.control.http` is loaded; a connection accepted before that gets a :class:`_Waiting`
protocol that pauses reading, starts the load (about 0.2 s once per process, during which the event loop
pauses) and then hands its transport to a ``RequestHandler`` (``transport.set_protocol``), which reads the
request as if it had accepted the connection itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, cast

from cistern.config.admin import AdminConfig
from cistern.control.live import Controller
from cistern.control.looplag import LoopLag

if TYPE_CHECKING:
    from cistern.control.http import AdminApp

log = logging.getLogger("cistern.control")

BACKLOG = 128  # pending connections per listener (aiohttp's site default)
ProtocolFactory = Callable[[], asyncio.BaseProtocol]


class _Waiting(asyncio.Protocol):
    """A connection accepted before aiohttp is loaded: reading paused until :meth:`hand_over`."""

    def __init__(self, owner: AdminListeners) -> None:
        self.owner = owner
        self.transport: asyncio.Transport | None = None
        self.early: list[bytes] = []  # bytes read before the pause took effect (normally none)
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses
        self.transport.pause_reading()
        self.owner._wait(self)

    def data_received(self, data: bytes) -> None:
        self.early.append(data)

    def eof_received(self) -> bool:
        self.eof = True
        return True  # keep the transport open: the request before the EOF is still answered

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.owner._forget(self)

    def hand_over(self, factory: ProtocolFactory) -> None:
        """Give the transport to a protocol from ``factory`` (aiohttp's server) and let it read."""
        transport, self.transport = self.transport, None
        if transport is None or transport.is_closing():
            return
        protocol = cast(asyncio.Protocol, factory())
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        for data in self.early:
            protocol.data_received(data)
        if self.eof and not protocol.eof_received():
            transport.close()
            return
        transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class AdminListeners:
    """The admin API of one server: listeners from :meth:`start` to :meth:`stop` (module docstring).

    ``socket_path`` / ``tcp_address`` name what is listening after :meth:`start`."""

    def __init__(self, controller: Controller, admin: AdminConfig) -> None:
        self.controller = controller
        self.admin = admin
        self.lag = LoopLag()
        self.started = time.time()
        self.socket_path: Path | None = None
        self.tcp_address: tuple[str, int] | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._app: AdminApp | None = None
        self._handler: ProtocolFactory | None = None
        self._loading: asyncio.Task[None] | None = None
        self._waiting: set[_Waiting] = set()

    @property
    def loaded(self) -> bool:
        """True once aiohttp and the application are loaded (after the first admin connection)."""
        return self._handler is not None

    # ---- lifecycle

    async def start(self) -> None:
        """Listen on the Unix socket and/or TCP; raises OSError naming the address that cannot be used,
        ssl.SSLError / OSError for a TLS certificate or key that cannot be loaded."""
        try:
            path = self.admin.socket_path()
            if path is not None:
                await self._start_unix(path, explicit=self.admin.socket is not None)
            if self.admin.listen is not None:
                await self._start_tcp()
        except BaseException:
            await self._close_servers()
            raise
        self.lag.start()

    async def _start_unix(self, path: Path, *, explicit: bool) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if path.exists() or path.is_socket():
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(str(path))
            except OSError:
                path.unlink(missing_ok=True)  # stale: nobody answers
            else:
                if explicit:
                    raise OSError(f"admin socket {path} is in use by another running server")
                log.warning(
                    "admin socket %s is in use by another server: this one serves no admin socket", path
                )
                return
            finally:
                probe.close()
        loop = asyncio.get_running_loop()
        old = os.umask(0o177)
        try:
            server = await loop.create_unix_server(self._protocol, str(path), backlog=BACKLOG)
        finally:
            os.umask(old)
        self._servers.append(server)
        os.chmod(path, 0o600)
        self.socket_path = path

    async def _start_tcp(self) -> None:
        listen = self.admin.listen
        assert listen is not None
        ctx = None
        if self.admin.tls_cert is not None and self.admin.tls_key is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(self.admin.tls_cert, self.admin.tls_key)
        loop = asyncio.get_running_loop()
        try:
            server = await loop.create_server(
                self._protocol, listen.host, listen.port, ssl=ctx, backlog=BACKLOG, reuse_address=True
            )
        except OSError as exc:
            raise OSError(exc.errno, f"admin listen {listen}: {exc.strerror or exc}") from None
        self._servers.append(server)
        for sock in server.sockets:
            address = sock.getsockname()
            if isinstance(address, tuple):
                self.tcp_address = (str(address[0]), int(address[1]))

    async def stop(self) -> None:
        """Stop listening, end the admin connections, forget the Unix socket file."""
        await self.lag.stop()
        await self._close_servers()
        if self._loading is not None:
            self._loading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loading
        for waiting in list(self._waiting):
            waiting.close()
        self._waiting.clear()
        if self._app is not None:
            await asyncio.sleep(0)  # as aiohttp's runner: requests already accepted start being handled
            await self._app.cleanup()
        if self.socket_path is not None:
            with contextlib.suppress(OSError):
                self.socket_path.unlink()

    async def _close_servers(self) -> None:
        for server in self._servers:
            server.close()
        self._servers.clear()

    # ---- loading aiohttp on the first connection

    def _protocol(self) -> asyncio.BaseProtocol:
        if self._handler is not None:
            return self._handler()
        return _Waiting(self)

    def _wait(self, waiting: _Waiting) -> None:
        if self._handler is not None:  # loaded between the accept and now
            waiting.hand_over(self._handler)
            return
        self._waiting.add(waiting)
        if self._loading is None:
            self._loading = asyncio.get_running_loop().create_task(self._load())

    def _forget(self, waiting: _Waiting) -> None:
        self._waiting.discard(waiting)

    async def _load(self) -> None:
        begun = time.perf_counter()
        try:
            # aiohttp, yarl, multidict and prometheus-client: about 0.2 s of imports, once per process.  On the
            # loop thread on purpose: a worker thread would not shorten the pause much (the GIL) and keeps
            # its pool and malloc arena (+1.2 MiB RSS measured).
            module = importlib.import_module("cistern.control.http")
            app: AdminApp = module.AdminApp(self.controller, self.admin, self.lag, self.started)
            handler = await app.setup()
        except Exception as exc:  # aiohttp missing or broken: one line, and keep serving iSCSI
            log.error(
                "admin API: cannot load the HTTP server (%s: %s); the next connection tries again",
                type(exc).__name__,
                exc,
            )
            for waiting in list(self._waiting):
                waiting.close()
            self._waiting.clear()
            return
        finally:
            self._loading = None
        self._app, self._handler = app, handler
        log.info("admin API: HTTP server loaded in %.0f ms", (time.perf_counter() - begun) * 1000)
        waiting_now, self._waiting = self._waiting, set()
        for waiting in waiting_now:
            waiting.hand_over(handler)
