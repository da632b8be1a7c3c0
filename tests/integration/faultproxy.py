"""A fault-injecting iSCSI TCP proxy for tests (asyncio; RFC 7143 section 11 PDU framing).

``FaultProxy(target_host, target_port)`` listens on 127.0.0.1:``port`` and opens one connection to the
target per accepted initiator connection, numbered 0, 1, 2... in accept order. Each direction is parsed
into whole PDUs — BHS (48 bytes) + AHS (TotalAHSLength words) + header digest + data segment + padding +
data digest — so faults hit exactly one PDU:

* :meth:`cut` a chosen connection now (both sockets reset), or :meth:`cut_on` the first PDU that matches;
* :meth:`drop` one PDU matching opcode (and ITT, connection);
* :meth:`corrupt` one PDU: flip a byte of its data segment (with DataDigest=CRC32C the receiver sees a
  data digest error);
* :meth:`delay` matching PDUs by some seconds (order is kept: the direction stalls).

Digests are learnt from the Login Responses' text (``HeaderDigest=CRC32C`` / ``DataDigest=CRC32C``) and
apply after the final Login Response. Every fault that fired is recorded in :attr:`fired`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses

import peers

TO_TARGET = "to_target"
TO_INITIATOR = "to_initiator"
LOGIN_RESPONSE = 0x23


@dataclasses.dataclass
class Fault:
    kind: str  # "drop", "corrupt", "cut", "delay"
    direction: str
    opcode: int | None = None
    itt: int | None = None
    conn: int | None = None
    count: int = 1  # how many PDUs it hits (delay: -1 = forever)
    seconds: float = 0.0
    skip: int = 0  # let this many matching PDUs pass first
    predicate: object = None  # callable(header: bytes) -> bool, extra condition

    def matches(self, direction: str, conn: int, header: bytes, data_len: int) -> bool:
        if self.count == 0 or direction != self.direction:
            return False
        if self.conn is not None and conn != self.conn:
            return False
        if self.opcode is not None and header[0] & 0x3F != self.opcode:
            return False
        if self.itt is not None and int.from_bytes(header[16:20], "big") != self.itt:
            return False
        if self.kind == "corrupt" and data_len == 0:
            return False
        if self.predicate is not None and not self.predicate(header):  # type: ignore[operator]
            return False
        if self.skip > 0:
            self.skip -= 1
            return False
        return True


class _Conn:
    def __init__(self, index: int, ir: asyncio.StreamReader, iw: asyncio.StreamWriter) -> None:
        self.index = index
        self.ir, self.iw = ir, iw
        self.tr: asyncio.StreamReader | None = None
        self.tw: asyncio.StreamWriter | None = None
        self.header_digest = False
        self.data_digest = False
        self.ffp = False  # past the final Login Response: digests apply
        self.pdus = {TO_TARGET: 0, TO_INITIATOR: 0}
        self.scsi_commands = 0  # SCSI Command PDUs the initiator sent on this connection
        self.closed = False

    def cut(self) -> None:
        self.closed = True
        for w in (self.iw, self.tw):
            if w is not None:
                with contextlib.suppress(Exception):
                    w.transport.abort()


class FaultProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = peers.free_port()
        self.conns: list[_Conn] = []
        self.faults: list[Fault] = []
        self.fired: list[tuple[str, int, int, int]] = []  # (kind, conn, opcode, itt)
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for c in self.conns:
            c.cut()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- faults -----------------------------------------------------------------------------------

    def add(self, fault: Fault) -> Fault:
        self.faults.append(fault)
        return fault

    def drop(self, direction: str, opcode: int, **kw: object) -> Fault:
        return self.add(Fault("drop", direction, opcode, **kw))  # type: ignore[arg-type]

    def corrupt(self, direction: str, opcode: int, **kw: object) -> Fault:
        return self.add(Fault("corrupt", direction, opcode, **kw))  # type: ignore[arg-type]

    def cut_on(self, direction: str, opcode: int, **kw: object) -> Fault:
        return self.add(Fault("cut", direction, opcode, **kw))  # type: ignore[arg-type]

    def delay(self, direction: str, seconds: float, opcode: int | None = None, **kw: object) -> Fault:
        return self.add(Fault("delay", direction, opcode, seconds=seconds, count=-1, **kw))  # type: ignore[arg-type]

    def cut(self, index: int) -> None:
        """Reset both TCP connections of proxied connection ``index`` now."""
        self.conns[index].cut()
        self.fired.append(("cut", index, -1, -1))

    def live(self) -> list[int]:
        return [c.index for c in self.conns if not c.closed]

    # -- plumbing ---------------------------------------------------------------------------------

    def _spawn(self, coro: object) -> None:
        task = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, ir: asyncio.StreamReader, iw: asyncio.StreamWriter) -> None:
        conn = _Conn(len(self.conns), ir, iw)
        self.conns.append(conn)
        try:
            conn.tr, conn.tw = await asyncio.open_connection(*self.target)
        except OSError:
            conn.cut()
            return
        self._spawn(self._pump(conn, TO_TARGET, ir, conn.tw))
        self._spawn(self._pump(conn, TO_INITIATOR, conn.tr, iw))

    async def _pump(
        self, conn: _Conn, direction: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while not conn.closed:
                header = await reader.readexactly(48)
                ahs = header[4] * 4
                dlen = int.from_bytes(header[5:8], "big")
                hd = 4 if conn.ffp and conn.header_digest else 0
                dd = 4 if conn.ffp and conn.data_digest and dlen else 0
                rest = await reader.readexactly(ahs + hd + dlen + (-dlen % 4) + dd)
                pdu = bytearray(header + rest)
                opcode = header[0] & 0x3F
                if opcode == LOGIN_RESPONSE and direction == TO_INITIATOR:
                    text = bytes(rest[ahs : ahs + dlen])
                    conn.header_digest |= b"HeaderDigest=CRC32C" in text
                    conn.data_digest |= b"DataDigest=CRC32C" in text
                    if header[1] & 0x80 and (header[1] & 0x03) == 3:
                        conn.ffp = True
                conn.pdus[direction] += 1
                if direction == TO_TARGET and opcode == 0x01:
                    conn.scsi_commands += 1
                action = self._match(conn, direction, header, dlen)
                if action is not None:
                    itt = int.from_bytes(header[16:20], "big")
                    if action.kind != "delay":
                        self.fired.append((action.kind, conn.index, opcode, itt))
                    if action.kind == "drop":
                        continue
                    if action.kind == "cut":
                        conn.cut()
                        return
                    if action.kind == "corrupt":
                        pdu[48 + ahs + hd] ^= 0x5A
                    if action.kind == "delay":
                        await asyncio.sleep(action.seconds)
                writer.write(bytes(pdu))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            conn.cut()

    def _match(self, conn: _Conn, direction: str, header: bytes, dlen: int) -> Fault | None:
        for fault in self.faults:
            if fault.matches(direction, conn.index, header, dlen):
                if fault.count > 0:
                    fault.count -= 1
                return fault
        return None
