"""ErrorRecoveryLevel 2 on cistern's target (RFC 7143 6.3.4, 7.2.2, 11.5.1 TASK REASSIGN), exercised by
cistern's initiator through the fault proxy (issue 7 "must show" 1): a connection of a 4-connection session
is cut mid-transfer; the initiator waits DefaultTime2Wait, logs a connection in again (same CID, or a new
CID after a Logout reason 2 on a surviving connection) and reassigns the cut connection's tasks; the target
resends what was lost (Data-In from ExpDataSN and the status, R2Ts for write data not received).

Pass = every command completes with sha256-verified data, the TSIH is unchanged, no session reinstatement,
one connection recovery.  Writes go with R2Ts (ImmediateData=No, InitialR2T=Yes, MaxBurstLength 16 KiB: four
bursts per 64 KiB write), so a cut on a Data-Out leaves writes half received.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator

import pytest
from cistern_proc import CisternTarget, memory_lun_target, verified_io
from faultproxy import TO_INITIATOR, TO_TARGET, FaultProxy

from cistern.initiator import connect

pytestmark = pytest.mark.peers

IQN = "iqn.2026-11.org.cistern.test:erl2"
BLOCK = 512
CHUNK = 64 * 1024
OPCODE_DATA_OUT = 0x05
OPCODE_DATA_IN = 0x25


@pytest.fixture(scope="module")
def target(request: pytest.FixtureRequest) -> Iterator[CisternTarget]:
    params = {
        "max_connections": 4,
        "error_recovery_level": 2,
        "default_time2wait": 0,
        "default_time2retain": 20,
        "immediate_data": False,
        "initial_r2t": True,
        "max_burst_length": 16384,
        "first_burst_length": 16384,
    }
    with memory_lun_target(request.module.__name__, IQN, params) as proc:
        yield proc


async def _io(s: object, rng: random.Random, lbas: list[int]) -> None:
    await verified_io(s, rng, lbas, CHUNK)


def _reassigned(target: CisternTarget) -> int:
    return target.log_path.read_text(errors="replace").count("reassigned from CID")


@pytest.mark.parametrize(
    ("recovery", "direction", "opcode", "resumed"),
    [
        # mid-write: the connection reinstated (same CID); the target asks again for the data not received
        ("reinstate", TO_TARGET, OPCODE_DATA_OUT, True),
        # mid-write: Logout reason 2 on a surviving connection, then a new CID takes the tasks over
        ("new_cid", TO_TARGET, OPCODE_DATA_OUT, True),
        # mid-read: the memory LUN's reads had completed (status sent, not kept): TASK REASSIGN answers
        # "task does not exist" and the initiator issues them again
        ("new_cid", TO_INITIATOR, OPCODE_DATA_IN, False),
    ],
)
def test_connection_cut_mid_transfer_is_recovered_at_erl2(
    target: CisternTarget, recovery: str, direction: str, opcode: int, resumed: bool
) -> None:
    async def run() -> None:
        rng = random.Random(f"own-erl2-{recovery}-{opcode}")
        before = _reassigned(target)
        async with FaultProxy("127.0.0.1", target.port) as proxy:
            s = await connect(
                f"iscsi://127.0.0.1:{proxy.port}/{IQN}/0",
                connections=4,
                error_recovery_level=2,
                connection_recovery=recovery,
                nop_interval=0,
            )
            try:
                assert s.negotiated.error_recovery_level == 2
                tsih = s.tsih
                lbas = [i * (CHUNK // BLOCK) for i in range(16)]
                await _io(s, rng, lbas)
                proxy.cut_on(direction, opcode, skip=9)
                await _io(s, rng, lbas)
                await _io(s, rng, lbas)
                assert [f[0] for f in proxy.fired] == ["cut"]
                assert s.tsih == tsih and s.reconnects == 0  # no session reinstatement
                assert s.connection_recoveries == 1
                await _io(s, rng, lbas)
            finally:
                await s.logout()
        if resumed:
            assert (
                _reassigned(target) > before
            )  # the target took tasks over, not only the initiator's reissue

    asyncio.run(asyncio.wait_for(run(), 90))
