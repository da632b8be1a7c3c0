"""The serving process keeps the heap memory it freed, instead of giving it back to the kernel after every burst.

The target allocates a buffer for each command's data: for every read, the store reads into a new
``bytearray``, and large writes have their data segments copied out. glibc's ``malloc`` has two default
thresholds. It returns the top of its heap to the kernel as soon as more than 128 KiB of it are free
(``M_TRIM_THRESHOLD``), and it maps every allocation of 128 KiB or more separately (``M_MMAP_THRESHOLD``).
Under I/O, each batch of freed buffers shrinks the heap with ``brk`` and the next batch grows it again.
The new pages then fault in one by one and are zeroed by the kernel.

``perf`` on 64 KiB reads at depth 32 from a fresh target put the page faults and ``brk`` at a third of the
process's CPU: about 50 µs per read, against about 26 µs once glibc had raised its thresholds by itself
after some large frees (bench/RESULTS.md, "Fourth session"). :func:`keep_freed_memory` sets the
thresholds once at start-up, so the first minutes of a target run as fast as the later ones.

The price is resident memory: up to :data:`TRIM_THRESHOLD` bytes of freed heap stay with the process
after a burst (the idle RSS of a fresh target does not change). On a C library without ``mallopt`` (musl),
nothing is set.
"""

from __future__ import annotations

import ctypes
import logging
from typing import Final

from cistern import libc

log = logging.getLogger(__name__)

#: glibc's malloc.h parameter numbers
M_TRIM_THRESHOLD: Final = -1
M_MMAP_THRESHOLD: Final = -3

#: free heap bytes kept before the top of the heap goes back to the kernel
TRIM_THRESHOLD: Final = 32 * 1024 * 1024
#: allocations from this size on get their own mapping; smaller ones (data buffers of up to 4 MiB) come
#: from the heap and are reused
MMAP_THRESHOLD: Final = 4 * 1024 * 1024


def keep_freed_memory() -> bool:
    """Set glibc's trim and mmap thresholds (see the module docstring); True if both were set."""
    mallopt = libc.function("mallopt", [ctypes.c_int, ctypes.c_int], ctypes.c_int)
    if mallopt is None:
        return False
    done = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    if not done:
        log.debug("mallopt refused the heap thresholds")
    return done
