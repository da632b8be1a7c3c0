"""Memory for data buffers: recycled write buffers (cistern.wire.buffers), reused only when nobody else holds
them and never leaking one command's data into another's; the heap thresholds of cistern.heap.
"""

from __future__ import annotations

import asyncio
import os

from test_target_harness import BLOCK, INITIATOR, IQN, run, running_server

from cistern.initiator import connect
from cistern.wire.buffers import MIN_POOLED, WriteBufferPool


def test_a_buffer_nobody_else_holds_is_reused() -> None:
    pool = WriteBufferPool(limit=4 * MIN_POOLED)
    buf = pool.take(MIN_POOLED)
    first = id(buf)
    pool.give(buf)
    del buf
    assert pool.held == MIN_POOLED
    again = pool.take(MIN_POOLED)
    assert id(again) == first and pool.reused == 1 and pool.held == 0


def test_a_buffer_still_seen_elsewhere_is_never_handed_out_again() -> None:
    pool = WriteBufferPool()
    buf = pool.take(MIN_POOLED)
    view = memoryview(buf)[10:20]  # e.g. a store that kept a view of the data it was given
    pool.give(buf)
    kept = id(buf)
    del buf
    assert pool.held == MIN_POOLED  # retired: checked at the next take
    fresh = pool.take(MIN_POOLED)
    assert id(fresh) != kept and pool.reused == 0 and pool.held == 0
    fresh[:] = b"\xff" * MIN_POOLED
    assert bytes(view) == bytes(10)  # the holder's data never changes under it


def test_small_buffers_and_buffers_over_the_limit_are_not_kept() -> None:
    pool = WriteBufferPool(limit=2 * MIN_POOLED)
    pool.give(pool.take(MIN_POOLED - 1))
    assert pool.held == 0
    for _ in range(3):
        pool.give(bytearray(MIN_POOLED))
    assert pool.held == 2 * MIN_POOLED  # the third would have exceeded the limit
    pool.clear()
    assert pool.held == 0 and pool.take(MIN_POOLED) == bytearray(MIN_POOLED)


def test_large_writes_in_flight_reuse_buffers_and_read_back_intact() -> None:
    """128 KiB writes, four in flight, twice over the same blocks with new data: the target's write buffers
    come back for reuse (compiled and pure paths alike) and every block reads back as last written."""
    from cistern.wire.buffers import WRITE_BUFFERS

    size = 128 * 1024
    blocks = size // BLOCK

    async def main() -> None:
        async with running_server() as served:
            session = await connect(
                f"iscsi://127.0.0.1:{served.port}/{IQN}/0", initiator_name=INITIATOR, nop_interval=0
            )
            try:
                before = WRITE_BUFFERS.reused
                for _round in range(2):
                    payloads = [os.urandom(size) for _ in range(8)]
                    for start in range(0, 8, 4):
                        await asyncio.gather(
                            *(session.write(0, n * blocks, payloads[n]) for n in range(start, start + 4))
                        )
                    for n, data in enumerate(payloads):
                        assert bytes(await session.read(0, n * blocks, blocks)) == data
                assert WRITE_BUFFERS.reused - before >= 8
            finally:
                await session.logout()

    run(main())


def test_the_serving_process_keeps_freed_heap_memory() -> None:
    """glibc (Debian's C library) accepts the heap thresholds `cistern serve` sets at start-up."""
    from cistern.heap import keep_freed_memory

    assert keep_freed_memory()
