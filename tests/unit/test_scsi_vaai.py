"""VAAI and the remaining SBC commands: the LBA range lock, COMPARE AND WRITE (atomic against a racing
WRITE), ORWRITE(16), WRITE ATOMIC(16), READ DEFECT DATA, WRITE SAME Data-Out size, and the VPD/INQUIRY
data ESXi reads (3PC, Block Limits)."""

from __future__ import annotations

import asyncio
import struct

from cistern.scsi import DeviceServer, ITNexus, LogicalUnit, ScsiResult, ScsiTask, Status
from cistern.scsi.rangelock import RangeLock
from cistern.storage import MemoryStore

TARGET = "iqn.2026-11.org.cistern:t1"
A = ITNexus("iqn.2026-11.org.cistern:init-a", b"\x80\x00\x00\x00\x00\x01", TARGET)
BS = 512
NB = 2048


class PausableStore(MemoryStore):
    """A store whose next write can be held at a gate (to interleave commands deterministically)."""

    def __init__(self, size: int) -> None:
        super().__init__(size, block_size=BS)
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()
        self.writes: list[int] = []

    async def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(offset)
        if self.gate is not None:
            gate, self.gate = self.gate, None
            self.entered.set()
            await gate.wait()
        await super().write(offset, data)


def make(thin: bool = False, nb: int = NB) -> tuple[DeviceServer, PausableStore]:
    store = PausableStore(nb * BS)
    lu = LogicalUnit(store, lun=0, thin=thin)
    srv = DeviceServer({0: lu}, target_name=TARGET)
    return srv, store


def task(cdb: bytes, data: bytes | None = None) -> ScsiTask:
    return ScsiTask(nexus=A, lun=0, cdb=cdb.ljust(16, b"\0"), data_out=data, expected_length=len(data or b""))


def run(srv: DeviceServer, cdb: bytes, data: bytes | None = None) -> ScsiResult:
    return asyncio.run(srv.execute(task(cdb, data)))


def key_asc(res: ScsiResult) -> tuple[int, int, int]:
    assert res.status == Status.CHECK_CONDITION and res.sense is not None
    s = res.sense
    return (s[2] & 0xF, s[12], s[13])


def caw(lba: int, n: int, flags: int = 0) -> bytes:
    return struct.pack(">BBQ3xBBx", 0x89, flags, lba, n, 0)


def w16(lba: int, n: int, op: int = 0x8A, flags: int = 0) -> bytes:
    return struct.pack(">BBQIBx", op, flags, lba, n, 0)


def r16(lba: int, n: int) -> bytes:
    return struct.pack(">BBQIBx", 0x88, 0, lba, n, 0)


# -- range lock ----------------------------------------------------------------------------------


def test_range_lock_shared_never_waits_and_exclusive_waits_for_overlap_only() -> None:
    async def main() -> None:
        lock = RangeLock()
        a = lock.try_shared(0, 10)
        b = lock.try_shared(5, 15)
        assert a is not None and b is not None and lock.active == 2
        ex = asyncio.ensure_future(lock.exclusive(8, 9))
        await asyncio.sleep(0)
        assert not ex.done() and lock.waiting == 1
        assert lock.try_shared(20, 30) is not None  # no overlap: not blocked by the waiter
        assert lock.try_shared(8, 9) is None  # overlaps the waiting exclusive: queued behind it
        lock.release(a)
        await asyncio.sleep(0)
        assert not ex.done()
        lock.release(b)
        token = await ex
        assert (token.start, token.end, token.exclusive) == (8, 9, True)
        lock.release(token)
        assert lock.try_shared(8, 9) is not None

    asyncio.run(main())


def test_range_lock_cancelled_waiter_is_removed() -> None:
    async def main() -> None:
        lock = RangeLock()
        held = await lock.exclusive(0, 4)
        waiter = asyncio.ensure_future(lock.exclusive(2, 3))
        await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.sleep(0)
        assert lock.waiting == 0
        lock.release(held)
        assert lock.active == 0

    asyncio.run(main())


# -- COMPARE AND WRITE ---------------------------------------------------------------------------


