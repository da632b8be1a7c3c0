"""Backing stores: MemoryStore, FileStore on a real sparse temp file (read/write, fsync, hole punch
reading back zeroes), BlockDeviceStore size probing on a regular file, and the open_store factory."""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path
from typing import Any

import pytest

from cistern.storage import BlockDeviceStore, FileStore, MemoryStore, StoreError, open_store


def test_memory_store_roundtrip_and_unmap() -> None:
    async def go() -> None:
        s = MemoryStore(8192, block_size=4096)
        assert s.num_blocks == 2 and s.supports_unmap
        await s.write(100, memoryview(b"hello"))
        buf = bytearray(5)
        await s.read_into(100, memoryview(buf))
        assert buf == b"hello"
        await s.unmap(0, 4096)
        await s.read_into(100, memoryview(buf))
        assert buf == bytes(5)
        with pytest.raises(StoreError):
            await s.write(8190, b"abc")
        await s.close()
        with pytest.raises(StoreError):
            await s.read_into(0, memoryview(bytearray(1)))

    asyncio.run(go())


def test_memory_store_read_only_and_bad_block_size() -> None:
    with pytest.raises(ValueError):
        MemoryStore(4096, block_size=1024)

    async def go() -> None:
        s = MemoryStore(4096, read_only=True)
        with pytest.raises(StoreError):
            await s.write(0, b"x")

    asyncio.run(go())


def test_file_store_creates_sparse_file(tmp_path: Path) -> None:
    path = tmp_path / "disk.img"
    size = 64 * 1024 * 1024

    async def go() -> None:
        s = FileStore(path, size)
        assert s.size == size and path.stat().st_size == size
        assert path.stat().st_blocks * 512 < 1024 * 1024  # sparse: nothing allocated yet
        data = os.urandom(8192)
        await s.write(1 << 20, memoryview(data))
        await s.flush()
        buf = bytearray(8192)
        await s.read_into(1 << 20, memoryview(buf))
        assert buf == data
        await s.close()
        await s.close()  # idempotent
        reopened = FileStore(path)
        assert reopened.size == size
        buf2 = bytearray(8192)
        await reopened.read_into(1 << 20, memoryview(buf2))
        assert buf2 == data
        await reopened.close()

    asyncio.run(go())


def test_file_store_unmap_reads_back_zeroes(tmp_path: Path) -> None:
    path = tmp_path / "thin.img"

    async def go() -> None:
        s = FileStore(path, 4 * 1024 * 1024)
        await s.write(0, b"\xff" * (2 * 1024 * 1024))
        await s.flush()
        allocated = path.stat().st_blocks
        await s.unmap(512 * 1024, 1024 * 1024)
        buf = bytearray(2 * 1024 * 1024)
        await s.read_into(0, memoryview(buf))
        assert buf[: 512 * 1024] == b"\xff" * (512 * 1024)
        assert buf[512 * 1024 : 1536 * 1024] == bytes(1024 * 1024)
        assert buf[1536 * 1024 :] == b"\xff" * (512 * 1024)
        assert path.stat().st_size == 4 * 1024 * 1024  # KEEP_SIZE
        assert path.stat().st_blocks <= allocated
        await s.close()

    asyncio.run(go())


def test_file_store_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        FileStore(tmp_path / "new.img")  # no size for a new file
    with pytest.raises(FileNotFoundError):
        FileStore(tmp_path / "missing.img", read_only=True)

    async def go() -> None:
        path = tmp_path / "ro.img"
        FileStore(path, 4096)
        s = FileStore(path, read_only=True)
        assert s.read_only
        with pytest.raises(StoreError):
            await s.write(0, b"x")
        with pytest.raises(StoreError):
            await s.read_into(4000, memoryview(bytearray(200)))
        await s.close()

    asyncio.run(go())


def test_block_device_store_probes_size_of_existing_path(tmp_path: Path) -> None:
    path = tmp_path / "dev.img"
    path.write_bytes(b"\x01" * 8192)

    async def go() -> None:
        s = BlockDeviceStore(path)
        assert s.size == 8192
        buf = bytearray(512)
        await s.read_into(512, memoryview(buf))
        assert buf == b"\x01" * 512
        await s.close()

    asyncio.run(go())
    with pytest.raises(FileNotFoundError):
        BlockDeviceStore(tmp_path / "nope")


def test_open_store_factory(tmp_path: Path) -> None:
    assert isinstance(open_store("memory", size=4096), MemoryStore)
    fs = open_store("file", tmp_path / "f.img", 8192, block_size=4096)
    assert isinstance(fs, FileStore) and fs.block_size == 4096
    asyncio.run(fs.close())
    with pytest.raises(ValueError):
        open_store("tape", size=1)
    with pytest.raises(ValueError):
        open_store("memory")
    with pytest.raises(ValueError):
        open_store("file")


