"""cistern.initiator against tgt (a target we did not write) and against cistern's own target
(issue 4, "must show" 1, 2 and 3).

Every test takes the ``disk`` fixture and so runs twice, ``[tgt]`` and ``[cistern]``; what differs between
the two targets (LUN layout, vendor, how CHAP is switched on, which ABORT TASK answers are allowed) lives
in ``targets_under_test``.  Each test bounds itself with ``asyncio.wait_for``.  The reconnect test runs the
TCP connection through a small in-process proxy so it can cut the connection (RST both ways) in the
middle of a write stream.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Awaitable
from typing import Any

import pytest
from targets_under_test import DiskUnderTest

from cistern.initiator import (
    AuthenticationError,
    CommandAborted,
    IscsiSession,
    ReconnectPolicy,
    SessionFailed,
    connect,
    discover,
)
from cistern.initiator.cdb import write as write_cdb
from cistern.initiator.session import State
from cistern.wire.constants import TmfResponse
from cistern.wire.negotiation import NegotiationPolicy

pytestmark = pytest.mark.peers

INITIATOR = "iqn.2024-01.org.cistern.test:initiator"
BLOCK = 512


def run(coro: Awaitable[Any], timeout: float = 60.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def _open(disk: DiskUnderTest, **kwargs: Any) -> IscsiSession:
    kwargs.setdefault("initiator_name", INITIATOR)
    return await connect(disk.url, **kwargs)


def test_discovery_lists_the_target_and_portal(disk: DiskUnderTest) -> None:
    targets = run(discover(disk.portal_url, initiator_name=INITIATOR))
    assert [t.name for t in targets] == [disk.iqn]
    assert targets[0].addresses() == [("127.0.0.1", disk.port)]


def test_login_without_chap_then_inquiry_capacity_luns_nop_logout(disk: DiskUnderTest) -> None:
    async def body() -> None:
        session = await _open(disk)
        assert session.lun == disk.lun
        assert await session.report_luns() == disk.luns
        inq = await session.inquiry(disk.lun)
        assert inq.device_type == 0 and inq.vendor == disk.vendor  # type: ignore[union-attr]
        if disk.controller_lun is not None:
            controller = await session.inquiry(disk.controller_lun)
            assert controller.device_type == 0x0C  # type: ignore[union-attr]
        cap = await session.read_capacity(disk.lun)
        assert cap.size == disk.size and cap.block_size == BLOCK
        await session.test_unit_ready(disk.lun)
        rtt = await session.nop(b"ping-data")
        assert 0 < rtt < 5
        assert disk.holds_session(INITIATOR)
        await session.logout()
        assert session.state is State.CLOSED

    run(body())
    # the target has forgotten the session once logout returned
    assert disk.wait_session_gone(INITIATOR), f"{disk.kind} still holds the session after logout"


def test_chap_and_mutual_chap(disk: DiskUnderTest) -> None:
    disk.enable_chap("alice", "alicesecret12", mutual=("tgtname", "targetsecret1"))

    async def body() -> None:
        mutual = ("tgtname", "targetsecret1")
        # mutual CHAP is configured, so cistern requires it (a one-way login is refused); tgt allows either
        async with await _open(disk, chap=("alice", "alicesecret12"), mutual_chap=mutual) as s:
            assert (await s.read_capacity(disk.lun)).size == disk.size
        # the credentials may also come in the URL, libiscsi style
        async with await connect(
            disk.url_as("alice", "alicesecret12"), initiator_name=INITIATOR, mutual_chap=mutual
        ) as s:
            await s.test_unit_ready(disk.lun)
        if disk.kind == "cistern":
            with pytest.raises(AuthenticationError, match="authentication failed as 'alice'"):
                await _open(disk, chap=("alice", "alicesecret12"))
        with pytest.raises(AuthenticationError, match="authentication failed as 'alice'"):
            await _open(disk, chap=("alice", "wrongsecret99"))
        with pytest.raises(AuthenticationError):
            await _open(disk)  # CHAP required, none given

        async with await _open(disk, chap=("alice", "alicesecret12"), mutual_chap=mutual) as s:
            await s.test_unit_ready(disk.lun)
            data = os.urandom(8 * BLOCK)
            await s.write(disk.lun, 8, data)
            assert bytes(await s.read(disk.lun, 8, 8)) == data
        with pytest.raises(AuthenticationError, match="mutual"):
            await _open(disk, chap=("alice", "alicesecret12"), mutual_chap=("tgtname", "notthesecret"))

    run(body())


def test_digests_on_write_read_verify(disk: DiskUnderTest) -> None:
    disk.enable_digests()

    async def body() -> None:
        async with await _open(disk, header_digest=True, data_digest=True) as s:
            assert s.negotiated.header_digest and s.negotiated.data_digest
            data = os.urandom(1 << 20)
            await s.write(disk.lun, 100, data)
            assert bytes(await s.read(disk.lun, 100, len(data) // BLOCK)) == data
            assert await s.nop(b"digested") > 0

    run(body())


def test_64mib_random_write_then_verify_at_depth_32(disk: DiskUnderTest) -> None:
    chunk = 128 * 1024
    count = disk.size // chunk
    assert disk.size == 64 * 1024 * 1024
    disk.tune_for_streaming()

    async def body() -> None:
        policy = NegotiationPolicy(immediate_data=True, initial_r2t=False)
        async with await _open(disk, policy=policy) as s:
            rng = random.Random(4)
            order = list(range(count))
            rng.shuffle(order)
            pattern = {i: rng.randbytes(chunk) for i in order}
            sem = asyncio.Semaphore(32)
            peak = 0

            async def put(i: int) -> None:
                nonlocal peak
                async with sem:
                    peak = max(peak, s.in_flight)
                    await s.write(disk.lun, i * chunk // BLOCK, pattern[i])

            await asyncio.gather(*(put(i) for i in order))
            assert peak > 16  # really many commands in flight
            rng.shuffle(order)

            async def check(i: int) -> None:
                async with sem:
                    got = await s.read(disk.lun, i * chunk // BLOCK, chunk // BLOCK)
                    assert bytes(got) == pattern[i], f"chunk {i} differs"

            await asyncio.gather(*(check(i) for i in order))

    run(body(), timeout=180)


def test_abort_of_an_in_flight_command(disk: DiskUnderTest) -> None:
    """A WRITE whose R2T we leave unanswered is in flight on the target; ABORT TASK ends it.

    cistern must answer FUNCTION COMPLETE.  tgt 1.0.85 answers TASK DOES NOT EXIST for a task that has
    not reached its SCSI layer yet (a write still waiting for Data-Out), so both answers are accepted
    there.  Either way the command must fail with CommandAborted, its data must never reach the disk,
    and the session must carry on.
    """

    async def body() -> None:
        policy = NegotiationPolicy(immediate_data=False, initial_r2t=True)
        async with await _open(disk, policy=policy) as s:
            assert s.negotiated.initial_r2t and not s.negotiated.immediate_data
            await s.write(disk.lun, 0, b"\x11" * 65536)
            cmd = s.submit(disk.lun, write_cdb(0, 128), data_out=b"\x22" * 65536)
            cmd.hold_data_out = True  # fault injection: the R2T stays unanswered
            for _ in range(200):
                if cmd.held_r2ts:
                    break
                await asyncio.sleep(0.01)
            assert cmd.held_r2ts and not cmd.done, f"{disk.kind} sent no R2T"
            response = await s.abort_task(cmd)
            assert response in disk.abort_responses, TmfResponse(response).name
            with pytest.raises(CommandAborted):
                await cmd
            assert bytes(await s.read(disk.lun, 0, 128)) == b"\x11" * 65536
            await s.write(disk.lun, 0, b"\x33" * 512)
            assert bytes(await s.read(disk.lun, 0, 1)) == b"\x33" * 512
            assert await s.nop() > 0

    run(body())


class CuttingProxy:
    """A TCP relay to the target whose connections the test can cut (RST in both directions)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.pairs.append((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(1 << 16):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        for down, up in self.pairs:
            down.transport.abort()
            up.transport.abort()
        self.pairs.clear()

    async def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()


def test_connection_cut_mid_write_stream_reconnects_and_loses_nothing(disk: DiskUnderTest) -> None:
    chunk = 64 * 1024
    count = 256  # 16 MiB of writes

    async def body() -> None:
        proxy = CuttingProxy(disk.port)
        await proxy.start()
        reconnect = ReconnectPolicy(max_attempts=10, initial_delay=0.1)
        session = await connect(disk.url_via(proxy.port), initiator_name=INITIATOR, reconnect=reconnect)
        rng = random.Random(7)
        pattern = [rng.randbytes(chunk) for _ in range(count)]
        succeeded: list[int] = []
        sem = asyncio.Semaphore(16)

        async def put(i: int) -> None:
            async with sem:
                await session.write(disk.lun, i * chunk // BLOCK, pattern[i])
                succeeded.append(i)

        async def cutter() -> None:
            while len(succeeded) < count // 4:
                await asyncio.sleep(0.001)
            proxy.cut()
            while len(succeeded) < count // 2:
                await asyncio.sleep(0.001)
            proxy.cut()  # twice: the second cut hits the reinstated session

        results = await asyncio.gather(cutter(), *(put(i) for i in range(count)), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        assert not failures, failures[:3]
        assert session.reconnects == 2
        assert sorted(succeeded) == list(range(count))
        for i in succeeded:
            got = await session.read(disk.lun, i * chunk // BLOCK, chunk // BLOCK)
            assert bytes(got) == pattern[i], f"write {i} was reported successful but reads back wrong"
        await session.logout()
        await proxy.close()

    run(body(), timeout=120)


def test_dead_target_detected_by_nop_timeout_and_session_fails_clearly(disk: DiskUnderTest) -> None:
    """A target that stops answering (its process stopped with SIGSTOP) is caught by the NOP keep-alive;
    with reconnects exhausted the outstanding command fails with SessionFailed instead of hanging."""

    async def body() -> None:
        session = await _open(
            disk,
            nop_interval=0.3,
            nop_timeout=0.5,
            reconnect=ReconnectPolicy(max_attempts=2, initial_delay=0.1, max_delay=0.2),
            login_timeout=1.0,
            connect_timeout=1.0,
        )
        await session.test_unit_ready(disk.lun)
        disk.freeze()
        try:
            with pytest.raises(SessionFailed):
                await session.read(disk.lun, 0, 8)
        finally:
            disk.thaw()
        await session.close()

    run(body(), timeout=30)
