"""RAID array in-process: layouts, degraded I/O under injected member faults, rebuild, scrub, bitmap.

Fault matrix (issue 10, must-show 1, the fast in-process part): for RAID 0/1/5/6/10 with 3-8 members a
seeded pattern is written by concurrent writers while members fail at random points (EIO, vanished,
stalled past the member timeout) — one member for RAID 1/5/10, two for RAID 6; every acknowledged write
reads back (sha256 per region); spares rebuild the failed roles and ``check`` finds 0 mismatches.
"""

from __future__ import annotations

import asyncio
import hashlib
import random

import numpy as np
import pytest

from cistern.storage.faulty import FaultyStore
from cistern.storage.memory import MemoryStore
from cistern.storage.raid import RaidConfigError, RaidStore
from cistern.storage.raid.superblock import DATA_OFFSET

CHUNK = 4096 * 4
MEMBER = DATA_OFFSET + 64 * CHUNK


def _members(n: int, size: int = MEMBER) -> list[tuple[str, FaultyStore]]:
    return [(f"m{i}", FaultyStore(MemoryStore(size), stall_seconds=5.0)) for i in range(n)]


async def _assemble(level: int, members, spares=(), **kw) -> RaidStore:
    kw.setdefault("chunk", CHUNK)
    kw.setdefault("member_timeout", 0.3)
    kw.setdefault("assume_clean", True)
    kw.setdefault("bitmap_region", 4 * CHUNK)
    arr = await RaidStore.assemble(list(members), list(spares), level=level, **kw)
    arr.start_background()
    return arr


def _digests(buf: bytes | bytearray, region: int = 64 * 1024) -> list[str]:
    return [hashlib.sha256(buf[i:i + region]).hexdigest() for i in range(0, len(buf), region)]