def _roundtrip_io_paths(path: Path) -> list[str]:
    """Write and read back across cached and evicted pages; returns the store's io_path after each step."""
    seen: list[str] = []

    async def go() -> None:
        s = FileStore(path, 1 << 20)
        seen.append(s.io_path)
        pattern = bytes(range(256)) * 64  # 16 KiB
        await s.write(8192, pattern)
        seen.append(s.io_path)
        fd = os.open(path, os.O_RDONLY)
        try:  # push the pages out of the page cache: an RWF_NOWAIT read must fall back, not fail
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        buf = memoryview(bytearray(len(pattern) + 8192))
        await s.read_into(0, buf)
        assert bytes(buf[:8192]) == bytes(8192) and bytes(buf[8192:]) == pattern
        await s.read_into(0, buf)  # cached now
        assert bytes(buf[8192:]) == pattern
        seen.append(s.io_path)
        await s.close()

    asyncio.run(go())
    return seen


def test_file_store_io_path_on_disk_filesystem(tmp_path: Path) -> None:
    """On a disk filesystem reads try RWF_NOWAIT inline; writes keep it only where the kernel has it."""
    seen = _roundtrip_io_paths(tmp_path / "disk.img")
    if not hasattr(os, "RWF_NOWAIT"):
        assert seen == ["read=pool write=pool"] * 3
        return
    assert seen[0] == "read=nowait write=nowait"
    assert seen[-1].startswith("read=nowait") or seen[-1].startswith("read=pool")


def test_file_store_io_path_on_tmpfs() -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK):
        pytest.skip("no writable /dev/shm on this machine")
    path = shm / f"cistern-test-{os.getpid()}.img"
    try:
        assert _roundtrip_io_paths(path) == ["read=inline write=inline"] * 3
    finally:
        path.unlink(missing_ok=True)


def test_file_store_pool_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CISTERN_IO_POOL_ONLY", "1")
    assert _roundtrip_io_paths(tmp_path / "pool.img") == ["read=pool write=pool"] * 3


def test_io_pool_delivers_results_and_errors_in_batches() -> None:
    from cistern.storage.file import IoPool

    pool = IoPool(2)

    def fail() -> None:
        raise OSError(5, "EIO")

    async def go() -> None:
        results = await asyncio.gather(*(pool.run(pow, i, 2) for i in range(200)))
        assert results == [i * i for i in range(200)]
        with pytest.raises(OSError):
            await pool.run(fail)

    asyncio.run(go())
    asyncio.run(go())  # a second event loop: completions go to the loop that asked


