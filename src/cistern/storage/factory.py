"""``open_store``: build a :class:`BackingStore` from a kind name (as the config layer spells it).

Size rules (docs/config.md, ``size``), so a LUN is never silently smaller or larger than configured:

- ``file`` that does not exist: created sparse at ``size`` (``size`` required); if the filesystem
  refuses the length (EFBIG, ENOSPC...) the new file is removed again and the error names it.
- ``file`` that exists: with ``size``, a file of exactly that size is used as is, a smaller one is
  grown (sparse, logged at WARNING; refused for a read-only LUN), a LARGER one is refused (it would
  hide data). Without ``size`` the file's length is the LUN size; an empty file or one that is not a
  whole number of blocks is refused.
- ``block``: ``size`` may cap the device (expose its first ``size`` bytes); a device smaller than
  ``size`` is refused.

Every file and device is locked for this process (:mod:`cistern.storage.lock`): a second target
exporting it is refused with a message naming the holder; a block device that is mounted or held
exclusively (``O_EXCL``) by another program is refused too.
"""

from __future__ import annotations

import errno
import logging
import os
import stat

from cistern.config.sizes import format_size, human_size

from .base import BackingStore
from .file import BlockDeviceStore, FileStore
from .lock import check_device_unused, lock_exclusive
from .memory import MemoryStore

STORE_KINDS = ("memory", "file", "block")
log = logging.getLogger(__name__)

_CREATE_HINTS = {
    errno.EFBIG: "the file is larger than this filesystem allows",
    errno.ENOSPC: "no space left on the filesystem",
    errno.EINVAL: "the filesystem does not accept that length",
}


def _set_length(path: str, fd: int, size: int, created: bool) -> None:
    try:
        os.ftruncate(fd, size)
    except OSError as exc:
        os.close(fd)
        if created:
            os.unlink(path)
        hint = _CREATE_HINTS.get(exc.errno or 0, exc.strerror or str(exc))
        verb = "create" if created else "grow"
        raise OSError(exc.errno, f"cannot {verb} {path} at {human_size(size)}: {hint}") from None


def prepare_file(path: str, size: int | None, block_size: int, read_only: bool) -> None:
    """Create or grow ``path`` per the size rules of the module docstring; raise ``ValueError``/``OSError``
    with a message naming the file otherwise."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    if st is None:
        if read_only:
            raise FileNotFoundError(errno.ENOENT, "backing file does not exist", path)
        if size is None:
            raise ValueError(f"{path} does not exist and no size is configured to create it")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        _set_length(path, fd, size, created=True)
        os.close(fd)
        return
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f'{path} is not a regular file (use backend = "block" for devices)')
    actual = st.st_size
    if size is None:
        if actual < block_size or actual % block_size:
            raise ValueError(
                f"{path} is {actual} bytes, not a whole number of {block_size}-byte blocks"
                + ("; set size to grow it" if actual < block_size else "; set size to use a part of it")
            )
        return
    if actual > size:
        raise ValueError(
            f"{path} is {human_size(actual)} ({actual} bytes) but size = {format_size(size)}: serving it "
            f'would hide {actual - size} bytes; set size = "{format_size(actual)}" or remove size'
        )
    if actual < size:
        if read_only:
            raise ValueError(
                f"{path} is {human_size(actual)}, smaller than size = {format_size(size)}, and a read-only "
                "LUN cannot grow it"
            )
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        _set_length(path, fd, size, created=False)
        os.close(fd)
        log.warning(
            "grew %s from %s to %s (size = %s)", path, human_size(actual), human_size(size), format_size(size)
        )


def open_store(
    kind: str,
    path: str | os.PathLike[str] | None = None,
    size: int | None = None,
    block_size: int = 512,
    read_only: bool = False,
) -> BackingStore:
    """Open (or create, for ``file``) a backing store, locked for this process.

    ``memory`` needs ``size``; ``file`` needs ``path`` and, when the file does not exist yet, ``size``;
    ``block`` needs ``path`` (``size`` may cap it). Raises ``ValueError`` (a size rule) or ``OSError``
    (including :class:`~cistern.storage.lock.StoreInUse`) with a message naming the file.
    """
    if kind == "memory":
        if size is None:
            raise ValueError("a memory store needs a size")
        return MemoryStore(size, block_size=block_size, read_only=read_only)
    if kind not in ("file", "block"):
        raise ValueError(f"unknown store kind {kind!r}; expected one of {STORE_KINDS}")
    if path is None:
        raise ValueError(f"a {kind} store needs a path")
    p = os.fspath(path)
    store: FileStore
    if kind == "file":
        prepare_file(p, size, block_size, read_only)
        store = FileStore(p, size, block_size=block_size, read_only=read_only)
    else:
        if os.path.exists(p) and stat.S_ISBLK(os.stat(p).st_mode):
            check_device_unused(p)
        store = BlockDeviceStore(p, None, block_size=block_size, read_only=read_only)
        if size is not None:
            if store.size < size:
                device = store.size
                store.close_sync()
                raise ValueError(
                    f"block device {p} is {human_size(device)} ({device} bytes), smaller than size = "
                    f"{format_size(size)}"
                )
            store.size = size
    try:
        lock_exclusive(store._fileno(), p)
    except BaseException:
        store.close_sync()
        raise
    return store
