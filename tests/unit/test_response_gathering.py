"""Responses to large PDUs: gathered to the end of the event-loop iteration while that gathers several,
sent at once at depth 1 (target/connection.py, GATHER_ALONE / GATHER_SKIP)."""

from __future__ import annotations

import os

from test_target_harness import BLOCK, INITIATOR, IQN, LUN_SIZE, run, running_server

from cistern.initiator import connect
from cistern.target import connection as conn_mod


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
                gathers: list[int] = []
                flush_gathered = conn._flush_gathered

                def counting() -> None:
                    gathers.append(len(conn._outbox()))
                    flush_gathered()

                conn._flush_gathered = counting  # type: ignore[method-assign]
                slots = LUN_SIZE // size
                last: dict[int, bytes] = {}
                for n in range(count):
                    last[n % slots] = data = os.urandom(size)
                    await session.write(0, (n % slots) * blocks, data)
                # the first GATHER_ALONE writes were gathered (one response each), the rest went at once
                assert len(gathers) == conn_mod.GATHER_ALONE, gathers
                assert all(n == 1 for n in gathers)
                assert conn._gather_skip == conn_mod.GATHER_SKIP - (count - conn_mod.GATHER_ALONE)
                for slot, data in last.items():
                    assert bytes(await session.read(0, slot * blocks, blocks)) == data
            finally:
                await session.logout()

    run(main())
