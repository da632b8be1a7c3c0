"""A RAM backing store: one private anonymous ``mmap``; copies happen inline (no thread hop for RAM).

The kernel hands out the mapping's pages on first touch, so an unwritten memory LU costs nothing and a
thin one grows as it is written.  Unmap really frees: whole pages go back to the kernel with
``madvise(MADV_DONTNEED)`` (a private anonymous page then reads back as zeroes) and the edges of the
range are zeroed.  A :class:`~cistern.storage.mapping.PageMap` records which pages hold data, which is
what GET LBA STATUS reports (SBC-3 4.7, 5.16).
"""

from __future__ import annotations

import mmap

from .base import BackingStore, StoreError
from .mapping import DEFAULT_MAX_EXTENTS, Extent, PageMap

PAGE = mmap.PAGESIZE
_DONTNEED = getattr(mmap, "MADV_DONTNEED", None)


class MemoryStore(BackingStore):
    """Volatile store of ``size`` bytes, initially zero and unallocated."""

    supports_unmap = True
    allocation_unit = PAGE

    def __init__(self, size: int, *, block_size: int = 512, read_only: bool = False) -> None:
        super().__init__(size, block_size=block_size, read_only=read_only)
        self._mm: mmap.mmap | None = mmap.mmap(
            -1,
            max(size, 1),
            flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
            prot=mmap.PROT_READ | mmap.PROT_WRITE,
        )
        self._data: memoryview | None = memoryview(self._mm)
        self.map = PageMap(size, PAGE)

    def _buffer(self) -> memoryview:
        if self._data is None:
            raise StoreError("store is closed")
        return self._data

    async def read_into(self, offset: int, buf: memoryview) -> None:
        data = self._buffer()
        n = len(buf)
        self._check_range(offset, n)
        buf[:] = data[offset : offset + n]

    async def read(self, offset: int, length: int) -> bytes | bytearray:
        data = self._buffer()
        self._check_range(offset, length)
        return data[offset : offset + length].tobytes()

    async def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        if self.read_only:
            raise StoreError("store is read-only")
        store = self._buffer()
        n = len(data)
        self._check_range(offset, n)
        store[offset : offset + n] = data
        self.map.mark(offset, n)

    async def flush(self) -> None:
        self._buffer()

    def _zero(self, offset: int, length: int) -> None:
        store = self._buffer()
        chunk = 1 << 20
        zero = bytes(min(chunk, length))
        end = offset + length
        while offset < end:
            n = min(chunk, end - offset)
            store[offset : offset + n] = zero[:n]
            offset += n

    async def unmap(self, offset: int, length: int) -> None:
        if self.read_only:
            raise StoreError("store is read-only")
        self._buffer()
        self._check_range(offset, length)
        if length == 0:
            return
        start, end = self.map.clear(offset, length)
        if start >= end:  # inside one page: it stays mapped, the bytes read back as zeroes
            self._zero(offset, length)
            return
        self._zero(offset, start - offset)
        self._zero(end, offset + length - end)
        whole_end = end // PAGE * PAGE  # a partial last page of the store is zeroed, not released
        if _DONTNEED is not None and self._mm is not None and whole_end > start:
            self._mm.madvise(_DONTNEED, start, whole_end - start)
        else:
            whole_end = start
        self._zero(whole_end, end - whole_end)

    async def extents(self, offset: int, length: int, max_extents: int = DEFAULT_MAX_EXTENTS) -> list[Extent]:
        self._buffer()
        self._check_range(offset, length)
        return self.map.extents(offset, length, max_extents)

    async def allocated_bytes(self) -> int | None:
        return self.map.mapped_bytes()

    def reserve(self, size: int) -> None:
        """Extend the mapping to hold ``size`` bytes (``mremap``: no copy; the new pages read as zeroes and
        cost nothing until written).  :attr:`size` does not move until :meth:`set_size`, so this can be done
        ahead of a live resize and simply left unused when the resize is abandoned.  Raises ``StoreError``
        (closed, or a size below the current one: shrinking would drop data) or ``OSError`` (no memory)."""
        if size < self.size:
            raise StoreError(f"a memory store does not shrink ({self.size} -> {size} bytes)")
        mm, data = self._mm, self._data
        if mm is None or data is None:
            raise StoreError("store is closed")
        if size <= len(mm):
            return
        data.release()
        try:
            mm.resize(size)
        except BufferError as exc:  # a view of the old mapping is still in use somewhere
            raise OSError(f"the memory store is busy, try again: {exc}") from None
        finally:
            self._data = memoryview(mm)

    def set_size(self, size: int) -> None:
        """Make ``size`` bytes (at most what :meth:`reserve` made room for) the store's size."""
        if self._mm is None or size > len(self._mm) or size < self.size:
            raise StoreError(f"cannot set the memory store to {size} bytes: reserve() it first")
        self.size = size
        self.map.resize(size)

    async def close(self) -> None:
        self.close_sync()

    def close_sync(self) -> None:
        data, self._data = self._data, None
        mm, self._mm = self._mm, None
        try:
            if data is not None:
                data.release()
            if mm is not None:
                mm.close()
        except BufferError:  # a slice of the buffer is still alive somewhere: the GC unmaps it later
            pass
