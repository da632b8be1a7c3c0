"""``open_store``: build a :class:`BackingStore` from a kind name (as the config layer spells it)."""

from __future__ import annotations

import os

from .base import BackingStore
from .file import BlockDeviceStore, FileStore
from .memory import MemoryStore

STORE_KINDS = ("memory", "file", "block")


def open_store(
    kind: str,
    path: str | os.PathLike[str] | None = None,
    size: int | None = None,
    block_size: int = 512,
    read_only: bool = False,
) -> BackingStore:
    """Open (or create, for ``file``) a backing store.

    ``memory`` needs ``size``; ``file`` needs ``path`` and, when the file does not exist yet, ``size``;
    ``block`` needs ``path`` (``size`` may cap it).
    """
    if kind == "memory":
        if size is None:
            raise ValueError("a memory store needs a size")
        return MemoryStore(size, block_size=block_size, read_only=read_only)
    if kind in ("file", "block"):
        if path is None:
            raise ValueError(f"a {kind} store needs a path")
        cls = FileStore if kind == "file" else BlockDeviceStore
        return cls(path, size, block_size=block_size, read_only=read_only)
    raise ValueError(f"unknown store kind {kind!r}; expected one of {STORE_KINDS}")