async def _workload(arr: RaidStore, model: bytearray, seed: int, faults: list[tuple[int, FaultyStore, str]],
                    writers: int = 4, writes: int = 60) -> int:
    """Concurrent writers on disjoint slices; ``faults`` fire after the given count of acked writes."""
    rng = random.Random(seed)
    size = arr.size
    slice_len = size // writers // 4096 * 4096
    acked = 0
    failed = 0

    async def writer(w: int) -> None:
        nonlocal acked, failed
        wr = random.Random(seed * 100 + w)
        base = w * slice_len
        for _ in range(writes):
            blocks = wr.choice([1, 1, 2, 4, 9, 16])
            off = base + wr.randrange(0, slice_len // 4096 - blocks + 1) * 4096
            data = wr.randbytes(blocks * 4096)
            try:
                await arr.write(off, data)
            except OSError:
                failed += 1
                continue
            model[off:off + len(data)] = data
            acked += 1
            for at, store, mode in list(faults):
                if acked >= at:
                    faults.remove((at, store, mode))
                    store.arm(mode)

    del rng
    await asyncio.gather(*(writer(w) for w in range(writers)))
    assert failed == 0, f"{failed} writes failed while the array had redundancy left"
    return acked


async def _read_all(arr: RaidStore) -> bytearray:
    out = bytearray(arr.size)
    step = 256 * 1024
    for off in range(0, arr.size, step):
        await arr.read_into(off, memoryview(out)[off:off + step])
    return out


async def _wait_idle(arr: RaidStore, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        rebuilding = any(m is not None and m.state == "rebuilding" for m in arr.slots)
        if arr.sync.action == "idle" and not rebuilding and not (arr.degraded and arr.spares):
            return
        await asyncio.sleep(0.02)


MATRIX = [
    (0, 3, 0), (0, 5, 0),
    (1, 3, 1), (1, 2, 1),
    (5, 3, 1), (5, 5, 1), (5, 8, 1),
    (6, 4, 2), (6, 5, 2), (6, 8, 2),
    (10, 4, 1), (10, 5, 1), (10, 6, 1),
]


@pytest.mark.parametrize(("level", "n", "nfail"), MATRIX)
def test_fault_matrix(level: int, n: int, nfail: int) -> None:
    async def run() -> None:
        seed = level * 100 + n
        rng = random.Random(seed)
        members = _members(n)
        spares = _members(nfail, MEMBER) if nfail else []
        spares = [(f"s{i}", s) for i, (_, s) in enumerate(spares)]
        arr = await _assemble(level, members, spares, speed_max=0)
        model = bytearray(arr.size)
        victims = rng.sample(range(n), nfail)
        if level == 10 and nfail == 1:
            victims = [rng.randrange(n)]
        modes = ["eio", "vanish", "stall"]
        faults = [(rng.randrange(10, 150), members[v][1], modes[(seed + i) % 3]) for i, v in enumerate(victims)]
        acked = await _workload(arr, model, seed, faults)
        assert acked == 240
        assert _digests(await _read_all(arr)) == _digests(model)
        for v in victims:  # the faulty members were noticed and (with spares) rebuilt
            assert members[v][1].failed_ops > 0 or members[v][1].mode is None
        await _wait_idle(arr)
        st = arr.status()
        assert st["state"] == "clean", st
        for v in victims:
            assert arr.slots[v] is not None and arr.slots[v].name.startswith("s")
        assert _digests(await _read_all(arr)) == _digests(model)
        if level != 0:
            prog = await arr.check()
            assert prog.mismatches == 0
        await arr.close()

    asyncio.run(run())


def test_raid6_second_spare_added_later_and_two_failure_reads() -> None:
    async def run() -> None:
        members = _members(5)
        arr = await _assemble(6, members)
        model = bytearray(arr.size)
        await _workload(arr, model, 7, [(30, members[1][1], "eio"), (90, members[3][1], "vanish")])
        assert arr.state == "degraded"
        assert _digests(await _read_all(arr)) == _digests(model)
        s0 = MemoryStore(MEMBER)
        await arr.add_spare("new0", s0)
        await _wait_idle(arr)
        await arr.add_spare("new1", MemoryStore(MEMBER))
        await _wait_idle(arr)
        assert arr.state == "clean", arr.status()
        assert (await arr.check()).mismatches == 0
        assert _digests(await _read_all(arr)) == _digests(model)
        await arr.close()

    asyncio.run(run())


def test_md_left_symmetric_layout_on_members() -> None:
    """The bytes land where md puts them: RAID 5 stripe 0 parity on the last member, data from member 0;
    RAID 6 stripe 0 P on member n-1, Q on member 0, data from member 1."""
    async def run() -> None:
        for level, n in ((5, 4), (6, 5)):
            members = [(f"m{i}", MemoryStore(MEMBER)) for i in range(n)]
            arr = await RaidStore.assemble(members, level=level, chunk=CHUNK, assume_clean=True)
            k = n - (1 if level == 5 else 2)
            data = bytes(random.Random(level).randbytes(k * CHUNK))
            await arr.write(0, data)

            def chunk_of(i: int, members=members) -> bytes:
                return bytes(members[i][1]._buffer()[DATA_OFFSET:DATA_OFFSET + CHUNK])

            chunks = [np.frombuffer(data[j * CHUNK:(j + 1) * CHUNK], dtype=np.uint8) for j in range(k)]
            p = np.bitwise_xor.reduce(np.stack(chunks))
            assert chunk_of(n - 1) == p.tobytes()
            first_data = 0 if level == 5 else 1
            for j in range(k):
                assert chunk_of(first_data + j) == data[j * CHUNK:(j + 1) * CHUNK]
            await arr.close()

    asyncio.run(run())


def test_assembly_any_order_and_stale_member_refused() -> None:
    async def run() -> None:
        stores = [MemoryStore(MEMBER) for _ in range(4)]
        members = [(f"m{i}", s) for i, s in enumerate(stores)]
        arr = await RaidStore.assemble(members, level=5, chunk=CHUNK, assume_clean=True)
        await arr.write(0, b"a" * 8192)
        arr._closed = True  # keep the stores open: "restart" over the same memory
        await arr._flush_members()
        shuffled = [members[2], members[0], members[3], members[1]]
        arr2 = await RaidStore.assemble(shuffled, level=5, chunk=CHUNK)
        assert [m.name for m in arr2.slots] == ["m0", "m1", "m2", "m3"]  # roles from the superblocks
        buf = bytearray(8192)
        await arr2.read_into(0, memoryview(buf))
        assert buf == b"a" * 8192
        # fail m1, write on, then assemble again: m1's superblock is older -> refused
        arr2._mark_failed(arr2.slots[1], "test")
        await arr2.write_superblocks()
        await arr2.write(0, b"b" * 8192)
        arr2._closed = True
        arr3 = await RaidStore.assemble(members, level=5, chunk=CHUNK)
        assert arr3.slots[1] is None and [m.name for m in arr3.stale] == ["m1"]
        assert arr3.state == "degraded"
        await arr3.read_into(0, memoryview(buf))
        assert buf == b"b" * 8192
        with pytest.raises(RaidConfigError, match="RAID 5 with chunk"):
            await RaidStore.assemble(members, level=6, chunk=CHUNK)
        other = [(f"x{i}", MemoryStore(MEMBER)) for i in range(3)]
        x = await RaidStore.assemble(other, level=5, chunk=CHUNK, assume_clean=True)
        x._closed = True
        with pytest.raises(RaidConfigError, match="different arrays"):
            await RaidStore.assemble([members[0], members[2], other[0], members[3]], level=5, chunk=CHUNK)

    asyncio.run(run())


@pytest.mark.parametrize(("level", "n"), [(5, 4), (6, 5), (1, 3), (10, 4)])
def test_corruption_check_and_repair(level: int, n: int) -> None:
    """One chunk corrupted on one member: check reports exactly that stripe; RAID 6 repair names the
    member and restores its data; RAID 5 repair rewrites parity; mirrors copy the first copy."""
    async def run() -> None:
        stores = [MemoryStore(MEMBER) for _ in range(n)]
        arr = await RaidStore.assemble([(f"m{i}", s) for i, s in enumerate(stores)], level=level, chunk=CHUNK,
                                       assume_clean=True)
        data = random.Random(5).randbytes(arr.size)
        await arr.write(0, data)
        stripe = 11
        g = arr.geometry
        victim = g.stripe_roles(stripe)[1] if g.parity else 1
        row = stripe if level != 10 else g.copies(stripe)[1][1]
        if level == 10:
            victim = g.copies(stripe)[1][0]
        mm = stores[victim]._buffer()
        at = DATA_OFFSET + row * CHUNK + 100
        mm[at:at + 50] = bytes(50)
        prog = await arr.check()
        assert prog.mismatches == 1 and prog.mismatch_stripes == [stripe]
        prog = await arr.repair()
        if level == 6:
            assert any(f"member {victim} (m{victim})" in what for _, what in prog.repaired), prog.repaired
        if level == 5:
            assert prog.repaired == [(stripe, f"P on member {g.stripe_roles(stripe)[-1]}")]
        assert (await arr.check()).mismatches == 0
        out = bytearray(arr.size)
        await arr.read_into(0, memoryview(out))
        if level == 5:
            assert out != data  # RAID 5 cannot know which chunk was wrong: parity now follows the data
        else:
            assert out == data  # RAID 6 restored the member's data; mirrors copied the good copy
        await arr.close()

    asyncio.run(run())


def test_bitmap_readd_resyncs_only_dirty_regions() -> None:
    async def run() -> None:
        members = _members(5, DATA_OFFSET + 256 * CHUNK)
        arr = await _assemble(6, members, bitmap_region=8 * CHUNK)
        model = bytearray(arr.size)
        await arr.write(0, bytes(random.Random(1).randbytes(arr.size)))
        model[:] = bytearray(await _read_all(arr))
        await asyncio.sleep(2.0)  # bitmap daemon clears once writes settle
        assert not any(arr.bitmap) and arr.clean
        members[2][1].arm("vanish")
        rng = random.Random(2)
        for _ in range(20):  # about 1 % of the array
            off = rng.randrange(0, 64) * 4096
            d = rng.randbytes(4096)
            await arr.write(off, d)
            model[off:off + 4096] = d
        assert arr.slots[2].state == "faulty"
        members[2][1].heal()
        copied = await arr.re_add("m2", members[2][1])
        assert 0 < copied <= 0.05 * arr.geometry.member_size, copied
        assert arr.state == "clean" and (await arr.check()).mismatches == 0
        # the re-added member really holds its role: fail two others and read everything
        members[0][1].arm("eio")
        members[4][1].arm("eio")
        assert _digests(await _read_all(arr)) == _digests(model)
        await arr.close()

    asyncio.run(run())


def test_rebuild_resumes_after_restart() -> None:
    async def run() -> None:
        stores = [MemoryStore(DATA_OFFSET + 512 * CHUNK) for _ in range(4)]
        members = [(f"m{i}", s) for i, s in enumerate(stores)]
        spare = ("s0", MemoryStore(DATA_OFFSET + 512 * CHUNK))
        arr = await RaidStore.assemble(members, [spare], level=5, chunk=CHUNK, assume_clean=True,
                                       speed_max=2 << 20)
        data = random.Random(3).randbytes(arr.size)
        await arr.write(0, data)
        arr._mark_failed(arr.slots[3], "test")
        arr.start_background()
        await asyncio.sleep(1.6)
        part = arr.slots[3].recovery_offset
        assert arr.slots[3].name == "s0" and 0 < part < arr.geometry.member_size
        arr._closed = True  # "crash": tasks stop, stores stay
        for t in list(arr._tasks):
            t.cancel()
        await asyncio.sleep(0.05)
        arr2 = await RaidStore.assemble([*members[:3], spare], [], level=5, chunk=CHUNK)
        assert arr2.slots[3].state == "rebuilding" and arr2.slots[3].recovery_offset > 0
        ok = await arr2.recover(3)
        assert ok and arr2.state == "clean"
        out = bytearray(arr2.size)
        await arr2.read_into(0, memoryview(out))
        assert out == data
        assert (await arr2.check()).mismatches == 0

    asyncio.run(run())


def test_impossible_layouts_refused() -> None:
    async def run() -> None:
        with pytest.raises(RaidConfigError, match="at least 4"):
            await RaidStore.assemble(_members(3), level=6, chunk=CHUNK)
        mixed = [("a", MemoryStore(MEMBER)), ("b", MemoryStore(MEMBER)), ("c", MemoryStore(MEMBER * 2))]
        with pytest.raises(RaidConfigError, match="differ"):
            await RaidStore.assemble(mixed, level=5, chunk=CHUNK)

    asyncio.run(run())


def test_unclean_shutdown_resyncs_dirty_regions_only() -> None:
    """No journal: after a crash the bitmap's dirty regions are resynced (parity recomputed), nothing else."""
    async def run() -> None:
        stores = [MemoryStore(DATA_OFFSET + 256 * CHUNK) for _ in range(4)]
        members = [(f"m{i}", s) for i, s in enumerate(stores)]
        arr = await RaidStore.assemble(members, level=5, chunk=CHUNK, assume_clean=True, bitmap_region=8 * CHUNK)
        await arr.write(0, random.Random(4).randbytes(arr.size))
        await arr._flush_members()
        arr.bitmap[:] = bytes(len(arr.bitmap))  # as if the daemon had cleared it after settling
        arr.clean = True
        await arr._write_bitmap()
        await arr.write_superblocks()
        await arr.write(5 * CHUNK, b"x" * 4096)  # stripe 1: its region becomes dirty, the array unclean
        stripe = 1
        pmember = arr.geometry.stripe_roles(stripe)[-1]
        at = DATA_OFFSET + stripe * CHUNK
        stores[pmember]._buffer()[at:at + 4096] = bytes(4096)  # the parity write that the crash cut off
        arr._closed = True  # kill -9: no clean shutdown
        arr2 = await RaidStore.assemble(members, level=5, chunk=CHUNK)
        assert arr2.resync_needed == "dirty" and arr2.dirty_regions() == [0]
        prog = await arr2.resync(dirty_only=True)
        assert prog.total == 8 * CHUNK  # one region of 8 rows, not the whole member
        assert (await arr2.check()).mismatches == 0
        await arr2.close()

    asyncio.run(run())


def test_raid0_and_raid10_layouts_on_members() -> None:
    """RAID 0: chunk c on member c % n, row c // n; RAID 10 near-2: chunk c on slots 2c and 2c+1."""
    async def run() -> None:
        for level, n in ((0, 4), (10, 3)):
            stores = [MemoryStore(MEMBER) for _ in range(n)]
            arr = await RaidStore.assemble([(f"m{i}", s) for i, s in enumerate(stores)], level=level, chunk=CHUNK,
                                           assume_clean=True)
            data = random.Random(level).randbytes(12 * CHUNK)
            await arr.write(0, data)  # one multi-chunk write (coalesced per member)

            def at(member: int, row: int, stores=stores) -> bytes:
                base = DATA_OFFSET + row * CHUNK
                return bytes(stores[member]._buffer()[base:base + CHUNK])

            for c in range(12):
                chunk = data[c * CHUNK:(c + 1) * CHUNK]
                if level == 0:
                    assert at(c % n, c // n) == chunk
                else:
                    assert at((2 * c) % n, (2 * c) // n) == chunk and at((2 * c + 1) % n, (2 * c + 1) // n) == chunk
            await arr.close()

    asyncio.run(run())