def test_writes_without_rwf_nowait_are_done_inline_and_watched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the kernel refuses RWF_NOWAIT writes (block devices, ext4), writes run inline and timed: one that
    waited longer than STALL_LIMIT sends the next ones to the I/O threads for a back-off that doubles."""
    from cistern.storage import file as file_mod

    if not file_mod._RWF_NOWAIT:
        pytest.skip("this Python has no RWF_NOWAIT")
    clock = [1000.0]
    slow = [0.0]  # how long the next inline write takes on the fake clock
    real_pwritev = os.pwritev
    real_pwrite_full = file_mod._pwrite_full

    def pwritev(fd: int, buffers: Any, offset: int, flags: int = 0) -> int:
        if flags & file_mod._RWF_NOWAIT:
            raise OSError(errno.EOPNOTSUPP, "no RWF_NOWAIT writes here")
        return real_pwritev(fd, buffers, offset, flags)

    def pwrite_full(fd: int, mv: memoryview, offset: int) -> None:
        real_pwrite_full(fd, mv, offset)
        clock[0] += slow[0]

    pooled: list[int] = []
    real_run = file_mod.FileStore._run

    async def run(self: Any, fn: Any, *args: Any) -> Any:
        if fn is file_mod._pwrite_full:
            pooled.append(args[2])
        return await real_run(self, fn, *args)

    monkeypatch.setattr(file_mod.os, "pwritev", pwritev)
    monkeypatch.setattr(file_mod, "_pwrite_full", pwrite_full)
    monkeypatch.setattr(file_mod.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(file_mod.FileStore, "_run", run)
    monkeypatch.delenv("CISTERN_IO_POOL_ONLY", raising=False)

    async def go() -> None:
        s = FileStore(tmp_path / "watched.img", 1 << 20)
        s._read_mode = s._write_mode = file_mod._NOWAIT  # as on a disk filesystem
        await s.write(0, b"a" * 4096)  # EOPNOTSUPP: this one goes to the threads, the store turns to watched
        assert pooled == [0] and s.io_path.endswith("write=watched")
        await s.write(4096, b"b" * 4096)  # inline, fast
        assert pooled == [0] and s.write_stalls == 0
        slow[0] = 0.010
        await s.write(8192, b"c" * 4096)  # inline, but it waited 10 ms: a stall
        slow[0] = 0.0
        assert s.write_stalls == 1 and pooled == [0]
        await s.write(12288, b"d" * 4096)  # within the 1 s back-off: to the threads
        assert pooled == [0, 12288]
        clock[0] += file_mod.STALL_BACKOFF + 0.001
        slow[0] = 0.010
        await s.write(16384, b"e" * 4096)  # inline again, and stalls again: back-off doubles
        slow[0] = 0.0
        clock[0] += file_mod.STALL_BACKOFF + 0.001  # 1 s later: still within the 2 s back-off
        await s.write(20480, b"f" * 4096)
        assert s.write_stalls == 2 and pooled == [0, 12288, 20480]
        clock[0] += file_mod.STALL_BACKOFF
        await s.write(24576, b"g" * 4096)  # the back-off is over: inline
        assert pooled == [0, 12288, 20480]
        buf = memoryview(bytearray(7 * 4096))
        await s.read_into(0, buf)
        assert bytes(buf) == b"".join(bytes([c]) * 4096 for c in b"abcdefg")
        await s.close()

    asyncio.run(go())


def test_file_store_answers_at_once_when_it_can(tmp_path: Path) -> None:
    """read_now/write_now (the READ/WRITE hot path tries them before awaiting read/write) do the I/O
    without a coroutine where no waiting is needed, and otherwise do nothing and leave it to read/write,
    which raise the errors: a closed store, a range outside it, a read-only store."""
    from cistern.storage import file as file_mod

    async def go() -> None:
        s = FileStore(tmp_path / "now.img", 64 * 1024)
        s._read_mode = s._write_mode = file_mod._INLINE  # as on tmpfs, whatever tmp_path is
        assert s.write_now(4096, b"x" * 4096) is True
        assert s.read_now(4096, 4096) == b"x" * 4096
        assert await s.read(0, 8192) == bytes(4096) + b"x" * 4096  # read answers from read_now too
        assert s.write_now(64 * 1024 - 512, b"y" * 1024) is False  # past the end: nothing written
        with pytest.raises(StoreError):
            await s.write(64 * 1024 - 512, b"y" * 1024)
        assert s.read_now(64 * 1024 - 512, 1024) is None
        with pytest.raises(StoreError):
            await s.read(64 * 1024 - 512, 1024)
        assert s.read_now(-512, 512) is None and s.write_now(-512, b"z" * 512) is False
        # a file shorter than the store (shrunk behind our back): read_now declines, read fills zeroes
        os.truncate(s.path, 4096 + 2048)
        assert s.read_now(4096, 4096) is None
        assert await s.read(4096, 4096) == b"x" * 2048 + bytes(2048)
        # writes that must go to the threads are not done here
        s._write_mode = file_mod._POOL
        assert s.write_now(0, b"p" * 512) is False
        await s.write(0, b"p" * 512)
        s._write_mode = file_mod._WATCHED
        s._inline_from = file_mod.time.monotonic() + 60  # backed off after a stall
        assert s.write_now(512, b"q" * 512) is False
        s._inline_from = 0.0
        assert s.write_now(512, b"q" * 512) is True
        assert await s.read(0, 1024) == b"p" * 512 + b"q" * 512
        await s.close()
        assert s.read_now(0, 512) is None and s.write_now(0, b"c" * 512) is False
        with pytest.raises(StoreError):
            await s.read(0, 512)
        ro = FileStore(tmp_path / "now.img", read_only=True)
        ro._write_mode = file_mod._INLINE
        assert ro.write_now(0, b"r" * 512) is False
        with pytest.raises(StoreError):
            await ro.write(0, b"r" * 512)
        await ro.close()

    asyncio.run(go())


def test_file_store_read_now_where_the_kernel_refuses_rwf_nowait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page-cache hit is read at once with RWF_NOWAIT; where the kernel refuses the flag, read_now declines,
    the store's reads go to the threads from then on, and read still returns the bytes."""
    from cistern.storage import file as file_mod

    if not file_mod._RWF_NOWAIT:
        pytest.skip("this Python has no RWF_NOWAIT")
    real_preadv = os.preadv
    refuse = [False]

    def preadv(fd: int, buffers: Any, offset: int, flags: int = 0) -> int:
        if refuse[0] and flags & file_mod._RWF_NOWAIT:
            raise OSError(errno.EOPNOTSUPP, "no RWF_NOWAIT reads here")
        return real_preadv(fd, buffers, offset, flags)

    monkeypatch.setattr(file_mod.os, "preadv", preadv)

    async def go() -> None:
        s = FileStore(tmp_path / "nowait.img", 64 * 1024)
        await s.write(0, b"n" * 4096)
        s._read_mode = file_mod._NOWAIT  # as on a disk filesystem
        assert s.read_now(0, 4096) == b"n" * 4096  # in the page cache: read at once
        refuse[0] = True
        assert s.read_now(0, 4096) is None
        assert s.io_path.startswith("read=pool")
        assert await s.read(0, 4096) == b"n" * 4096
        await s.close()

    asyncio.run(go())
