"""Open a RAID array from its configuration (``backend = "raid"``): member stores, journal, assembly.

The target builds its stores synchronously (``build_server``), while assembly is asynchronous member
I/O; :func:`open_raid` runs the assembly to completion on a private event loop in a helper thread and
then rebinds the array's asyncio primitives, so it can be called with or without a running loop.
Member files that do not exist are created sparse at ``member_size``; when every member was created
now, the array is created clean (all-zero members have all-zero parity) instead of resyncing.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import stat
import threading
from typing import Any, Protocol

from ..base import BackingStore
from ..file import BlockDeviceStore, FileStore
from .array import RaidStore
from .journal import Journal
from .locks import RowLocks


class RaidSettings(Protocol):
    """What :func:`open_raid` reads (cistern.config.raid.RaidConfig has these fields)."""

    level: Any
    members: Any
    spares: Any
    member_size: int | None
    chunk: int
    bitmap: bool
    bitmap_region: int
    journal: Any
    journal_size: int
    member_timeout: float
    rebuild_speed_min: int
    rebuild_speed_max: int
    size_tolerance: float
    scrub_interval: float
    assume_clean: bool


def _open_member(path: str, size: int | None, created: list[str], create: bool = True) -> BackingStore | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if not create:
            return None
        if size is None:
            raise FileNotFoundError(f"RAID member {path} does not exist and no member_size is set") from None
        created.append(path)
        return FileStore(path, size)
    if stat.S_ISBLK(st.st_mode):
        return BlockDeviceStore(path)
    return FileStore(path)


def lock_members(paths: list[str]) -> list[int]:
    """Take an exclusive ``flock`` on every member so a second process (another ``cistern serve``, an
    offline ``cistern raid check``) cannot assemble the same array; raises OSError naming the member."""
    fds: list[int] = []
    try:
        for p in paths:
            fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
            fds.append(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise OSError(f"RAID member {p} is in use by another cistern process") from None
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return fds


def _run(coro: Any) -> Any:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=target, name="cistern-raid-assemble")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def open_raid(cfg: RaidSettings, *, block_size: int = 512, name: str = "raid", create: bool = True) -> RaidStore:
    """Open members and journal, assemble (or create) the array.  Raises OSError or
    :class:`~cistern.storage.raid.RaidConfigError` with a one-line message.  ``create=False`` (offline
    commands) creates no file: an absent member is a missing role."""
    opened: list[BackingStore] = []
    created: list[str] = []
    try:
        members = []
        present: list[str] = []
        for p in cfg.members:
            st = _open_member(str(p), cfg.member_size, created, create)
            if st is not None:
                opened.append(st)
                members.append((str(p), st))
                present.append(str(p))
        spares = []
        for p in cfg.spares:
            st = _open_member(str(p), cfg.member_size, created, create)
            if st is not None:
                opened.append(st)
                spares.append((str(p), st))
                present.append(str(p))
        if not members:
            raise FileNotFoundError(f"no member of {name} exists (the array was never served?)")
        journal = None
        if cfg.journal is not None:
            journal = FileStore(str(cfg.journal), cfg.journal_size)
            opened.append(journal)
        locks = lock_members(present)
        assume_clean = cfg.assume_clean or (len(created) >= len(members) and all(
            str(p) in created for p in cfg.members))
        arr: RaidStore = _run(RaidStore.assemble(
            members, spares, level=cfg.level, chunk=cfg.chunk, block_size=block_size,
            bitmap_region=cfg.bitmap_region if cfg.bitmap and cfg.level != 0 else 0, journal_store=journal,
            member_timeout=cfg.member_timeout, speed_min=cfg.rebuild_speed_min, speed_max=cfg.rebuild_speed_max,
            size_tolerance=cfg.size_tolerance / 100, assume_clean=assume_clean, name=name,
            configured_members=len(cfg.members)))
    except BaseException:
        for st in opened:
            st.close_sync()
        for fd in locals().get("locks", []):
            os.close(fd)
        raise
    arr.lock_fds = locks
    arr.scrub_interval = cfg.scrub_interval
    arr.write_gap = float(os.environ.get("CISTERN_RAID_WRITE_GAP", "0") or 0)
    rebind(arr)
    return arr


def rebind(arr: RaidStore) -> None:
    """Fresh asyncio primitives for the loop that will serve the array (assembly ran on another)."""
    arr.locks = RowLocks()
    arr._sb_lock = asyncio.Lock()
    arr._tasks.clear()
    if arr.journal is not None:
        j: Journal = arr.journal
        j._lock = asyncio.Lock()
        j._idle = asyncio.Event()
        j._idle.set()
