"""Exclusive use of a backing file or block device by one ``cistern serve`` process.

:func:`lock_exclusive` ``(fd, path)`` takes ``flock(LOCK_EX | LOCK_NB)`` on the store's own descriptor,
so the lock lives exactly as long as the store keeps the file open (closing the store releases it; a
killed process releases it too). A second process exporting the same file or device gets
:class:`StoreInUse`, whose message names the holder (PID and command line, from ``/proc/locks``).

:func:`check_device_unused` opens a block device with ``O_EXCL`` once: Linux refuses that (EBUSY)
while the device is mounted, part of a RAID/LVM/dm device, or opened ``O_EXCL`` by another program.
"""

from __future__ import annotations

import errno
import fcntl
import os


class StoreInUse(OSError):
    """The file or device is already in use by another process (errno ``EBUSY``)."""


def _holder(path: str) -> str | None:
    """``PID 123 (cistern serve -c x.toml)`` holding a flock on ``path``'s inode, from /proc/locks."""
    try:
        st = os.stat(path)
        with open("/proc/locks", encoding="ascii", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    want = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    for line in lines:
        fields = line.split()
        if len(fields) < 6 or fields[1] not in ("FLOCK", "->") or "FLOCK" not in fields[:3]:
            continue
        idx = fields.index("FLOCK")
        try:
            pid = int(fields[idx + 3])
            major, minor, ino = fields[idx + 4].split(":")
            ident = (int(major, 16), int(minor, 16), int(ino))
        except (ValueError, IndexError):
            continue
        if ident != want or pid == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            cmd = ""
        return f"PID {pid}" + (f" ({cmd[:200]})" if cmd else "")
    return None


def lock_exclusive(fd: int, path: str) -> None:
    """Lock ``fd`` (open on ``path``) for this process; raises :class:`StoreInUse` naming the holder."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(path) or "another process"
        raise StoreInUse(
            errno.EBUSY, f"{path} is already exported by {holder}; two targets must not share a backing store"
        ) from None


def check_device_unused(path: str) -> None:
    """Raise :class:`StoreInUse` when the block device is mounted or held exclusively elsewhere."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_EXCL | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise StoreInUse(
                errno.EBUSY,
                f"{path} is in use (mounted, part of a RAID/LVM device, or opened exclusively by another "
                "program)",
            ) from None
        raise
    os.close(fd)
