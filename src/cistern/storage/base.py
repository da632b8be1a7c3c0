"""The backing-store interface every SCSI logical unit sits on.

A :class:`BackingStore` is a flat, byte-addressed array of ``size`` bytes, read and written in whole
logical blocks by the SCSI device server (SBC-3 section 4.5: logical blocks).  It is deliberately small:
``read_into`` fills a caller-owned buffer (no extra copy on the hot path), ``write`` takes any
bytes-like object, ``flush`` makes written data durable (SYNCHRONIZE CACHE, FUA), ``unmap`` deallocates
a range so that it reads back as zeroes (SBC-3 section 4.7: logical block provisioning), ``extents``
tells which bytes are mapped or deallocated (GET LBA STATUS) and ``allocated_bytes`` how much physical
space the store uses (thin provisioning thresholds).

Implementations raise :class:`OSError` (or a subclass) on I/O failure; the device server turns that
into sense data (MEDIUM ERROR), never into an exception towards the transport.
"""

from __future__ import annotations

import abc

from .mapping import DEFAULT_MAX_EXTENTS, Extent

VALID_BLOCK_SIZES = (512, 4096)


class StoreError(OSError):
    """A backing-store failure that is not an errno from the operating system."""


class BackingStore(abc.ABC):
    """Abstract asynchronous block store (see module docstring)."""

    size: int
    block_size: int
    read_only: bool
    supports_unmap: bool = False
    allocation_unit: int = 4096  # bytes: the granularity at which unmap really frees space

    def __init__(self, size: int, *, block_size: int = 512, read_only: bool = False) -> None:
        if block_size not in VALID_BLOCK_SIZES:
            raise ValueError(f"block_size must be one of {VALID_BLOCK_SIZES}, not {block_size}")
        if size < 0:
            raise ValueError("size must not be negative")
        self.size = size
        self.block_size = block_size
        self.read_only = read_only

    @property
    def num_blocks(self) -> int:
        """Number of whole logical blocks (a partial trailing block is not addressable)."""
        return self.size // self.block_size

    def _check_range(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise StoreError(f"range {offset}+{length} outside store of {self.size} bytes")

    @abc.abstractmethod
    async def read_into(self, offset: int, buf: memoryview) -> None:
        """Fill ``buf`` completely with the bytes at ``offset``."""

    async def read(self, offset: int, length: int) -> bytes | bytearray:
        """``length`` bytes at ``offset`` in a new buffer (the READ path).  The default fills a zeroed
        ``bytearray`` with :meth:`read_into`; stores that can hand out a fresh buffer without zeroing it
        first (a 1 MiB memset per read) override this."""
        buf = bytearray(length)
        if length:
            await self.read_into(offset, memoryview(buf))
        return buf

    @abc.abstractmethod
    async def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Write all of ``data`` at ``offset``."""

    # The synchronous fast path (the SCSI READ/WRITE hot path tries it first).  Awaiting a coroutine
    # costs a coroutine object, a frame and a StopIteration per call, about a tenth of a 4 KiB command's
    # Python time (bench/RESULTS.md, "Fifth session"); a store that can often answer without waiting
    # (the page cache) answers here.  A subclass that overrides read or write must override these too
    # (or leave them answering "not now"), or its override would be bypassed.

    def read_now(self, offset: int, length: int) -> bytes | bytearray | None:
        """The ``length`` (> 0) bytes at ``offset`` if the store has them without waiting, else None (and
        nothing done): then :meth:`read`.  Raises OSError as :meth:`read` does.  The default: None."""
        return None

    def write_now(self, offset: int, data: bytes | bytearray | memoryview) -> bool:
        """Write all of ``data`` (not empty) at ``offset`` if that needs no waiting: True when done; False
        when nothing was written (then :meth:`write`).  Raises OSError as :meth:`write` does.  The
        default: False."""
        return False

    @abc.abstractmethod
    async def flush(self) -> None:
        """Make every completed write durable."""

    async def unmap(self, offset: int, length: int) -> None:
        """Deallocate a range; afterwards it reads back as zeroes.

        The default writes zeroes, so a store without real deallocation still honours the contract.
        """
        self._check_range(offset, length)
        chunk = 1 << 20
        zero = bytes(min(chunk, length))
        done = 0
        while done < length:
            n = min(chunk, length - done)
            await self.write(offset + done, memoryview(zero)[:n])
            done += n

    async def extents(self, offset: int, length: int, max_extents: int = DEFAULT_MAX_EXTENTS) -> list[Extent]:
        """Mapped/deallocated extents covering ``[offset, offset+length)`` in order (at most
        ``max_extents``; the last one may end early).  The default: everything is mapped."""
        self._check_range(offset, length)
        return [Extent(offset, length, True)] if length else []

    async def allocated_bytes(self) -> int | None:
        """Physical space in use, in bytes; ``None`` when the store cannot tell."""
        return None

    def io_waiting(self) -> bool:
        """True while other I/O is queued for the device this store is on (a background job such as a
        SANITIZE overwrite yields to it).  The default: never (inline stores run on the event loop, which
        interleaves other work whenever the job awaits)."""
        return False

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the store's resources (idempotent)."""

    @abc.abstractmethod
    def close_sync(self) -> None:
        """Release the store's resources without an event loop (error paths, shutdown; idempotent)."""
