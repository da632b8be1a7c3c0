"""File and block-device backing stores.

Calls that may block on the device (``fdatasync``, ``fallocate``, reads that miss the page cache, writes
the kernel may throttle) run on a small :class:`IoPool` of threads shared by all stores, never on the
event loop.  What the page cache can serve at once is done inline, without the thread
hop (the hop, two futures and a wake-up of the loop cost more than a 4 KiB copy):

* ``preadv``/``pwritev`` with ``RWF_NOWAIT`` (Linux 4.14+) first, inline; the kernel answers ``EAGAIN`` or a
  short count instead of waiting for the device, and the rest goes to the pool.  A filesystem or device
  without ``RWF_NOWAIT`` for that direction answers ``EOPNOTSUPP`` once (ext4 and block devices take it for
  buffered reads but not writes, here on Linux 6.x).  Reads then use the pool from then on.  Writes are
  *watched* instead: a buffered write normally only copies into the page cache, so it is done inline and
  timed.  One that took longer than :data:`STALL_LIMIT` (dirty-page throttling, a journal commit, a
  read-modify-write from the device) sends the store's writes to the pool for :data:`STALL_BACKOFF`
  seconds, doubled after every further stall up to :data:`STALL_BACKOFF_MAX`.  So a device under write-back
  pressure stalls the event loop once per back-off period at most.  The thread hop this saves costs about
  110 µs of CPU per 4 KiB write on this project's VM (bench/RESULTS.md, "Fourth session");
* on a regular file of a memory filesystem (tmpfs, ramfs: ``fstatfs``), which never waits for a device,
  plain ``preadv``/``pwritev`` run inline.
Unmap punches a hole with ``fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)`` (which reads back
as zeroes on files and, since Linux 4.9, on block devices); where the filesystem cannot punch holes it
falls back to writing zeroes.  Which bytes are mapped is the filesystem's answer to ``lseek`` with
``SEEK_DATA``/``SEEK_HOLE`` (SBC-3 5.16 GET LBA STATUS); physical use is ``st_blocks``.  A block device
(or a filesystem without those seeks) reports everything mapped.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import fcntl
import logging
import os
import queue
import stat
import struct
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from cistern import libc

from .base import BackingStore, StoreError
from .mapping import DEFAULT_MAX_EXTENTS, Extent, coalesce

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
BLKGETSIZE64 = 0x80081272  # _IOR(0x12, 114, size_t)

log = logging.getLogger(__name__)

_IO_THREADS = 4
_pool_in_flight = 0  # calls submitted to the pool and not finished (all stores)
_RWF_NOWAIT: int = getattr(os, "RWF_NOWAIT", 0)  # 0: this Python/OS has no RWF_NOWAIT
# How one direction of I/O is done (see the module docstring); chosen per store, may degrade to _POOL
# (reads) or _WATCHED (writes).
_POOL, _NOWAIT, _INLINE, _WATCHED = 0, 1, 2, 3
#: a watched inline write that took longer than this (seconds) waited for something beyond the page cache
STALL_LIMIT = 0.002
#: after such a stall the store's writes go to the I/O threads for this long (seconds), doubled after every
#: further stall up to STALL_BACKOFF_MAX; a store without a stall for STALL_BACKOFF_MAX starts over
STALL_BACKOFF = 1.0
STALL_BACKOFF_MAX = 64.0
_MEMORY_FS_MAGIC = frozenset({0x01021994, 0x858458F6})  # TMPFS_MAGIC, RAMFS_MAGIC (linux/magic.h)
T = TypeVar("T")


class IoPool:
    """Threads for blocking store calls, lighter than ``loop.run_in_executor``: a ``SimpleQueue`` in, and
    completions handed back to each event loop in batches (one ``call_soon_threadsafe`` wakes the loop for
    every call finished since its last drain, not one per call).  Daemon threads, started on first use."""

    def __init__(self, threads: int) -> None:
        self._threads = threads
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._started = False
        self._lock = threading.Lock()
        self._done: dict[asyncio.AbstractEventLoop, list[Any]] = {}  # loop -> finished, not yet delivered

    def run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        if not self._started:
            self._start()
        self._queue.put((loop, fut, fn, args))
        return fut

    def _start(self) -> None:
        with self._lock:
            if self._started:
                return
            for i in range(self._threads):
                threading.Thread(target=self._work, name=f"cistern-io-{i}", daemon=True).start()
            self._started = True

    def _work(self) -> None:
        while True:
            loop, fut, fn, args = self._queue.get()
            outcome: tuple[Any, BaseException | None]
            try:
                outcome = (fn(*args), None)
            except BaseException as exc:  # delivered to the awaiting coroutine, as run_in_executor does
                outcome = (None, exc)
            with self._lock:
                pending = self._done.get(loop)
                if pending is not None:  # a drain is already scheduled on that loop
                    pending.append((fut, outcome))
                    continue
                self._done[loop] = [(fut, outcome)]
            try:
                loop.call_soon_threadsafe(self._drain, loop)
            except RuntimeError:  # the loop is closed: nobody waits for this result any more
                with self._lock:
                    self._done.pop(loop, None)

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            done = self._done.pop(loop, [])
        for fut, (result, exc) in done:
            if fut.done():  # cancelled meanwhile
                continue
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(result)


_pool = IoPool(_IO_THREADS)


_fallocate = libc.function(
    "fallocate", [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64], ctypes.c_int
)
_fstatfs = libc.function("fstatfs", [ctypes.c_int, ctypes.c_void_p], ctypes.c_int)


def on_memory_fs(fd: int) -> bool:
    """True when ``fd`` is a regular file on tmpfs or ramfs (``fstatfs`` f_type), whose I/O never waits for
    a device.  A device node is not: ``fstatfs`` would describe the filesystem holding the node."""
    if _fstatfs is None or not stat.S_ISREG(os.fstat(fd).st_mode):
        return False
    buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on 64-bit Linux; f_type comes first
    if _fstatfs(fd, buf) != 0:
        return False
    f_type = ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF
    return f_type in _MEMORY_FS_MAGIC


def io_modes(fd: int) -> tuple[int, int]:
    """(read mode, write mode) to start with for ``fd``: inline on a memory filesystem, else RWF_NOWAIT first
    where the running Python has it, else the thread pool."""
    if os.environ.get("CISTERN_IO_POOL_ONLY"):
        return _POOL, _POOL
    if on_memory_fs(fd):
        return _INLINE, _INLINE
    if _RWF_NOWAIT:
        return _NOWAIT, _NOWAIT
    return _POOL, _POOL


def punch_hole(fd: int, offset: int, length: int) -> bool:
    """Deallocate ``[offset, offset+length)`` keeping the size; False when unsupported."""
    if _fallocate is None or length == 0:
        return _fallocate is not None
    if _fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.ENODEV):
        return False
    raise OSError(err, os.strerror(err))


def _pread_full(fd: int, buf: memoryview, offset: int) -> None:
    done = 0
    total = len(buf)
    while done < total:
        n = os.preadv(fd, [buf[done:]], offset + done)
        if n == 0:  # past end of a file shorter than announced: reads as zeroes
            buf[done:] = bytes(total - done)
            return
        done += n


def _pwrite_full(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    done = os.pwrite(fd, data, offset)  # all of it, nearly always: no view, no slice for the first call
    total = len(data)
    if done < total:
        mv = data if isinstance(data, memoryview) else memoryview(data)
        while done < total:
            done += os.pwrite(fd, mv[done:], offset + done)


def file_extents(fd: int, offset: int, length: int, max_extents: int) -> list[Extent]:
    """Data and hole extents of ``[offset, offset+length)`` of an open file, by ``SEEK_DATA``/``SEEK_HOLE``."""
    out: list[Extent] = []
    pos, stop = offset, offset + length
    while pos < stop and len(out) < max_extents:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data at or after pos: a hole up to the end
                data = stop
            elif exc.errno in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ESPIPE):
                out.append(Extent(pos, stop - pos, True))  # cannot tell: report mapped
                break
            else:
                raise
        if data > pos:
            end = min(data, stop)
            out.append(Extent(pos, end - pos, False))
            pos = end
            continue
        hole = os.lseek(fd, pos, os.SEEK_HOLE)
        end = min(max(hole, pos + 1), stop)
        out.append(Extent(pos, end - pos, True))
        pos = end
    return coalesce(out)


class FileStore(BackingStore):
    """A regular file; created sparse (``truncate``) at ``size`` when it does not exist."""

    supports_unmap = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        size: int | None = None,
        *,
        block_size: int = 512,
        read_only: bool = False,
    ) -> None:
        self.path = os.fspath(path)
        flags = os.O_RDONLY if read_only else os.O_RDWR
        exists = os.path.exists(self.path)
        if not exists:
            if read_only:
                raise FileNotFoundError(errno.ENOENT, "backing file does not exist", self.path)
            if size is None:
                raise ValueError("size is required to create a new backing file")
            flags |= os.O_CREAT
        fd = os.open(self.path, flags | os.O_CLOEXEC, 0o600)
        try:
            actual = self._probe_size(fd)
            if not exists or (size is not None and actual < size and not read_only):
                os.ftruncate(fd, size)  # type: ignore[arg-type]
                actual = size  # type: ignore[assignment]
            if size is not None and size < actual:
                actual = size
        except BaseException:
            os.close(fd)
            raise
        super().__init__(actual, block_size=block_size, read_only=read_only)
        self._fd: int | None = fd
        self._can_punch = True
        self.allocation_unit = max(os.fstat(fd).st_blksize, 512)
        self._read_mode, self._write_mode = io_modes(fd)
        # watched writes (_WATCHED): inline again from this monotonic time on; the current back-off, seconds
        self._inline_from = 0.0
        self._stall_backoff = 0.0
        self._last_stall = 0.0
        self.write_stalls = 0  # watched inline writes that took longer than STALL_LIMIT

    @property
    def io_path(self) -> str:
        """How reads and writes are done now, e.g. ``"read=nowait write=pool"`` (for logs and tests)."""
        names = {_POOL: "pool", _NOWAIT: "nowait", _INLINE: "inline", _WATCHED: "watched"}
        return f"read={names[self._read_mode]} write={names[self._write_mode]}"

    @staticmethod
    def _probe_size(fd: int) -> int:
        return os.fstat(fd).st_size

    def probe_size(self) -> int:
        """The file's (or device's) size now, in bytes: it may have grown since the store was opened."""
        return self._probe_size(self._fileno())

    def grow(self, size: int) -> None:
        """Extend the file to ``size`` bytes (sparse) and serve them; raises OSError (ENOSPC, EFBIG...)."""
        if size < self.size:
            raise ValueError(f"a store does not shrink ({self.size} -> {size} bytes)")
        os.ftruncate(self._fileno(), size)
        self.size = size

    def _fileno(self) -> int:
        if self._fd is None:
            raise StoreError("store is closed")
        return self._fd

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        global _pool_in_flight
        _pool_in_flight += 1
        try:
            return await _pool.run(fn, *args)
        finally:
            _pool_in_flight -= 1

    def io_waiting(self) -> bool:
        return _pool_in_flight > 0

    async def read_into(self, offset: int, buf: memoryview) -> None:
        fd = self._fileno()
        total = len(buf)
        self._check_range(offset, total)
        if not total:
            return
        mode = self._read_mode
        if mode:
            done = self._read_at_once(fd, buf, offset)
            if done == total:
                return
            if done:
                buf, offset = buf[done:], offset + done
            if mode == _INLINE:  # a short plain read is the end of the file: the rest reads as zeroes
                _pread_full(fd, buf, offset)
                return
        await self._run(_pread_full, fd, buf, offset)

    def read_now(self, offset: int, length: int) -> bytes | bytearray | None:
        """One ``pread`` into a fresh buffer when reads are inline (tmpfs, ramfs) or one ``RWF_NOWAIT``
        ``preadv`` (a page-cache hit); None when the store is closed, the range is outside it (:meth:`read`
        raises), the read would wait, or the file ends early (:meth:`read` reads the rest as zeroes)."""
        fd = self._fd
        mode = self._read_mode
        if fd is None or not mode or length <= 0 or offset < 0 or offset + length > self.size:
            return None
        if mode == _INLINE:
            data = os.pread(fd, length, offset)  # not zeroed first
            return data if len(data) == length else None
        buf = bytearray(length)
        return buf if self._read_at_once(fd, memoryview(buf), offset) == length else None

    def _read_at_once(self, fd: int, buf: memoryview, offset: int) -> int:
        """One ``preadv`` that does not wait: plain when reads are inline, else ``RWF_NOWAIT``.  Bytes read;
        0 when the read would wait, or when the kernel refuses ``RWF_NOWAIT`` here (reads then go to the
        threads from now on).  Raises OSError (I/O errors)."""
        nowait = self._read_mode == _NOWAIT
        try:
            return os.preadv(fd, (buf,), offset, _RWF_NOWAIT if nowait else 0)
        except BlockingIOError:
            return 0
        except OSError as exc:
            if not nowait or exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            self._read_mode = _POOL  # this file or device has no RWF_NOWAIT reads
            return 0

    async def read(self, offset: int, length: int) -> bytes | bytearray:
        data = self.read_now(offset, length)
        if data is not None:
            return data
        return await super().read(offset, length)  # read_into: the checks, short files, the threads

    def write_now(self, offset: int, data: bytes | bytearray | memoryview) -> bool:
        """One ``pwrite`` when writes are inline (tmpfs, ramfs) or watched and not backed off (see
        :meth:`_watched`); False when the store is closed or read-only, the range is outside it (:meth:`write`
        raises), or writes go ``RWF_NOWAIT`` or to the threads now."""
        fd = self._fd
        mode = self._write_mode
        total = len(data)
        if (
            fd is None
            or mode < _INLINE
            or self.read_only
            or total <= 0
            or offset < 0
            or offset + total > self.size
        ):
            return False
        if mode == _INLINE:
            _pwrite_full(fd, data, offset)
            return True
        started = time.monotonic()
        if started < self._inline_from:
            return False
        _pwrite_full(fd, data, offset)
        self._watched(started, time.monotonic())
        return True

    async def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        if self.write_now(offset, data):
            return
        fd = self._fileno()
        if self.read_only:
            raise StoreError("store is read-only")
        mv = data if isinstance(data, memoryview) else memoryview(data)
        total = len(mv)
        self._check_range(offset, total)
        if not total:
            return
        if self._write_mode == _NOWAIT:
            try:
                done = os.pwritev(fd, (mv,), offset, _RWF_NOWAIT)
            except BlockingIOError:
                done = 0
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                self._write_mode = _WATCHED  # this file or device has no RWF_NOWAIT writes
                done = 0
            if done == total:
                return
            if done:
                mv, offset = mv[done:], offset + done
        # the threads: _POOL, a watched store backed off after a stall, what RWF_NOWAIT left
        await self._run(_pwrite_full, fd, mv, offset)

    def _watched(self, started: float, ended: float) -> None:
        """Account one watched inline write that ran from ``started`` to ``ended`` (monotonic seconds)."""
        took = ended - started
        if took <= STALL_LIMIT:
            if self._stall_backoff and ended - self._last_stall > STALL_BACKOFF_MAX:
                self._stall_backoff = 0.0
            return
        self.write_stalls += 1
        self._last_stall = ended
        self._stall_backoff = min(self._stall_backoff * 2, STALL_BACKOFF_MAX) or STALL_BACKOFF
        self._inline_from = ended + self._stall_backoff
        log.info(
            "%s: a write waited %.1f ms for the device; writes go to the I/O threads for %.0f s",
            self.path,
            took * 1000,
            self._stall_backoff,
        )

    async def flush(self) -> None:
        fd = self._fileno()
        if not self.read_only:
            await self._run(os.fdatasync, fd)

    async def unmap(self, offset: int, length: int) -> None:
        fd = self._fileno()
        if self.read_only:
            raise StoreError("store is read-only")
        self._check_range(offset, length)
        if self._can_punch and await self._run(punch_hole, fd, offset, length):
            return
        self._can_punch = False
        await super().unmap(offset, length)

    async def extents(self, offset: int, length: int, max_extents: int = DEFAULT_MAX_EXTENTS) -> list[Extent]:
        fd = self._fileno()
        self._check_range(offset, length)
        if not length:
            return []
        return await self._run(file_extents, fd, offset, length, max_extents)

    async def allocated_bytes(self) -> int | None:
        st = os.fstat(self._fileno())
        if not stat.S_ISREG(st.st_mode):
            return None
        return min(st.st_blocks * 512, self.size)

    async def close(self) -> None:
        self.close_sync()

    def close_sync(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


class BlockDeviceStore(FileStore):
    """An existing block device; its size comes from ``BLKGETSIZE64`` (or seeking to the end)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        size: int | None = None,
        *,
        block_size: int = 512,
        read_only: bool = False,
    ) -> None:
        p = os.fspath(path)
        if not os.path.exists(p):
            raise FileNotFoundError(errno.ENOENT, "block device does not exist", p)
        super().__init__(p, size, block_size=block_size, read_only=read_only)

    @staticmethod
    def _probe_size(fd: int) -> int:
        if stat.S_ISBLK(os.fstat(fd).st_mode):
            try:
                buf = fcntl.ioctl(fd, BLKGETSIZE64, b"\0" * 8)
                return int(struct.unpack("=Q", buf)[0])
            except OSError:
                pass
        return os.lseek(fd, 0, os.SEEK_END)
