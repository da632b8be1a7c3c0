"""A fault-injecting wrapper store (the idea of Linux dm-flakey / md's faulty personality).

Wraps any :class:`BackingStore` and, once armed, makes its I/O fail in one of three ways:

- ``eio``: every read/write/flush raises ``OSError(EIO)``;
- ``vanish``: like a disk pulled out: ``OSError(ENODEV)`` (and ``path`` no longer names a file);
- ``stall``: every call sleeps ``stall_seconds`` before doing nothing (a hung device).

``fail_after_writes`` arms it automatically after that many more writes (a failure in the middle of a
workload); ``heal()`` disarms it.  Used by the RAID fault tests and ``bench/raid.py``.
"""

from __future__ import annotations

import asyncio
import errno

from .base import BackingStore

MODES = ("eio", "vanish", "stall")


class FaultyStore(BackingStore):
    """See module docstring; ``inner`` is closed with this store."""

    def __init__(self, inner: BackingStore, *, stall_seconds: float = 3600.0) -> None:
        super().__init__(inner.size, block_size=inner.block_size, read_only=inner.read_only)
        self.inner = inner
        self.mode: str | None = None
        self.fail_after_writes: int | None = None
        self.pending_mode = "eio"
        self.stall_seconds = stall_seconds
        self.reads = 0
        self.writes = 0
        self.failed_ops = 0

    def arm(self, mode: str = "eio", after_writes: int | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"fault mode must be one of {MODES}")
        if after_writes is None:
            self.mode = mode
        else:
            self.pending_mode, self.fail_after_writes = mode, after_writes

    def heal(self) -> None:
        self.mode = None
        self.fail_after_writes = None

    async def _fault(self) -> None:
        if self.mode is None:
            return
        self.failed_ops += 1
        if self.mode == "stall":
            await asyncio.sleep(self.stall_seconds)
            raise OSError(errno.ETIMEDOUT, "stalled member")
        raise OSError(errno.EIO if self.mode == "eio" else errno.ENODEV,
                      "injected I/O error" if self.mode == "eio" else "member vanished")

    async def read_into(self, offset: int, buf: memoryview) -> None:
        await self._fault()
        self.reads += 1
        await self.inner.read_into(offset, buf)

    async def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        if self.fail_after_writes is not None:
            if self.fail_after_writes <= 0:
                self.mode, self.fail_after_writes = self.pending_mode, None
            else:
                self.fail_after_writes -= 1
        await self._fault()
        self.writes += 1
        await self.inner.write(offset, data)

    async def flush(self) -> None:
        await self._fault()
        await self.inner.flush()

    async def close(self) -> None:
        await self.inner.close()

    def close_sync(self) -> None:
        self.inner.close_sync()
