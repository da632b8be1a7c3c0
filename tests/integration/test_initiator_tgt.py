"""cistern.initiator against tgt, a target we did not write (issue 4, "must show" 1 and 3).

Each test starts a private tgtd on 127.0.0.1 (``tgt_disk`` fixture: a 64 MiB RAM disk at LUN 1) and
bounds itself with ``asyncio.wait_for``.  The reconnect test runs the TCP connection through a small
in-process proxy so it can cut the connection (RST both ways) in the middle of a write stream.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Awaitable
from typing import Any

import peers
import pytest

from cistern.initiator import (
    AuthenticationError,
    CommandAborted,
    IscsiSession,
    ReconnectPolicy,
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
    return asyncio.run(asyncio.wait_for(coro, timeout))  # type: ignore[arg-type]


async def _open(disk: peers.TgtDisk, **kwargs: Any) -> IscsiSession:
    kwargs.setdefault("initiator_name", INITIATOR)
    return await connect(disk.url, **kwargs)


def test_discovery_lists_the_target_and_portal(tgt_disk: peers.TgtDisk) -> None:
    targets = run(discover(tgt_disk.portal_url, initiator_name=INITIATOR))
    assert [t.name for t in targets] == [tgt_disk.iqn]
    assert targets[0].addresses() == [("127.0.0.1", tgt_disk.tgt.port)]


def test_login_without_chap_then_inquiry_capacity_luns_nop_logout(tgt_disk: peers.TgtDisk) -> None:
    async def body() -> None:
        session = await _open(tgt_disk)
        assert session.lun == tgt_disk.lun
        assert await session.report_luns() == [0, 1]
        inq = await session.inquiry(tgt_disk.lun)
        assert inq.device_type == 0 and inq.vendor == "IET"  # type: ignore[union-attr]
        controller = await session.inquiry(0)
        assert controller.device_type == 0x0C  # type: ignore[union-attr]
        cap = await session.read_capacity(tgt_disk.lun)
        assert cap.size == tgt_disk.size and cap.block_size == BLOCK
        await session.test_unit_ready(tgt_disk.lun)
        rtt = await session.nop(b"ping-data")
        assert 0 < rtt < 5
        assert f"Initiator: {INITIATOR}" in tgt_disk.tgt.show()
        await session.logout()
        assert session.state is State.CLOSED

    run(body())
    # the target has forgotten the session once logout returned
    assert f"Initiator: {INITIATOR}" not in tgt_disk.tgt.show()


def test_chap_and_mutual_chap(tgt_disk: peers.TgtDisk) -> None:
    tgt_disk.tgt.add_chap(tgt_disk.tid, "alice", "alicesecret12")

    async def body() -> None:
        async with await _open(tgt_disk, chap=("alice", "alicesecret12")) as s:
            assert (await s.read_capacity(1)).size == tgt_disk.size
        # the credentials may also come in the URL, libiscsi style
        url = peers.iscsi_url("127.0.0.1", tgt_disk.tgt.port, tgt_disk.iqn, 1, "alice", "alicesecret12")
        async with await connect(url, initiator_name=INITIATOR) as s:
            await s.test_unit_ready(1)
        with pytest.raises(AuthenticationError, match="authentication failed as 'alice'"):
            await _open(tgt_disk, chap=("alice", "wrongsecret99"))
        with pytest.raises(AuthenticationError):
            await _open(tgt_disk)  # CHAP required, none given

        tgt_disk.tgt.add_chap(tgt_disk.tid, "tgtname", "targetsecret1", outgoing=True)
        mutual = ("tgtname", "targetsecret1")
        async with await _open(tgt_disk, chap=("alice", "alicesecret12"), mutual_chap=mutual) as s:
            await s.test_unit_ready(1)
        with pytest.raises(AuthenticationError, match="mutual"):
            await _open(tgt_disk, chap=("alice", "alicesecret12"), mutual_chap=("tgtname", "notthesecret"))

    run(body())


def test_digests_on_write_read_verify(tgt_disk: peers.TgtDisk) -> None:
    tgt_disk.tgt.set_param(tgt_disk.tid, "HeaderDigest", "CRC32C")
    tgt_disk.tgt.set_param(tgt_disk.tid, "DataDigest", "CRC32C")

    async def body() -> None:
        async with await _open(tgt_disk, header_digest=True, data_digest=True) as s:
            assert s.negotiated.header_digest and s.negotiated.data_digest
            data = os.urandom(1 << 20)
            await s.write(1, 100, data)
            assert bytes(await s.read(1, 100, len(data) // BLOCK)) == data

    run(body())


def test_64mib_random_write_then_verify_at_depth_32(tgt_disk: peers.TgtDisk) -> None:
    chunk = 128 * 1024
    count = tgt_disk.size // chunk
    tgt_disk.tgt.set_param(tgt_disk.tid, "MaxRecvDataSegmentLength", 262144)

    async def body() -> None:
        policy = NegotiationPolicy(immediate_data=True, initial_r2t=False)
        async with await _open(tgt_disk, policy=policy) as s:
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
                    await s.write(1, i * chunk // BLOCK, pattern[i])

            await asyncio.gather(*(put(i) for i in order))
            assert peak > 16  # really many commands in flight
            rng.shuffle(order)

            async def check(i: int) -> None:
                async with sem:
                    got = await s.read(1, i * chunk // BLOCK, chunk // BLOCK)
                    assert bytes(got) == pattern[i], f"chunk {i} differs"

            await asyncio.gather(*(check(i) for i in order))

    run(body(), timeout=180)


def test_abort_of_an_in_flight_command(tgt_disk: peers.TgtDisk) -> None:
    """A WRITE whose R2T we leave unanswered is in flight on tgt; ABORT TASK ends it.

    tgt 1.0.85 answers TASK_DOES_NOT_EXIST for a task that has not reached its SCSI layer yet (a write
    still waiting for Data-Out, or a read whose status is already queued), so both answers are accepted
    here; either way the command must fail with CommandAborted, its data must never reach the disk,
    and the session must carry on.  The FUNCTION_COMPLETE path is unit-tested against a fake target.
    """

    async def body() -> None:
        policy = NegotiationPolicy(immediate_data=False, initial_r2t=True)
        async with await _open(tgt_disk, policy=policy) as s:
            await s.write(1, 0, b"\x11" * 65536)
            cmd = s.submit(1, write_cdb(0, 128), data_out=b"\x22" * 65536)
            cmd.hold_data_out = True  # fault injection: the R2T stays unanswered
            for _ in range(200):
                if cmd.held_r2ts:
                    break
                await asyncio.sleep(0.01)
            assert cmd.held_r2ts and not cmd.done, "tgt sent no R2T"
            response = await s.abort_task(cmd)
            assert response in (TmfResponse.FUNCTION_COMPLETE, TmfResponse.TASK_DOES_NOT_EXIST)
            with pytest.raises(CommandAborted):
                await cmd
            assert bytes(await s.read(1, 0, 128)) == b"\x11" * 65536
            await s.write(1, 0, b"\x33" * 512)
            assert bytes(await s.read(1, 0, 1)) == b"\x33" * 512

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


def test_connection_cut_mid_write_stream_reconnects_and_loses_nothing(tgt_disk: peers.TgtDisk) -> None:
    chunk = 64 * 1024
    count = 512  # 32 MiB of writes

    async def body() -> None:
        proxy = CuttingProxy(tgt_disk.tgt.port)
        await proxy.start()
        url = peers.iscsi_url("127.0.0.1", proxy.port, tgt_disk.iqn, 1)
        reconnect = ReconnectPolicy(max_attempts=10, initial_delay=0.1)
        session = await connect(url, initiator_name=INITIATOR, reconnect=reconnect)
        rng = random.Random(7)
        pattern = [rng.randbytes(chunk) for _ in range(count)]
        succeeded: list[int] = []
        sem = asyncio.Semaphore(16)

        async def put(i: int) -> None:
            async with sem:
                await session.write(1, i * chunk // BLOCK, pattern[i])
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
            got = await session.read(1, i * chunk // BLOCK, chunk // BLOCK)
            assert bytes(got) == pattern[i], f"write {i} was reported successful but reads back wrong"
        await session.logout()
        await proxy.close()

    run(body(), timeout=120)


def test_dead_target_detected_by_nop_timeout_and_session_fails_clearly(tgt_disk: peers.TgtDisk) -> None:
    """A target that stops answering (tgtd stopped with SIGSTOP) is caught by the NOP keep-alive; with
    reconnects exhausted the outstanding command fails with SessionFailed instead of hanging."""
    from cistern.initiator import SessionFailed

    async def body() -> None:
        session = await _open(
            tgt_disk,
            nop_interval=0.3,
            nop_timeout=0.5,
            reconnect=ReconnectPolicy(max_attempts=2, initial_delay=0.1, max_delay=0.2),
            login_timeout=1.0,
            connect_timeout=1.0,
        )
        await session.test_unit_ready(1)
        os.kill(tgt_disk.tgt.pid, 19)  # SIGSTOP
        try:
            with pytest.raises(SessionFailed):
                await session.read(1, 0, 8)
        finally:
            os.kill(tgt_disk.tgt.pid, 18)  # SIGCONT
        await session.close()

    run(body(), timeout=30)
