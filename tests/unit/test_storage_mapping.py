"""Allocation tracking in the stores: PageMap bookkeeping, the RAM store's page map and real freeing,
the file store's SEEK_DATA/SEEK_HOLE extents and st_blocks accounting after hole punching."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from cistern.storage import FileStore, MemoryStore
from cistern.storage.mapping import Extent, PageMap, coalesce

P = 4096


def test_page_map_mark_clear_extents() -> None:
    m = PageMap(10 * P + 100, P)  # a partial last page
    assert m.extents(0, m.size) == [Extent(0, m.size, False)]
    m.mark(P + 1, 1)  # touches page 1 only
    m.mark(3 * P - 1, 2)  # pages 2 and 3
    assert m.extents(0, m.size) == [
        Extent(0, P, False),
        Extent(P, 3 * P, True),
        Extent(4 * P, m.size - 4 * P, False),
    ]
    assert m.mapped_bytes() == 3 * P
    assert m.clear(P + 1, 2 * P) == (2 * P, 3 * P)  # only page 2 lies wholly inside
    assert m.extents(P, 3 * P) == [Extent(P, P, True), Extent(2 * P, P, False), Extent(3 * P, P, True)]
    m.mark(10 * P, 100)
    assert m.mapped_bytes() == 2 * P + 100  # the partial last page counts its real bytes
    assert m.clear(9 * P + 5, P + 95) == (10 * P, 10 * P + 100)  # reaching the end frees the last page
    assert m.mapped_bytes() == 2 * P
    assert len(m.extents(0, m.size, max_extents=2)) == 2
    with pytest.raises(ValueError):
        PageMap(100, 3000)


def test_coalesce() -> None:
    got = coalesce([Extent(0, 5, True), Extent(5, 5, True), Extent(10, 0, False), Extent(10, 2, False)])
    assert got == [Extent(0, 10, True), Extent(10, 2, False)]


def test_memory_store_tracks_and_frees() -> None:
    async def go() -> None:
        s = MemoryStore(16 * P)
        assert await s.allocated_bytes() == 0
        await s.write(P, b"\xff" * (4 * P))
        assert await s.allocated_bytes() == 4 * P
        assert await s.extents(0, 16 * P) == [
            Extent(0, P, False),
            Extent(P, 4 * P, True),
            Extent(5 * P, 11 * P, False),
        ]
        await s.unmap(P + 10, 3 * P)  # frees pages 2 and 3, zeroes the edges of pages 1 and 4
        assert await s.allocated_bytes() == 2 * P
        buf = bytearray(4 * P)
        await s.read_into(P, memoryview(buf))
        assert buf == b"\xff" * 10 + bytes(3 * P) + b"\xff" * (P - 10)
        await s.unmap(0, 16 * P)
        assert await s.extents(0, 16 * P) == [Extent(0, 16 * P, False)]
        await s.read_into(P, memoryview(buf))
        assert buf == bytes(4 * P)
        await s.close()

    asyncio.run(go())


def test_memory_store_odd_size_unmap_to_end() -> None:
    async def go() -> None:
        size = 3 * P + 512
        s = MemoryStore(size)
        await s.write(0, b"\x01" * size)
        await s.unmap(2 * P, P + 512)
        buf = bytearray(size)
        await s.read_into(0, memoryview(buf))
        assert buf == b"\x01" * (2 * P) + bytes(P + 512)
        assert await s.allocated_bytes() == 2 * P
        await s.close()

    asyncio.run(go())


def test_file_store_extents_follow_holes(tmp_path: Path) -> None:
    async def go() -> None:
        s = FileStore(tmp_path / "f.img", 64 * P)
        unit = s.allocation_unit
        assert await s.extents(0, s.size) == [Extent(0, s.size, False)]
        assert await s.allocated_bytes() == 0
        await s.write(8 * unit, os.urandom(2 * unit))
        await s.flush()
        assert await s.extents(0, s.size) == [
            Extent(0, 8 * unit, False),
            Extent(8 * unit, 2 * unit, True),
            Extent(10 * unit, s.size - 10 * unit, False),
        ]
        assert await s.extents(9 * unit, unit) == [Extent(9 * unit, unit, True)]
        assert (await s.allocated_bytes() or 0) >= 2 * unit
        await s.unmap(8 * unit, 2 * unit)
        assert await s.extents(0, s.size) == [Extent(0, s.size, False)]
        assert await s.allocated_bytes() == 0
        await s.close()

    asyncio.run(go())


def test_file_store_read_only_shorter_file_reports_tail_as_hole(tmp_path: Path) -> None:
    path = tmp_path / "short.img"
    path.write_bytes(b"\x07" * 8192)

    async def go() -> None:
        s = FileStore(path, read_only=True)
        ext = await s.extents(0, s.size)
        assert ext[0].mapped and sum(e.length for e in ext) == 8192
        await s.close()

    asyncio.run(go())
