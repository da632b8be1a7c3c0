"""Software RAID (levels 0, 1, 5, 6, 10) built into the target: a backing store over member stores.

See :mod:`.array` for the I/O rules and member life cycle, :mod:`.layout` for md's layouts, :mod:`.gf`
for the parity arithmetic, :mod:`.superblock` and :mod:`.journal` for the on-disk metadata.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

from .layout import LEVELS, MIN_MEMBERS, Geometry

if TYPE_CHECKING:
    from .array import ArrayFailedError, Member, RaidConfigError, RaidStore, SyncProgress

__all__ = [
    "LEVELS", "MIN_MEMBERS", "ArrayFailedError", "Geometry", "Member", "RaidConfigError", "RaidStore",
    "SyncProgress", "as_raid",
]  # fmt: skip

# The array module pulls in numpy (the parity arithmetic, ~14 MB of RSS): it is imported when a RAID name is
# first used (PEP 562), not by every process that merely asks whether a store is a RAID array.
_FROM_ARRAY = frozenset({"ArrayFailedError", "Member", "RaidConfigError", "RaidStore", "SyncProgress"})


def __getattr__(name: str) -> Any:
    if name in _FROM_ARRAY:
        return getattr(importlib.import_module(f"{__name__}.array"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def as_raid(store: object) -> RaidStore | None:
    """``store`` when it is a :class:`RaidStore`, else None -- without importing the parity code when no
    array was ever opened in this process (then no store can be one)."""
    array = sys.modules.get(f"{__name__}.array")
    if array is None:
        return None
    return store if isinstance(store, array.RaidStore) else None
