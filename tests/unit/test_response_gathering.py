"""Responses to large PDUs: gathered to the end of the event-loop iteration while that gathers several,
sent at once at depth 1 (target/pump.py, GATHER_ALONE / GATHER_SKIP)."""

from __future__ import annotations

import os

from test_target_harness import BLOCK, INITIATOR, IQN, LUN_SIZE, run, running_server

from cistern.initiator import connect
from cistern.target import pump as pump_mod


def test_depth_one_large_writes_are_answered_without_waiting_for_the_loop_iteration() -> None:
    """64 KiB writes one at a time: after GATHER_ALONE gathers that each sent one response, the responses
    leave from buffer_updated itself for the next GATHER_SKIP, and every block reads back as written."""
    size = 64 * 1024
    blocks = size // BLOCK
    count = 40

    async def main() -> None:
        async with running_server() as served:
            session = await connect(
                f"iscsi://127.0.0.1:{served.port}/{IQN}/0", initiator_name=INITIATOR, nop_interval=0
            )
            try:
                (conn,) = served.server.connections
                pump = conn.pump
                slots = LUN_SIZE // size
                last: dict[int, bytes] = {}
                skips: list[int] = []  # GATHER_SKIP counting down once gathering was given up
                for n in range(count):
                    last[n % slots] = data = os.urandom(size)
                    await session.write(0, (n % slots) * blocks, data)
                    skips.append(pump.gather_skip)
                # the first GATHER_ALONE writes were gathered, one response each: after the last of them
                # gathering stops and the following responses go at once, counting down GATHER_SKIP
                alone = pump_mod.GATHER_ALONE
                assert skips[: alone - 1] == [0] * (alone - 1), skips
                assert skips[alone - 1 :] == [pump_mod.GATHER_SKIP - k for k in range(count - alone + 1)], (
                    skips
                )
                for slot, data in last.items():
                    assert bytes(await session.read(0, slot * blocks, blocks)) == data
            finally:
                await session.logout()

    run(main())