def test_caw_writes_when_equal_and_reports_offset_on_miscompare() -> None:
    srv, _ = make()
    assert run(srv, w16(4, 2), b"A" * 2 * BS).good
    assert run(srv, caw(4, 2), b"A" * 2 * BS + b"B" * 2 * BS).good
    assert bytes(run(srv, r16(4, 2)).data_in or b"") == b"B" * 2 * BS
    verify = bytearray(b"B" * 2 * BS)
    verify[BS + 37] = ord("x")
    res = run(srv, caw(4, 2), bytes(verify) + b"C" * 2 * BS)
    assert key_asc(res) == (0x0E, 0x1D, 0x00)
    assert res.sense is not None and res.sense[0] & 0x80  # VALID
    assert struct.unpack_from(">I", res.sense, 3)[0] == BS + 37  # INFORMATION: offset in Data-Out
    assert bytes(run(srv, r16(4, 2)).data_in or b"") == b"B" * 2 * BS  # nothing written


def test_caw_field_checks() -> None:
    srv, _ = make()
    assert key_asc(run(srv, caw(0, 1), b"\0" * 4 * BS)) == (0x5, 0x24, 0x00)  # Data-Out != 2 x N blocks
    assert key_asc(run(srv, caw(NB, 1), b"\0" * 2 * BS)) == (0x5, 0x21, 0x00)
    assert run(srv, caw(0, 0)).good  # zero blocks: nothing to do
    assert key_asc(run(srv, caw(0, 1, flags=0x20), b"\0" * 2 * BS)) == (0x5, 0x24, 0x00)  # WRPROTECT
    assert run(srv, caw(0, 1, flags=0x18), b"\0" * 2 * BS).good  # DPO, FUA


def test_write_racing_caw_on_same_lbas_cannot_interleave() -> None:
    """A WRITE to the CAW's blocks issued while the CAW is between its compare and its write must land
    after the CAW's write (it waits on the range lock), never between them."""

    async def main() -> None:
        srv, store = make()
        assert (await srv.execute(task(w16(10, 1), b"A" * BS))).good
        gate = asyncio.Event()
        store.gate = gate  # the CAW's write blocks here, after its compare succeeded
        store.entered.clear()
        caw_run = asyncio.ensure_future(srv.execute(task(caw(10, 1), b"A" * BS + b"B" * BS)))
        await store.entered.wait()
        write_run = asyncio.ensure_future(srv.execute(task(w16(10, 1), b"W" * BS)))
        other_run = asyncio.ensure_future(srv.execute(task(w16(500, 1), b"O" * BS)))
        await asyncio.sleep(0.01)
        assert other_run.done() and other_run.result().good  # other LBAs are not held up
        assert not write_run.done()  # the racing WRITE waits for the CAW
        gate.set()
        assert (await caw_run).good
        assert (await write_run).good
        final = await srv.execute(task(r16(10, 1)))
        assert bytes(final.data_in or b"") == b"W" * BS  # the WRITE came after the CAW, whole

    asyncio.run(main())


def test_caw_waits_for_a_write_already_in_flight() -> None:
    async def main() -> None:
        srv, store = make()
        gate = asyncio.Event()
        store.gate = gate
        write_run = asyncio.ensure_future(srv.execute(task(w16(3, 1), b"N" * BS)))
        await store.entered.wait()
        caw_run = asyncio.ensure_future(srv.execute(task(caw(3, 1), b"N" * BS + b"Z" * BS)))
        await asyncio.sleep(0.01)
        assert not caw_run.done()  # must not compare against the half-done medium
        gate.set()
        assert (await write_run).good
        assert (await caw_run).good  # compared against the WRITE's data
        final = await srv.execute(task(r16(3, 1)))
        assert bytes(final.data_in or b"") == b"Z" * BS

    asyncio.run(main())


# -- ORWRITE, WRITE ATOMIC, READ DEFECT DATA, WRITE SAME -------------------------------------------


def test_orwrite_ors_into_medium() -> None:
    srv, _ = make()
    assert run(srv, w16(0, 2), b"\x0f" * 2 * BS).good
    assert run(srv, w16(0, 2, op=0x8B), b"\xa0" * 2 * BS).good
    assert bytes(run(srv, r16(0, 2)).data_in or b"") == b"\xaf" * 2 * BS
    assert run(srv, w16(NB, 0, op=0x8B)).good
    assert key_asc(run(srv, w16(NB + 1, 0, op=0x8B))) == (0x5, 0x21, 0x00)
    assert key_asc(run(srv, w16(0, 1, op=0x8B, flags=0x20), b"\0" * BS)) == (0x5, 0x24, 0x00)


