"""A RAM backing store: a ``bytearray``; copies happen inline (no thread hop is worth it for RAM)."""

from __future__ import annotations

from .base import BackingStore, StoreError


class MemoryStore(BackingStore):
    """Volatile store of ``size`` bytes, initially zero."""

    supports_unmap = True

    def __init__(self, size: int, *, block_size: int = 512, read_only: bool = False) -> None:
        super().__init__(size, block_size=block_size, read_only=read_only)
        self._data: bytearray | None = bytearray(size)

    def _buffer(self) -> bytearray:
        if self._data is None:
            raise StoreError("store is closed")
        return self._data

    async def read_into(self, offset: int, buf: memoryview) -> None:
        data = self._buffer()
        n = len(buf)
        self._check_range(offset, n)
        buf[:] = memoryview(data)[offset : offset + n]

    async def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        if self.read_only:
            raise StoreError("store is read-only")
        store = self._buffer()
        n = len(data)
        self._check_range(offset, n)
        store[offset : offset + n] = data

    async def flush(self) -> None:
        self._buffer()

    async def unmap(self, offset: int, length: int) -> None:
        if self.read_only:
            raise StoreError("store is read-only")
        store = self._buffer()
        self._check_range(offset, length)
        chunk = min(length, 1 << 20)
        zero = bytes(chunk)
        end = offset + length
        while offset < end:
            n = min(chunk, end - offset)
            store[offset : offset + n] = zero[:n] if n < chunk else zero
            offset += n

    async def close(self) -> None:
        self._data = None

    def close_sync(self) -> None:
        self._data = None
