"""One iSCSI TCP connection of an initiator session: byte moving only (RFC 7143 section 4.1).

:class:`IscsiProtocol` is an :class:`asyncio.BufferedProtocol` around the sans-I/O
:class:`~cistern.wire.framing.PduReader`: the event loop ``recv_into``\\ s straight into the buffer the
reader asks for, so Data-In payload lands in the caller's read buffer (the *sink* the session installs)
without an intermediate copy.  Sending is ``transport.writelines`` of header + payload buffers.

Frames go to a handler the owner sets: during login a queue the login coroutine awaits, in full feature
phase the session's dispatcher.  A framing error (bad header digest, oversized segment) or a TCP error
closes the transport and reports the loss once through ``on_lost``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Callable

from cistern.initiator.errors import ConnectionLost
from cistern.initiator.params import TlsConfig
from cistern.security.tls import certificate_names, initiator_context, refusal_reason
from cistern.wire.framing import Frame, FramingError, PduReader, Sink, frame_pdu
from cistern.wire.pdu import PDU, LoginResponse

FrameHandler = Callable[[Frame], None]
LostHandler = Callable[[BaseException | None], None]


class IscsiProtocol(asyncio.BufferedProtocol):
    def __init__(self) -> None:
        self.reader = PduReader(max_data_segment_length=8192)
        self.transport: asyncio.Transport | None = None
        self.on_frame: FrameHandler | None = None
        self.on_lost: LostHandler | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self.header_digest = False
        self.data_digest = False
        self._login_queue: asyncio.Queue[Frame | BaseException] = asyncio.Queue()
        self._paused = False

    # -- asyncio callbacks ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance check here
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.reader.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self.reader.buffer_filled(nbytes)
        self._drain()

    def _drain(self) -> None:
        """Hand every complete frame to the session (or, during login, to the login coroutine)."""
        reader = self.reader
        while not self._paused:
            try:
                frame = reader.next_frame()
            except FramingError as exc:
                self.abort(exc)
                return
            if frame is None:
                return
            handler = self.on_frame
            if handler is not None:
                try:
                    handler(frame)
                except Exception as exc:  # a bug or a hostile PDU the session could not place: drop
                    self.abort(exc)
                    return
                continue
            # login phase: a final Login Response switches digests on for the next PDU, so stop parsing
            # (and reading) until the login coroutine has applied the negotiated parameters.
            pdu = frame.pdu
            if isinstance(pdu, LoginResponse) and pdu.transit and pdu.nsg == 3 and self.transport is not None:
                self.transport.pause_reading()
                self._paused = True
            self._login_queue.put_nowait(frame)

    def eof_received(self) -> bool:
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        self._login_queue.put_nowait(exc or ConnectionLost("connection closed by the target"))
        handler, self.on_lost = self.on_lost, None
        if handler is not None:
            handler(exc)

    # -- used by the login and the session ------------------------------------------------------------

    async def next_login_frame(self, timeout: float) -> Frame:
        try:
            item = await asyncio.wait_for(self._login_queue.get(), timeout)
        except TimeoutError:
            raise ConnectionLost(f"no login response within {timeout:.0f}s") from None
        if isinstance(item, BaseException):
            if isinstance(item, ConnectionLost):
                raise item
            raise ConnectionLost(f"connection lost during login: {item}") from item
        return item

    def enter_full_feature(
        self,
        *,
        header_digest: bool,
        data_digest: bool,
        max_recv_data_segment_length: int,
        on_frame: FrameHandler,
        on_lost: LostHandler,
        sink: Sink | None,
    ) -> None:
        self.header_digest = header_digest
        self.data_digest = data_digest
        reader = self.reader
        reader.header_digest = header_digest
        reader.data_digest = data_digest
        reader.max_data_segment_length = max_recv_data_segment_length
        reader.sink = sink
        self.on_frame = on_frame
        self.on_lost = on_lost
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        # frames that arrived between the final Login Response and now (none, normally)
        while not self._login_queue.empty():
            item = self._login_queue.get_nowait()
            if isinstance(item, Frame):
                on_frame(item)
        self._drain()  # bytes staged behind the final Login Response, parsed with the new settings

    def send(self, pdu: PDU) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise ConnectionLost("connection is closed")
        transport.writelines(frame_pdu(pdu, header_digest=self.header_digest, data_digest=self.data_digest))

    def abort(self, exc: BaseException | None = None) -> None:
        """Drop the TCP connection now (RST); ``on_lost`` reports ``exc``."""
        if exc is not None and self.on_lost is not None:
            handler, self.on_lost = self.on_lost, None
            if self.transport is not None:
                self.transport.abort()
            handler(exc)
            return
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_connection(
    host: str, port: int, timeout: float, tls: TlsConfig | None = None, expected_name: str | None = None
) -> IscsiProtocol:
    """Connect to a portal (inside TLS 1.3 when ``tls`` is given: the target's certificate must chain to
    ``tls.ca`` and carry ``tls.server_name or expected_name``).  Raises ConnectionLost."""
    loop = asyncio.get_running_loop()
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    context = None
    if tls is not None:
        try:
            context = initiator_context(tls.ca, tls.certificate, tls.key)
        except (OSError, ssl.SSLError) as exc:
            raise ConnectionLost(f"TLS files cannot be loaded: {exc}") from None
    try:
        transport, protocol = await asyncio.wait_for(
            loop.create_connection(
                IscsiProtocol, host, port, ssl=context, server_hostname=host if context is not None else None
            ),
            timeout,
        )
    except TimeoutError:
        raise ConnectionLost(f"connecting to {where} timed out") from None
    except ssl.SSLError as exc:
        raise ConnectionLost(f"TLS with {where} failed: {refusal_reason(exc)}") from exc
    except OSError as exc:
        raise ConnectionLost(f"cannot connect to {where}: {exc.strerror or exc!r}") from exc
    if tls is not None:
        wanted = tls.server_name or expected_name or host
        names = certificate_names(transport.get_extra_info("peercert"))
        if wanted not in names:
            transport.abort()
            raise ConnectionLost(
                f"TLS with {where}: the target's certificate names {', '.join(sorted(names)) or 'nothing'}, "
                f"not {wanted}"
            )
    return protocol
