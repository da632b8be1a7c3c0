"""In-process harness for target tests: a real TargetServer on 127.0.0.1:0 and a hand-driven iSCSI client.

The other ``test_target_*`` files import :func:`running_server`, :class:`Client` and :func:`assert_serving`
from here.  The client speaks raw PDUs (``cistern.wire.pdu``) over a real socket so tests can send anything
an initiator could, well-formed or not, and assert the exact protocol answer (RFC 7143 sections 6, 11).
The tests at the bottom check the harness itself: a plain login and a TEST UNIT READY.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import uvloop

from cistern.scsi.lu import LogicalUnit
from cistern.scsi.server import DeviceServer
from cistern.storage.memory import MemoryStore
from cistern.target.model import ChapSecret, TargetLimits, TargetSpec
from cistern.target.server import TargetServer
from cistern.wire import pdu as P
from cistern.wire.constants import FLAG_FINAL, RESERVED_TAG
from cistern.wire.framing import FramingError, PduReader, frame_pdu

IQN = "iqn.2026-01.test.cistern:disk"
IQN2 = "iqn.2026-01.test.cistern:other"
INITIATOR = "iqn.2026-01.test.client:one"
INITIATOR2 = "iqn.2026-01.test.client:two"
STRANGER = "iqn.2026-01.test.client:stranger"
LUN_SIZE = 1024 * 1024
BLOCK = 512

GOOD = 0x00
CHECK_CONDITION = 0x02

TUR = bytes(6)


def read10(lba: int, blocks: int) -> bytes:
    return bytes([0x28, 0]) + lba.to_bytes(4, "big") + bytes([0]) + blocks.to_bytes(2, "big") + bytes([0])


def write10(lba: int, blocks: int) -> bytes:
    return bytes([0x2A, 0]) + lba.to_bytes(4, "big") + bytes([0]) + blocks.to_bytes(2, "big") + bytes([0])


def text(*pairs: tuple[str, str]) -> bytes:
    return b"".join(f"{k}={v}".encode() + b"\0" for k, v in pairs)


def parse_text(data: bytes) -> list[tuple[str, str]]:
    out = []
    for item in bytes(data).split(b"\0"):
        if item:
            k, _, v = item.decode().partition("=")
            out.append((k, v))
    return out


@dataclass
class Served:
    server: TargetServer
    port: int
    store: MemoryStore
    store2: MemoryStore


@contextlib.asynccontextmanager
async def running_server(
    *,
    limits: TargetLimits | None = None,
    chap: ChapSecret | None = None,
    login_timeout: float = 5.0,
    nop_interval: float = 0.0,
    nop_timeout: float = 5.0,
) -> AsyncIterator[Served]:
    """Two targets on one portal: IQN (ACL: INITIATOR, INITIATOR2) and IQN2 (ACL: INITIATOR2 only)."""
    store = MemoryStore(LUN_SIZE, block_size=BLOCK)
    store2 = MemoryStore(LUN_SIZE, block_size=BLOCK)
    dev = DeviceServer({0: LogicalUnit(store, lun=0, serial="t1")}, target_name=IQN)
    dev2 = DeviceServer({0: LogicalUnit(store2, lun=0, serial="t2")}, target_name=IQN2)
    portal = ("127.0.0.1", 0)
    t1 = TargetSpec(
        IQN,
        dev,
        portals=[portal],
        acl=frozenset({INITIATOR, INITIATOR2}),
        chap=chap,
        limits=limits or TargetLimits(),
    )
    t2 = TargetSpec(IQN2, dev2, portals=[portal], acl=frozenset({INITIATOR2}))
    server = TargetServer(
        [t1, t2],
        login_timeout=login_timeout,
        nop_interval=nop_interval,
        nop_timeout=nop_timeout,
    )
    await server.start()
    assert len(server.bound) == 1 and server.bound[0][1] != 0
    try:
        yield Served(server, server.bound[0][1], store, store2)
    finally:
        await server.stop(logout_grace=0.05)


class Closed(Exception):
    """The target closed the connection."""


@dataclass
class CommandResult:
    status: int
    data: bytes
    sense: bytes
    response: P.PDU  # the PDU that carried the status (ScsiResponse or final DataIn)
    pdus: list[P.PDU]


class Client:
    """A raw iSCSI initiator connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.r = reader
        self.w = writer
        self.framer = PduReader(max_data_segment_length=1 << 24)
        self.frames: list[P.PDU] = []
        self.header_digest = False
        self.data_digest = False
        self.cmdsn = 0
        self.expstatsn = 0
        self.itt = 0x10
        self.isid = bytes([0x80, 0, 0, 0, 0x12, 0x34])
        self.tsih = 0

    @classmethod
    async def open(cls, port: int) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def close(self) -> None:
        self.w.close()
        with contextlib.suppress(Exception):
            await self.w.wait_closed()

    # ---- raw I/O

    async def send_raw(self, data: bytes) -> None:
        self.w.write(data)
        await self.w.drain()

    async def send(self, pdu: P.PDU, *, corrupt_data_digest: bool = False) -> None:
        parts = [
            bytes(p) for p in frame_pdu(pdu, header_digest=self.header_digest, data_digest=self.data_digest)
        ]
        if corrupt_data_digest:
            last = bytearray(parts[-1])
            last[-1] ^= 0xFF
            parts[-1] = bytes(last)
        await self.send_raw(b"".join(parts))

    async def recv(self, timeout: float = 2.0) -> P.PDU:
        """The next PDU; raises Closed on EOF, TimeoutError when nothing comes."""
        async with asyncio.timeout(timeout):
            while not self.frames:
                chunk = await self.r.read(65536)
                if not chunk:
                    raise Closed()
                for frame in self.framer.feed(chunk):
                    assert frame.pdu is not None, f"target sent an undecodable PDU: {frame.error}"
                    assert frame.data_digest_ok, "target sent a bad data digest"
                    frame.pdu.data = bytes(frame.pdu.data)
                    self.frames.append(frame.pdu)
        pdu = self.frames.pop(0)
        # ExpStatSN follows every PDU that carries status; R2T, unsolicited NOP-In and Data-In without
        # status repeat the current StatSN without consuming it (RFC 7143 11.7.4, 11.8.2, 11.19)
        statsn = getattr(pdu, "statsn", None)
        carries_status = not isinstance(pdu, (P.R2T, P.LoginResponse, P.DataIn, P.NopIn)) or (
            (isinstance(pdu, P.DataIn) and pdu.has_status)
            or (isinstance(pdu, P.NopIn) and pdu.itt != RESERVED_TAG)
        )
        if statsn is not None and carries_status:
            self.expstatsn = (statsn + 1) & 0xFFFFFFFF
        return pdu

    async def expect(self, cls: type[P.PDU], timeout: float = 2.0) -> P.PDU:
        pdu = await self.recv(timeout)
        assert isinstance(pdu, cls), f"expected {cls.__name__}, got {pdu!r}"
        return pdu

    async def expect_closed(self, timeout: float = 2.0) -> list[P.PDU]:
        """Read until EOF (or reset); returns whatever PDUs came first. Fails if the target keeps it open."""
        got: list[P.PDU] = []
        try:
            while True:
                got.append(await self.recv(timeout))
        except (Closed, ConnectionResetError, FramingError):
            return got
        except TimeoutError:
            raise AssertionError(f"connection still open after {timeout} s (got {got!r})") from None

    async def expect_silence(self, timeout: float = 0.5) -> None:
        with contextlib.suppress(TimeoutError):
            pdu = await self.recv(timeout)
            raise AssertionError(f"expected no answer, got {pdu!r}")

    def next_itt(self) -> int:
        self.itt += 1
        return self.itt

    def take_cmdsn(self, immediate: bool = False) -> int:
        sn = self.cmdsn
        if not immediate:
            self.cmdsn = (self.cmdsn + 1) & 0xFFFFFFFF
        return sn

    # ---- login

    def login_pdu(
        self, data: bytes, *, csg: int, nsg: int, transit: bool = True, cont: bool = False, **kw: int
    ) -> P.LoginRequest:
        fields = dict(
            isid=self.isid, tsih=self.tsih, itt=0, cid=1, cmdsn=self.cmdsn, expstatsn=self.expstatsn
        )
        fields.update(kw)
        return P.LoginRequest(flags=P.login_flags(transit, cont, csg, nsg), data=data, **fields)  # type: ignore[arg-type]

    async def login_exchange(self, data: bytes, **kw: int) -> P.LoginResponse:
        await self.send(self.login_pdu(data, **kw))
        rsp = await self.expect(P.LoginResponse)
        assert isinstance(rsp, P.LoginResponse)
        self.expstatsn = (rsp.statsn + 1) & 0xFFFFFFFF
        return rsp

    async def login(
        self,
        initiator: str = INITIATOR,
        target: str | None = IQN,
        *,
        operational: tuple[tuple[str, str], ...] = (),
        discovery: bool = False,
    ) -> P.LoginResponse:
        """Security stage (AuthMethod=None) then operational stage to full feature phase; asserts success."""
        decl = [("InitiatorName", initiator)]
        if discovery:
            decl.append(("SessionType", "Discovery"))
        else:
            assert target is not None
            decl += [("TargetName", target), ("SessionType", "Normal")]
        rsp = await self.login_exchange(text(*decl, ("AuthMethod", "None")), csg=0, nsg=1)
        assert (rsp.status_class, rsp.status_detail) == (0, 0), rsp
        assert rsp.transit and rsp.nsg == 1
        rsp = await self.login_exchange(text(*operational), csg=1, nsg=3)
        answers = dict(parse_text(rsp.data))
        for _ in range(4):  # the target offered keys of its own: accept them (RFC 7143 6.2)
            assert (rsp.status_class, rsp.status_detail) == (0, 0), rsp
            if rsp.transit:
                break
            offers = [
                (k, v)
                for k, v in parse_text(rsp.data)
                if k not in dict(operational) and k != "MaxRecvDataSegmentLength"
            ]
            rsp = await self.login_exchange(text(*offers), csg=1, nsg=3)
            answers.update(parse_text(rsp.data))
        assert (rsp.status_class, rsp.status_detail) == (0, 0), rsp
        assert rsp.transit and rsp.nsg == 3 and rsp.tsih != 0
        self.tsih = rsp.tsih
        self.cmdsn = rsp.expcmdsn
        self.header_digest = answers.get("HeaderDigest") == "CRC32C"
        self.data_digest = answers.get("DataDigest") == "CRC32C"
        self.framer.header_digest = self.header_digest
        self.framer.data_digest = self.data_digest
        return rsp

    # ---- commands

    def command_pdu(
        self,
        cdb: bytes,
        *,
        read_len: int = 0,
        write_len: int = 0,
        immediate_data: bytes = b"",
        final: bool = True,
        itt: int | None = None,
        lun: int = 0,
    ) -> P.ScsiCommand:
        flags = (FLAG_FINAL if final else 0) | (0x40 if read_len else 0) | (0x20 if write_len else 0) | 1
        return P.ScsiCommand(
            flags=flags,
            lun=P.encode_lun(lun),
            itt=self.next_itt() if itt is None else itt,
            expected_data_transfer_length=read_len or write_len,
            cmdsn=self.take_cmdsn(),
            expstatsn=self.expstatsn,
            cdb16=cdb.ljust(16, b"\0"),
            data=immediate_data,
        )

    async def collect(self, itt: int, timeout: float = 2.0) -> CommandResult:
        """Gather Data-In until the status of ``itt`` arrives."""
        data = bytearray()
        pdus: list[P.PDU] = []
        while True:
            pdu = await self.recv(timeout)
            pdus.append(pdu)
            if isinstance(pdu, P.DataIn) and pdu.itt == itt:
                assert pdu.buffer_offset == len(data)
                data += pdu.data
                if pdu.has_status:
                    return CommandResult(pdu.status, bytes(data), b"", pdu, pdus)
            elif isinstance(pdu, P.ScsiResponse) and pdu.itt == itt:
                sense = bytes(pdu.data[2:]) if pdu.data else b""
                return CommandResult(pdu.status, bytes(data), sense, pdu, pdus)
            else:
                raise AssertionError(f"unexpected {pdu!r} while waiting for ITT 0x{itt:x}")

    async def command(self, cdb: bytes, *, read_len: int = 0, lun: int = 0) -> CommandResult:
        pdu = self.command_pdu(cdb, read_len=read_len, lun=lun)
        await self.send(pdu)
        return await self.collect(pdu.itt)

    async def write(self, lba: int, payload: bytes) -> CommandResult:
        """WRITE(10) answering every R2T (honours unsolicited/immediate data as negotiated: sends none)."""
        pdu = self.command_pdu(write10(lba, len(payload) // BLOCK), write_len=len(payload))
        await self.send(pdu)
        while True:
            rsp = await self.recv()
            if isinstance(rsp, P.R2T):
                assert rsp.itt == pdu.itt
                await self.send(
                    P.DataOut(
                        flags=FLAG_FINAL,
                        itt=pdu.itt,
                        ttt=rsp.ttt,
                        expstatsn=self.expstatsn,
                        datasn=0,
                        buffer_offset=rsp.buffer_offset,
                        data=payload[
                            rsp.buffer_offset : rsp.buffer_offset + rsp.desired_data_transfer_length
                        ],
                    )
                )
                continue
            assert isinstance(rsp, P.ScsiResponse), rsp
            return CommandResult(rsp.status, b"", bytes(rsp.data[2:]), rsp, [rsp])

    async def ready(self) -> None:
        """TEST UNIT READY until GOOD (the first one after login reports the power-on unit attention)."""
        for _ in range(3):
            res = await self.command(TUR)
            if res.status == GOOD:
                return
            assert res.status == CHECK_CONDITION
        raise AssertionError("TEST UNIT READY never succeeded")

    async def nop_ping(self, payload: bytes = b"") -> P.NopIn:
        itt = self.next_itt()
        await self.send(
            P.NopOut(
                flags=FLAG_FINAL,
                itt=itt,
                ttt=RESERVED_TAG,
                cmdsn=self.take_cmdsn(),
                expstatsn=self.expstatsn,
                data=payload,
            )
        )
        rsp = await self.expect(P.NopIn)
        assert isinstance(rsp, P.NopIn) and rsp.itt == itt
        return rsp


async def logged_in(port: int, **kw: object) -> Client:
    client = await Client.open(port)
    await client.login(**kw)  # type: ignore[arg-type]
    return client


async def assert_serving(port: int, initiator: str = INITIATOR2) -> None:
    """A fresh connection can still log in and run TEST UNIT READY: the server survived."""
    client = await Client.open(port)
    client.isid = bytes([0x80, 0, 0, 0, 0x77, 0x77])
    try:
        await client.login(initiator)
        await client.ready()
    finally:
        await client.close()


def run(coro: object) -> None:
    """Run a test coroutine on uvloop, the loop the CLI serves with (its transports differ from asyncio's)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(coro, 15))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- self test


def test_login_and_test_unit_ready() -> None:
    async def main() -> None:
        async with running_server() as s:
            c = await logged_in(s.port)
            first = await c.command(TUR)
            assert first.status == CHECK_CONDITION and first.sense[12] == 0x29  # power on / reset UA
            await c.ready()
            await c.close()
            await assert_serving(s.port)

    run(main())


def test_write_then_read_back() -> None:
    async def main() -> None:
        async with running_server() as s:
            c = await logged_in(s.port, operational=(("ImmediateData", "No"), ("InitialR2T", "Yes")))
            await c.ready()
            payload = bytes(range(256)) * 8
            res = await c.write(4, payload)
            assert res.status == GOOD
            res = await c.command(read10(4, 4), read_len=len(payload))
            assert res.status == GOOD and res.data == payload
            assert bytes(s.store._data[4 * BLOCK : 4 * BLOCK + len(payload)]) == payload  # type: ignore[index]
            await c.close()

    run(main())
