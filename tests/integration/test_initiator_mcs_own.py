"""cistern.initiator with several connections per session against cistern's own target, through the fault
proxy (issue 7, "must show" 1 — the parts the target side supports today).

The target (``cistern serve``, one process for the module) allows MaxConnections=4, CRC32C digests and
ErrorRecoveryLevel 1 (its maximum; the initiator offers 2, the result is the minimum). So:

* MC/S: 4 connections, 64 KiB random writes and reads spread over all of them (counted per TCP connection
  by the proxy) and sha256-verified; a connection logged out (reason 1) on another CID and one added back
  while I/O runs;
* ERL 1 with CRC32C digests (the proxy parses BHS + header digest + data + padding + data digest): a
  corrupted Data-In is asked again with a Data SNACK, a dropped SCSI Response with a Status SNACK, a
  corrupted Data-Out is answered by the target's Reject and recovery R2T — data verified, no connection
  lost, no session reinstatement (the target's read data is acknowledged by DataACK SNACKs);
* a connection cut mid-transfer below ERL 2: the session is reinstated (RFC 7143 6.3.5, same ISID), all
  four connections come back, every command completes with the right data.

ERL 2 (TASK REASSIGN) against this target is in ``test_target_erl2.py`` (a target configured for ERL 2);
against LIO in ``test_initiator_lio.py``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator

import pytest
from cistern_proc import CisternTarget, memory_lun_target, verified_io
from faultproxy import TO_INITIATOR, TO_TARGET, FaultProxy

from cistern.initiator import connect
from cistern.wire.negotiation import NegotiationPolicy

pytestmark = pytest.mark.peers

IQN = "iqn.2026-11.org.cistern.test:mcs"
BLOCK = 512
CHUNK = 64 * 1024
OPCODE_DATA_OUT = 0x05
OPCODE_SCSI_RESPONSE = 0x21
OPCODE_DATA_IN = 0x25  # 64 KiB writes go as immediate data here: the cut hits a read
OPCODE_R2T = 0x31


@pytest.fixture(scope="module")
def target(request: pytest.FixtureRequest) -> Iterator[CisternTarget]:
    params = {
        "max_connections": 4,
        "header_digest": ["CRC32C", "None"],
        "data_digest": ["CRC32C", "None"],
        "error_recovery_level": 1,
        "max_outstanding_r2t": 4,
    }
    with memory_lun_target(request.module.__name__, IQN, params) as proc:
        yield proc


async def _io(s: object, rng: random.Random, lbas: list[int], rounds: int) -> None:
    await verified_io(s, rng, lbas, CHUNK, rounds)


@pytest.mark.parametrize("balance", ["round_robin", "least_queue_depth"])
def test_four_connections_spread_verified_io_add_and_remove(target: CisternTarget, balance: str) -> None:
    async def run() -> None:
        rng = random.Random(f"own-mcs-{balance}")
        async with FaultProxy("127.0.0.1", target.port) as proxy:
            s = await connect(
                f"iscsi://127.0.0.1:{proxy.port}/{IQN}/0",
                connections=4,
                load_balance=balance,
                nop_interval=0,
            )
            try:
                assert s.negotiated.max_connections == 4 and s.connection_ids == [0, 1, 2, 3]
                tsih = s.tsih
                lbas = [i * (CHUNK // BLOCK) for i in range(16)]
                await _io(s, rng, lbas, rounds=2)
                spread = [c.scsi_commands for c in proxy.conns]
                assert len(spread) == 4 and all(n >= 8 for n in spread), spread
                io = asyncio.ensure_future(_io(s, rng, lbas, rounds=3))
                await asyncio.sleep(0.02)
                await s.remove_connection(2, via=1)  # Logout reason 1 for CID 2, carried by CID 1
                before = [c.scsi_commands for c in proxy.conns]
                assert await s.add_connection() == 2
                await io
                await _io(s, rng, lbas, rounds=1)
                after = [
                    c.scsi_commands - (before[i] if i < len(before) else 0) for i, c in enumerate(proxy.conns)
                ]
                assert after[2] == 0 and after[-1] > 0, after
                assert s.tsih == tsih and s.reconnects == 0
            finally:
                await s.logout()

    asyncio.run(asyncio.wait_for(run(), 60))


def test_cut_connection_at_erl0_reinstates_the_session_without_losing_a_command(
    target: CisternTarget,
) -> None:
    async def run() -> None:
        rng = random.Random("own-mcs-cut")
        async with FaultProxy("127.0.0.1", target.port) as proxy:
            s = await connect(
                f"iscsi://127.0.0.1:{proxy.port}/{IQN}/0",
                connections=4,
                error_recovery_level=2,
                nop_interval=0,
            )
            try:
                assert s.negotiated.error_recovery_level == 1  # the target's limit wins (Min)
                proxy.cut_on(TO_INITIATOR, OPCODE_DATA_IN, skip=5)
                lbas = [20000 + i * (CHUNK // BLOCK) for i in range(16)]
                await _io(s, rng, lbas, rounds=2)
                assert [f[0] for f in proxy.fired] == ["cut"]
                assert s.reconnects == 1
                for _ in range(100):  # the extra connections are logged in again in the background
                    if len(s.connection_ids) == 4:
                        break
                    await asyncio.sleep(0.05)
                assert s.connection_ids == [0, 1, 2, 3]
                await _io(s, rng, lbas, rounds=1)
            finally:
                await s.logout()

    asyncio.run(asyncio.wait_for(run(), 60))


def test_erl1_data_snack_status_snack_and_recovery_r2t(target: CisternTarget) -> None:
    async def run() -> None:
        rng = random.Random("own-mcs-erl1")
        async with FaultProxy("127.0.0.1", target.port) as proxy:
            s = await connect(
                f"iscsi://127.0.0.1:{proxy.port}/{IQN}/0",
                connections=4,
                error_recovery_level=1,
                header_digest=True,
                data_digest=True,
                nop_interval=0,
            )
            try:
                n = s.negotiated
                assert n.data_digest and n.header_digest and n.error_recovery_level == 1
                tsih = s.tsih
                lbas = [40000 + i * (CHUNK // BLOCK) for i in range(8)]
                await _io(s, rng, lbas, rounds=1)
                proxy.corrupt(TO_INITIATOR, OPCODE_DATA_IN, conn=1)
                await _io(s, rng, lbas, rounds=1)
                assert [f[:3] for f in proxy.fired] == [("corrupt", 1, OPCODE_DATA_IN)]
                snacks = s.snacks
                assert snacks >= 1

                proxy.drop(TO_INITIATOR, OPCODE_SCSI_RESPONSE, conn=2)
                await _io(s, rng, lbas, rounds=2)
                assert [f[:3] for f in proxy.fired][1:] == [("drop", 2, OPCODE_SCSI_RESPONSE)]
                assert s.snacks > snacks

                # 256 KiB writes: 64 KiB immediate, the rest solicited by R2T as Data-Out
                big = {48000 + i * 512: rng.randbytes(256 * 1024) for i in range(4)}
                proxy.corrupt(TO_TARGET, OPCODE_DATA_OUT, conn=3)
                await asyncio.gather(*(s.write(0, lba, d) for lba, d in big.items()))
                got = await asyncio.gather(*(s.read(0, lba, 512) for lba in big))
                assert all(bytes(g) == big[lba] for g, lba in zip(got, big, strict=True))
                assert [f[:3] for f in proxy.fired][2:] == [("corrupt", 3, OPCODE_DATA_OUT)]
                assert s.tsih == tsih and s.reconnects == 0
                assert all(not c.closed for c in proxy.conns)
            finally:
                await s.logout()

    asyncio.run(asyncio.wait_for(run(), 60))


def test_erl1_lost_r2t_is_asked_again_with_an_r2t_snack(target: CisternTarget) -> None:
    """RFC 7143 11.16.1: an R2T that never arrives (here dropped by the proxy; a header digest error on it
    does the same at ERL 1) shows as an R2TSN gap when the next R2T comes; the initiator asks the run again
    with an R2T SNACK, answers the resent R2T, and the write completes with the right data."""

    async def run() -> None:
        rng = random.Random("own-r2t-snack")
        async with FaultProxy("127.0.0.1", target.port) as proxy:
            s = await connect(
                f"iscsi://127.0.0.1:{proxy.port}/{IQN}/0",
                error_recovery_level=1,
                header_digest=True,
                policy=NegotiationPolicy(
                    max_outstanding_r2t=4, max_burst_length=65536, first_burst_length=65536
                ),
                nop_interval=0,
            )
            try:
                n = s.negotiated
                assert (n.error_recovery_level, n.max_outstanding_r2t, n.max_burst_length) == (1, 4, 65536)
                data = rng.randbytes(512 * 1024)  # 64 KiB immediate, then 7 R2Ts of 64 KiB, 4 at a time
                await s.read(0, 56000, 1)  # the block size is learnt (READ CAPACITY) before counting
                snacks = s.snacks  # the target asks DataACK SNACKs for reads at ERL 1
                proxy.drop(TO_INITIATOR, OPCODE_R2T, conn=0)
                await s.write(0, 56000, data)
                assert [f[:3] for f in proxy.fired] == [("drop", 0, OPCODE_R2T)]
                assert s.snacks == snacks + 1 and s.reconnects == 0
                assert bytes(await s.read(0, 56000, len(data) // BLOCK)) == data
            finally:
                await s.logout()

    asyncio.run(asyncio.wait_for(run(), 60))
