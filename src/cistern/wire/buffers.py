"""Recycled write buffers: large data-out buffers are reused instead of allocated for every command.

A write of 1 MiB needs a 1 MiB buffer for its data-out (``TargetTask.buf``).  Allocating it with
``bytearray(n)`` zero-fills it, and at these sizes ``malloc`` hands out fresh pages that fault in on first
touch: measured with ``perf`` on ``qemu-img bench -w -s 1M -d 32`` against a file LUN, the ``memset`` and
the page faults were about a third of the target's CPU (bench/RESULTS.md, "Fourth session").  The pool
keeps buffers of :data:`MIN_POOLED` bytes or more once their command is over, and hands them out again,
dirty: a write buffer is always filled completely (immediate data, unsolicited and solicited Data-Out
cover all of EDTL) before the device server sees it, so the old bytes are never read.

A buffer is reused only once nothing else refers to it (its reference count, :class:`WriteBufferPool`):
a device server or store that kept a view of it after the command ended would otherwise see another
command's data appear in it.  This module is never compiled (``cistern.accel``), so the count it reads is
the interpreter's whatever calls it.
"""

from __future__ import annotations

import sys
from typing import Final

#: smaller buffers are cheap to allocate (pymalloc or a warm heap): not pooled
MIN_POOLED: Final = 64 * 1024
#: the most bytes the pool keeps for reuse (all sizes together); a buffer that would exceed it is freed
POOL_LIMIT: Final = 16 * 1024 * 1024

# references to a retired buffer nobody else holds, as :meth:`WriteBufferPool._sweep` counts them: the
# retired list, the loop variable and the argument of sys.getrefcount
_SOLE_REFERENCES: Final = 3


class WriteBufferPool:
    """Free write buffers by size (``bytearray``), at most ``limit`` bytes in all.

    A buffer given back is *retired* first: the command that used it may still be on the stack (the
    Data-Out frame that completed it holds a view of it while the command executes inline).  The next
    :meth:`take` of a pooled size sweeps the retired buffers: one nobody else refers to any more becomes
    free for reuse; one still referred to is dropped from the pool (its holder keeps it, the pool never
    touches it again).  Not thread-safe: the event loop's thread only (where the transport's tasks live).
    """

    __slots__ = ("_free", "_retired", "held", "limit", "reused")

    def __init__(self, limit: int = POOL_LIMIT) -> None:
        self._free: dict[int, list[bytearray]] = {}
        self._retired: list[bytearray] = []
        self.limit = limit
        self.held = 0  # bytes in the pool, free and retired
        self.reused = 0  # buffers handed out again (tests, benchmarks)

    def take(self, size: int) -> bytearray:
        """A buffer of exactly ``size`` bytes; a recycled one holds old data (the caller overwrites all)."""
        if size >= MIN_POOLED:
            if self._retired:
                self._sweep()
            free = self._free.get(size)
            if free:
                self.held -= size
                self.reused += 1
                return free.pop()
        return bytearray(size)

    def give(self, buf: bytearray) -> None:
        """``buf``'s command is over and its owner drops it: keep it for reuse if there is room (it
        becomes free at the next sweep, if by then nobody else holds a reference or a view of it)."""
        size = len(buf)
        if size >= MIN_POOLED and self.held + size <= self.limit:
            self._retired.append(buf)
            self.held += size

    def _sweep(self) -> None:
        retired = self._retired
        self._retired = []
        for buf in retired:
            if sys.getrefcount(buf) <= _SOLE_REFERENCES:
                self._free.setdefault(len(buf), []).append(buf)
            else:
                self.held -= len(buf)  # still seen elsewhere (a view kept by a store): not ours any more

    def clear(self) -> None:
        """Free every pooled buffer (the target stops)."""
        self._free.clear()
        self._retired.clear()
        self.held = 0


#: the process's pool (one event loop per target process)
WRITE_BUFFERS: Final = WriteBufferPool()