def wa16(lba: int, n: int, flags: int = 0, boundary: int = 0) -> bytes:
    return struct.pack(">BBQHHBx", 0x9C, flags, lba, boundary, n, 0)


def test_write_atomic16_and_its_limits() -> None:
    srv, _ = make()
    assert run(srv, wa16(7, 3, flags=0x18), b"Q" * 3 * BS).good
    assert bytes(run(srv, r16(7, 3)).data_in or b"") == b"Q" * 3 * BS
    assert run(srv, wa16(0, 0)).good
    assert key_asc(run(srv, wa16(NB - 1, 2), b"\0" * 2 * BS)) == (0x5, 0x21, 0x00)
    assert key_asc(run(srv, wa16(0, 1, boundary=1), b"\0" * BS)) == (0x5, 0x24, 0x00)
    limits = bytes(run(srv, bytes((0x12, 1, 0xB0, 0, 0xFF, 0))).data_in or b"")
    max_atomic, align, gran = struct.unpack_from(">III", limits, 44)
    assert max_atomic == 8192 and align == 0 and gran == 0
    assert max_atomic <= struct.unpack_from(">I", limits, 8)[0]
    big, _ = make(nb=2 * max_atomic)
    too_long = wa16(0, max_atomic + 1)
    assert key_asc(run(big, too_long, b"\0" * (max_atomic + 1) * BS)) == (0x5, 0x24, 0x00)


def test_read_defect_data_is_an_empty_list() -> None:
    srv, _ = make()
    res = run(srv, bytes((0x37, 0, 0x18, 0, 0, 0, 0, 0, 32, 0)))
    assert res.good and bytes(res.data_in or b"") == bytes((0, 0x18, 0, 0))
    res = run(srv, struct.pack(">BBIIxx", 0xB7, 0x08, 0, 32))
    assert res.good and bytes(res.data_in or b"") == bytes((0, 0x08, 0, 0, 0, 0, 0, 0))


def test_write_same_needs_exactly_one_block_of_data_out() -> None:
    srv, _ = make()
    ws16 = struct.pack(">BBQIBx", 0x93, 0, 0, 4, 0)
    assert run(srv, ws16, b"s" * BS).good
    assert key_asc(run(srv, ws16, b"s" * 2 * BS)) == (0x5, 0x24, 0x00)
    assert run(srv, struct.pack(">BBQIBx", 0x93, 0x01, 0, 4, 0)).good  # NDOB: zeroes
    assert bytes(run(srv, r16(0, 4)).data_in or b"") == bytes(4 * BS)


# -- what ESXi reads -------------------------------------------------------------------------------


def test_inquiry_3pc_block_limits_and_supported_opcodes() -> None:
    srv, _ = make()
    std = bytes(run(srv, bytes((0x12, 0, 0, 0, 0xFF, 0))).data_in or b"")
    assert std[5] & 0x08  # 3PC
    limits = bytes(run(srv, bytes((0x12, 1, 0xB0, 0, 0xFF, 0))).data_in or b"")
    assert limits[5] == 255  # MAXIMUM COMPARE AND WRITE LENGTH
    assert struct.unpack_from(">Q", limits, 36)[0] > 0  # MAXIMUM WRITE SAME LENGTH
    pages = bytes(run(srv, bytes((0x12, 1, 0, 0, 0xFF, 0))).data_in or b"")
    assert 0x8F in pages[4:]
    tpc = bytes(run(srv, bytes((0x12, 1, 0x8F, 0, 0xFF, 0))).data_in or b"")
    assert tpc[1] == 0x8F and struct.unpack_from(">H", tpc, 4)[0] == 0x0001  # supported commands first
    for op, sa in ((0x89, None), (0x83, 0), (0x84, 3), (0x8B, None), (0x9C, None), (0x93, None)):
        opt = 1 if sa is None else 2
        rsoc = struct.pack(">BBBBHIxx", 0xA3, 0x0C, opt, op, sa or 0, 256)
        data = bytes(run(srv, rsoc).data_in or b"")
        assert data[1] & 0x07 == 0x03, hex(op)  # supported, per the standard
    rsoc = struct.pack(">BBBBHIxx", 0xA3, 0x0C, 1, 0x89, 0, 256)
    usage = bytes(run(srv, rsoc).data_in or b"")[4:]
    assert usage[1] & 0x18 == 0x18  # DPO/FUA honoured (DPOFUA=1 in MODE SENSE)
