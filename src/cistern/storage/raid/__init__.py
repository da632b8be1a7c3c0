"""Software RAID (levels 0, 1, 5, 6, 10) built into the target: a backing store over member stores.

See :mod:`.array` for the I/O rules and member life cycle, :mod:`.layout` for md's layouts, :mod:`.gf`
for the parity arithmetic, :mod:`.superblock` and :mod:`.journal` for the on-disk metadata.
"""

from .array import ArrayFailedError, Member, RaidConfigError, RaidStore, SyncProgress
from .layout import LEVELS, MIN_MEMBERS, Geometry

__all__ = ["LEVELS", "MIN_MEMBERS", "ArrayFailedError", "Geometry", "Member", "RaidConfigError", "RaidStore", "SyncProgress"]
