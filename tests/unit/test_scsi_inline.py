"""READ and WRITE answered without a coroutine when the store does not wait (scsi/sbc.py,
DeviceServer.submit), and the range lock a WRITE takes released exactly once on every way it ends: done
at once, handed to the coroutine when the store declines, after waiting for a contended range, and when
the store fails."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable

from cistern.scsi import DeviceServer, ITNexus, LogicalUnit, ScsiResult, ScsiTask, Status
from cistern.storage import MemoryStore

TARGET = "iqn.2026-11.org.cistern:t1"
A = ITNexus("iqn.2026-11.org.cistern:init-a", b"\x80\x00\x00\x00\x00\x01", TARGET)
BS = 512
NB = 256


class InlineStore(MemoryStore):
    """A memory store that answers at once, as the file store does from the page cache; ``mode`` makes
    its inline writes decline or fail."""

    def __init__(self, size: int) -> None:
        super().__init__(size, block_size=BS)
        self.mode = "inline"
        self.waited = 0  # writes that went the awaited way

    def read_now(self, offset: int, length: int) -> bytes | bytearray | None:
        return self._buffer()[offset : offset + length].tobytes()

    def write_now(self, offset: int, data: bytes | bytearray | memoryview) -> bool:
        if self.mode == "fail":
            raise OSError(5, "Input/output error")
        if self.mode == "decline":
            return False
        self._buffer()[offset : offset + len(data)] = data
        return True

    async def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        self.waited += 1
        await asyncio.sleep(0)
        await super().write(offset, data)


def make() -> tuple[DeviceServer, LogicalUnit, InlineStore]:
    store = InlineStore(NB * BS)
    lu = LogicalUnit(store, lun=0)
    return DeviceServer({0: lu}, target_name=TARGET), lu, store


def task(cdb: bytes, data: bytes | None = None) -> ScsiTask:
    return ScsiTask(nexus=A, lun=0, cdb=cdb.ljust(16, b"\0"), data_out=data, expected_length=len(data or b""))


def r10(lba: int, n: int) -> bytes:
    return struct.pack(">BBIBHB", 0x28, 0, lba, 0, n, 0)


def w10(lba: int, n: int) -> bytes:
    return struct.pack(">BBIBHB", 0x2A, 0, lba, 0, n, 0)


def settle(step: ScsiResult | Awaitable[ScsiResult]) -> ScsiResult:
    """The result now, or the awaitable's (compiled coroutines are awaitables, not ``inspect`` coroutines)."""
    if isinstance(step, ScsiResult):
        return step

    async def wait() -> ScsiResult:
        return await step

    return asyncio.run(wait())


def test_read_and_write_from_a_store_that_does_not_wait_answer_at_once() -> None:
    srv, lu, store = make()
    srv.nexus_added(A)
    settle(srv.submit(task(r10(0, 1))))  # the power-on unit attention
    data = bytes(range(256)) * 4
    written = srv.submit(task(w10(8, 2), data))
    assert isinstance(written, ScsiResult) and written.status == Status.GOOD
    assert lu.range_lock.active == 0 and store.waited == 0
    read = srv.submit(task(r10(8, 2)))
    assert isinstance(read, ScsiResult) and read.status == Status.GOOD
    assert bytes(read.data_in or b"") == data
    assert lu.stats.write_commands == 1 and lu.stats.read_commands == 2 and lu.stats.in_flight == 0


def test_a_write_the_store_declines_waits_and_releases_its_range_once() -> None:
    srv, lu, store = make()
    store.mode = "decline"
    data = b"\x5a" * BS
    step = srv.submit(task(w10(3, 1), data))
    assert not isinstance(step, ScsiResult)
    assert lu.range_lock.active == 1  # held by the waiting write
    result = settle(step)
    assert result.status == Status.GOOD and store.waited == 1
    assert lu.range_lock.active == 0
    assert settle(srv.submit(task(r10(3, 1)))).data_in == data


def test_a_write_to_a_contended_range_waits_for_it() -> None:
    srv, lu, _ = make()

    async def main() -> None:
        exclusive = await lu.range_lock.exclusive(0, 16)  # as COMPARE AND WRITE holds it
        step = srv.submit(task(w10(4, 1), b"\x11" * BS))
        assert not isinstance(step, ScsiResult)
        pending = asyncio.ensure_future(step)
        await asyncio.sleep(0)
        assert not pending.done() and lu.range_lock.waiting == 1
        lu.range_lock.release(exclusive)
        assert (await pending).status == Status.GOOD
        assert lu.range_lock.active == 0 and lu.range_lock.waiting == 0

    asyncio.run(main())


def test_a_failing_store_answers_medium_error_and_releases_the_range() -> None:
    srv, lu, store = make()
    store.mode = "fail"
    result = srv.submit(task(w10(5, 1), b"\x22" * BS))
    assert isinstance(result, ScsiResult) and result.status == Status.CHECK_CONDITION
    sense = result.sense or b""
    assert (sense[2] & 0x0F, sense[12], sense[13]) == (0x03, 0x0C, 0x00)  # MEDIUM ERROR, WRITE ERROR
    assert lu.range_lock.active == 0
