"""Row locks: a stripe (row) of a RAID array is updated by one writer at a time.

A parity update reads, computes and writes several members; a degraded read reconstructs from several
members; a rebuild or scrub window reads and rewrites whole rows.  Each of those holds the rows it works on
exclusively, acquired in ascending order (so two holders of overlapping row sets cannot deadlock).  A lock
exists only while someone holds or waits for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager


class RowLocks:
    """Exclusive per-row asyncio locks, created on demand."""

    def __init__(self) -> None:
        self._locks: dict[int, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, rows: Iterable[int]) -> AsyncIterator[None]:
        ordered = sorted(set(rows))
        taken: list[int] = []
        acquired: list[int] = []
        try:
            for r in ordered:
                lock, users = self._locks.get(r, (None, 0))
                if lock is None:
                    lock = asyncio.Lock()
                self._locks[r] = (lock, users + 1)
                taken.append(r)
                await lock.acquire()
                acquired.append(r)
            yield
        finally:
            for r in reversed(taken):
                lock, users = self._locks[r]
                if r in acquired:
                    lock.release()
                if users <= 1:
                    del self._locks[r]
                else:
                    self._locks[r] = (lock, users - 1)

    @property
    def held(self) -> int:
        return len(self._locks)
