"""The copy engine of ``cistern read``/``write``/``copy``: endpoints of every kind and a pipelined,
all-or-error transfer.

Endpoints (:class:`LunEnd`, :class:`FileEnd`):

- a LUN: READ/WRITE of whole logical blocks at byte offsets (SBC-3 5.x);
- a regular file: ``pread``/``pwrite`` at offsets; its length is ``st_size``;
- a block device: the same, its length from ``BLKGETSIZE64`` (``fstat`` says 0 for devices);
- a stream (pipe, ``-`` for stdin/stdout, a character device, a FIFO): read or written strictly in
  order; a stream source has no length, it is read until end of file.

Rules (see docs/operations.md "Transfers"):

- Everything is copied or the command fails: a source that ends before the requested length, a
  destination that is too small, or any SCSI/OS error stops the copy with an error (exit 1); a short
  copy is never reported as success. A source that ends inside a block (a stream, or a file whose length
  is not whole blocks) is padded with zeros to a whole block (said on stderr).
- An existing destination file is never truncated below what it held, except when the copy replaces it
  entirely (from offset 0 to at least its old end): then it gets exactly the copied length. Bytes of the
  file outside ``[dest_offset, dest_offset + length)`` are never touched.
- Reading a LUN into a regular file keeps it sparse: ranges the LUN reports deallocated (GET LBA
  STATUS, SBC-3 5.16) are not read, and all-zero chunks are not written; both become holes
  (``fallocate(PUNCH_HOLE)`` inside the old file, nothing beyond it). ``sparse=False`` writes zeros.
- :class:`Progress` counts the bytes done from the start without a gap (``contiguous``), which is what
  an interrupted copy reports and what ``--resume`` may continue from.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import stat
import struct
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from cistern.initiator import IscsiSession
from cistern.storage.file import punch_hole

BLKGETSIZE64 = 0x80081272
#: the most GET LBA STATUS commands a read issues to learn the holes (each covers many extents)
MAX_LBA_STATUS_CALLS = 4096


class TransferError(Exception):
    """The copy cannot be done (or completed) as asked; the message says why in words."""


def device_size(fd: int) -> int:
    """Bytes of the block device open as ``fd`` (``BLKGETSIZE64``, else seek to the end)."""
    try:
        return int(struct.unpack("=Q", fcntl.ioctl(fd, BLKGETSIZE64, b"\0" * 8))[0])
    except OSError:
        return os.lseek(fd, 0, os.SEEK_END)


class LunEnd:
    """A LUN of a logged-in session; ``size`` and ``block`` from READ CAPACITY."""

    kind = "lun"
    stream = False

    def __init__(self, session: IscsiSession, lun: int, block: int, blocks: int, name: str) -> None:
        self.session, self.lun, self.block, self.blocks, self.name = session, lun, block, blocks, name
        self.size: int | None = block * blocks

    async def read(self, offset: int, length: int) -> bytes | memoryview:
        return await self.session.read(self.lun, offset // self.block, length // self.block)

    async def write(self, offset: int, data: bytes | memoryview) -> None:
        await self.session.write(self.lun, offset // self.block, data)

    async def unmapped(self, offset: int, length: int) -> list[tuple[int, int]]:
        """Deallocated byte ranges in ``[offset, offset+length)`` (GET LBA STATUS); [] when unsupported."""
        from cistern.initiator.errors import ScsiError

        out: list[tuple[int, int]] = []
        lba, end = offset // self.block, (offset + length) // self.block
        for _ in range(MAX_LBA_STATUS_CALLS):
            if lba >= end:
                break
            try:
                descriptors = await self.session.get_lba_status(self.lun, lba)
            except (ScsiError, ValueError):
                return out
            progressed = False
            for start, count, status in descriptors:
                stop = min(start + count, end)
                if start > lba or stop <= lba:
                    if start > lba:
                        break
                    continue
                if status == 1 and stop > lba:
                    out.append((lba * self.block, (stop - lba) * self.block))
                lba, progressed = stop, True
            if not progressed:
                break
        return out


class FileEnd:
    """A local file, block device or stream (see the module docstring); owns its descriptor."""

    def __init__(self, fd: int, name: str, *, owned: bool = True) -> None:
        self.fd, self.name, self.owned = fd, name, owned
        st = os.fstat(fd)
        self.mode = st.st_mode
        self.block = 1
        self.old_size = 0
        self.size: int | None
        if stat.S_ISREG(st.st_mode):
            self.kind, self.size = "file", st.st_size
            self.old_size = st.st_size
        elif stat.S_ISBLK(st.st_mode):
            self.kind, self.size = "block device", device_size(fd)
        else:
            self.kind, self.size = "stream", None
        self.stream = self.kind == "stream"
        self._pos = 0
        self._lock = asyncio.Lock()
        self.eof = False
        self.can_punch = self.kind == "file"
        self.created = False  # open_destination made the file (removed again if nothing was copied)

    @classmethod
    def open_source(cls, path: str) -> FileEnd:
        if path == "-":
            return cls(0, "stdin", owned=False)
        return cls(os.open(path, os.O_RDONLY | os.O_CLOEXEC), path)

    @classmethod
    def open_destination(cls, path: str) -> FileEnd:
        """Open without truncating (the caller decides the final length); stdout for ``-``."""
        if path == "-":  # written in order even when redirected to a file (`> out.img`)
            end = cls(1, "stdout", owned=False)
            end.kind, end.stream, end.size, end.can_punch = "stream", True, None, False
            return end
        try:
            st = os.stat(path)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise TransferError(f"{path} is a directory")
        flags = os.O_WRONLY | os.O_CLOEXEC
        if st is None or stat.S_ISREG(st.st_mode):
            flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
        elif stat.S_ISBLK(st.st_mode):
            flags = os.O_RDWR | os.O_CLOEXEC
        end = cls(os.open(path, flags, 0o644), path)
        end.created = st is None
        if end.kind == "file":
            end.size = None  # a regular file grows as it is written
        return end

    def close(self) -> None:
        if self.owned and self.fd >= 0:
            os.close(self.fd)
        self.fd = -1

    def _read_stream(self, length: int) -> bytes:
        parts, got = [], 0
        while got < length:
            piece = os.read(self.fd, length - got)
            if not piece:
                self.eof = True
                break
            parts.append(piece)
            got += len(piece)
        return b"".join(parts)

    async def read(self, offset: int, length: int) -> bytes | memoryview:
        if self.stream:
            async with self._lock:  # callers submit in order; the lock keeps them in order
                if offset != self._pos:
                    raise TransferError(f"{self.name}: a stream is read in order only")
                data = await asyncio.to_thread(self._read_stream, length)
                self._pos += len(data)
                return data
        return await asyncio.to_thread(_pread_all, self.fd, length, offset)

    async def write(self, offset: int, data: bytes | memoryview) -> None:
        if self.stream:
            async with self._lock:
                if offset != self._pos:
                    raise TransferError(f"{self.name}: a stream is written in order only")
                await asyncio.to_thread(_write_all, self.fd, data)
                self._pos += len(data)
            return
        await asyncio.to_thread(_pwrite_all, self.fd, data, offset)

    async def hole(self, offset: int, length: int) -> None:
        """Make ``[offset, offset+length)`` read as zeros: nothing past the old end, a punched hole
        inside it, zeros written where punching is not supported."""
        if offset >= self.old_size and self.kind == "file":
            return
        if self.can_punch:
            try:
                if await asyncio.to_thread(punch_hole, self.fd, offset, length):
                    return
            except OSError:
                pass
            self.can_punch = False
        zero = bytes(min(length, 1 << 20))
        done = 0
        while done < length:
            n = min(len(zero), length - done)
            await self.write(offset + done, memoryview(zero)[:n])
            done += n

    async def skip(self, length: int) -> None:
        """Consume ``length`` bytes of a stream source (``--offset`` on stdin)."""
        left = length
        while left:
            data = await self.read(self._pos, min(left, 1 << 20))
            if not data:
                raise TransferError(f"{self.name} ended after {self._pos} bytes, before --offset {length}")
            left -= len(data)


def _pread_all(fd: int, length: int, offset: int) -> bytes:
    parts, got = [], 0
    while got < length:
        piece = os.pread(fd, length - got, offset + got)
        if not piece:
            break
        parts.append(piece)
        got += len(piece)
    return b"".join(parts) if len(parts) != 1 else parts[0]


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    mv, done = memoryview(data), 0
    while done < len(mv):
        done += os.pwrite(fd, mv[done:], offset + done)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    mv, done = memoryview(data), 0
    while done < len(mv):
        done += os.write(fd, mv[done:])


Endpoint = LunEnd | FileEnd


@dataclass
class Progress:
    """Bytes done; ``contiguous`` counts from the start without a gap (what a resume may trust)."""

    total: int | None
    done: int = 0
    contiguous: int = 0
    started: float = field(default_factory=time.monotonic)
    padded: int = 0
    _finished: dict[int, int] = field(default_factory=dict)

    def finish(self, at: int, n: int) -> None:
        self.done += n
        self._finished[at] = n
        while self.contiguous in self._finished:
            self.contiguous += self._finished.pop(self.contiguous)

    @property
    def mib_s(self) -> float:
        return self.done / max(time.monotonic() - self.started, 1e-9) / (1 << 20)


OnProgress = Any  # Callable[[int], None] | None


async def transfer(
    src: Endpoint,
    src_off: int,
    dst: Endpoint,
    dst_off: int,
    length: int | None,
    chunk: int,
    depth: int,
    progress: Progress,
    *,
    until_eof: bool = False,
    sparse: bool = True,
    on_advance: OnProgress = None,
) -> int:
    """Copy ``length`` bytes (``None``: a stream source until its end) and return the bytes copied.

    With ``until_eof`` a source that ends early ends the copy (its last block padded with zeros, counted
    in ``progress.padded``); without it that is a :class:`TransferError`. Raises whatever the endpoints
    raise (SCSI/OS errors); every task it started has finished (or been cancelled) when it returns or
    raises.
    """
    block = max(src.block, dst.block)
    holes: list[tuple[int, int]] = []
    if sparse and isinstance(src, LunEnd) and isinstance(dst, FileEnd) and dst.kind == "file" and length:
        holes = [(a - src_off, n) for a, n in await src.unmapped(src_off, length)]
    reads: deque[tuple[int, int, asyncio.Future[Any]]] = deque()
    writes: set[asyncio.Future[None]] = set()
    pos = 0
    ended = False  # a stream source reached its end
    zero_chunk = bytes(chunk) if sparse and isinstance(dst, FileEnd) and dst.kind == "file" else None

    def in_hole(at: int, n: int) -> bool:
        return any(h <= at and at + n <= h + hn for h, hn in holes)

    async def nothing() -> None:
        return None

    try:
        while True:
            while not ended and (length is None or pos < length) and len(reads) + len(writes) < depth:
                n = chunk if length is None else min(chunk, length - pos)
                if in_hole(pos, n):
                    fut: asyncio.Future[Any] = asyncio.ensure_future(nothing())
                else:
                    fut = asyncio.ensure_future(src.read(src_off + pos, n))
                reads.append((pos, n, fut))
                pos += n
                if src.stream and length is None:
                    break  # learn whether the stream ended before asking for more
            if not reads:
                break
            at, n, task = reads.popleft()
            data = await task
            if data is None:  # a deallocated range of the source LUN
                assert isinstance(dst, FileEnd)
                w = asyncio.ensure_future(dst.hole(dst_off + at, n))
            else:
                if len(data) < n:
                    if not until_eof:
                        raise TransferError(
                            f"{src.name} ended after {src_off + at + len(data)} bytes; "
                            f"{n - len(data)} of the requested bytes are missing"
                        )
                    ended = True
                    pos = at + len(data)
                    rest = len(data) % block
                    if rest:
                        progress.padded = block - rest
                        data = bytes(data) + bytes(block - rest)
                    n = len(data)
                    if not n:
                        break
                if dst.size is not None and dst_off + at + n > dst.size:
                    raise TransferError(
                        f"{dst.name} is full: {dst.size} bytes, the copy needs more than "
                        f"{dst_off + at} + {n} (source larger than the destination)"
                    )
                if zero_chunk is not None and len(data) <= chunk and bytes(data) == zero_chunk[: len(data)]:
                    assert isinstance(dst, FileEnd)
                    w = asyncio.ensure_future(dst.hole(dst_off + at, n))
                elif dst.stream:
                    await dst.write(dst_off + at, data)
                    w = asyncio.ensure_future(nothing())
                else:
                    w = asyncio.ensure_future(dst.write(dst_off + at, data))

            def done(t: asyncio.Future[None], at: int = at, n: int = n) -> None:
                if not t.cancelled() and t.exception() is None:
                    progress.finish(at, n)
                    if on_advance is not None:
                        on_advance(n)

            w.add_done_callback(done)
            writes.add(w)
            if len(writes) >= depth or (not reads and writes):
                finished, _ = await asyncio.wait(writes, return_when=asyncio.FIRST_COMPLETED)
                writes -= finished
                for d in finished:
                    d.result()
        if writes:
            finished, _ = await asyncio.wait(writes)
            writes.clear()
            for d in finished:
                d.result()
        return pos + progress.padded if ended else pos
    finally:
        pending = [t for _, _, t in reads] + list(writes)
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)


async def compare(
    src: Endpoint, src_off: int, dst: Endpoint, dst_off: int, length: int, chunk: int, *, pad: bool = False
) -> int | None:
    """Read both sides back in ``chunk`` pieces; the byte offset of the first difference, or None.
    ``pad``: a source shorter than ``length`` reads as zeros past its end (a padded last block)."""
    for at in range(0, length, chunk):
        n = min(chunk, length - at)
        a, b = await asyncio.gather(src.read(src_off + at, n), dst.read(dst_off + at, n))
        a, b = bytes(a), bytes(b)
        if pad and len(a) < n:
            a += bytes(n - len(a))
        if a != b:
            first = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), min(len(a), len(b)))
            return at + first
    return None
