"""What each kind of LUN allows live, and the checks behind it (no I/O beyond probing a store's size).

Used by :class:`~cistern.control.live.Controller` in its prepare phase; every refusal is an
:class:`~cistern.control.errors.AdminError` naming the LUN(s) and the rule:

- **Tape libraries** (SMC-3 / SSC-4 over ``storage/tape``): the tape LUNs of a target with a medium changer
  are the changer's drives, in LUN order (``config/tape.py``).  A changer and its drives are added together,
  or removed together; a drive is not removed from (or added to) a changer that stays — the error names the
  drive and the changer.  Standalone drives come and go one by one.
- **Replacing a LUN** (fields other than ``size`` changed): when the fields that define the store (backend,
  path, size, block_size, read_only, raid) are unchanged, the new unit is built over the *same open store*
  (inquiry data, thin provisioning, reservations file... change; the data and the store's flock stay).
  Otherwise the old store would still hold its file's lock (``storage/lock.py``), a memory LUN its data,
  a tape LUN its library lock: refused, "remove it, then add it" (two live changes).
- **Resizing** (SBC-4 5.3 capacity; CAPACITY DATA HAS CHANGED 2A/09 to every I_T nexus): file LUNs grow
  (``ftruncate``), memory LUNs grow (``mremap``), a block LUN's ``size`` cap moves up to the device's size;
  shrinking is refused for every kind (it would drop data initiators wrote).  :func:`rescan_size` re-reads
  the size of a block device (or file) that grew underneath (``losetup -c``, ``lvextend``).
"""

from __future__ import annotations

from collections.abc import Mapping

from cistern.config.lun import LunConfig
from cistern.config.tape import TAPE_BACKENDS
from cistern.config.target import TargetConfig
from cistern.control.changes import Change, lun_obj
from cistern.control.errors import AdminError
from cistern.scsi.lu import LogicalUnit
from cistern.storage.base import BackingStore
from cistern.storage.file import BlockDeviceStore, FileStore
from cistern.storage.memory import MemoryStore
from cistern.storage.raid import as_raid

#: the LUN fields that define its backing store; a replace changing none of them keeps the store open
STORE_FIELDS = frozenset({"backend", "path", "size", "block_size", "read_only", "raid"})


def kind_of(lcfg: LunConfig) -> str:
    """A LUN's kind in an operator's words."""
    return {"tape": "tape drive", "changer": "medium changer", "ses": "SES", "raid": "RAID"}.get(
        lcfg.backend, f"{lcfg.backend} LUN"
    )


def _luns_text(numbers: list[int]) -> str:
    return ", ".join(f"LUN {n}" for n in numbers)


def library_issues(name: str, old: TargetConfig, new: TargetConfig, changes: list[Change]) -> list[str]:
    """Why the tape LUN changes of target ``name`` would leave its library inconsistent (empty: fine)."""
    touched = {c.lun: c.action for c in changes if c.target == name and c.lun is not None}
    old_changer = next((lun for lun in old.luns if lun.backend == "changer"), None)
    new_changer = next((lun for lun in new.luns if lun.backend == "changer"), None)
    old_drives = sorted(lun.lun for lun in old.luns if lun.backend == "tape")
    new_drives = sorted(lun.lun for lun in new.luns if lun.backend == "tape")
    issues: list[str] = []
    changer_stays = (
        old_changer is not None
        and new_changer is not None
        and old_changer.lun == new_changer.lun
        and old_changer.lun not in touched
    )
    if changer_stays:
        assert old_changer is not None
        c = old_changer.lun
        for index, drive in enumerate(old_drives):
            if drive not in new_drives:
                others = [d for d in old_drives if d != drive]
                rest = f" and its other drives ({_luns_text(others)})" if others else ""
                issues.append(
                    f"{lun_obj(name, drive)}: tape drive LUN {drive} is drive {index + 1} of medium changer "
                    f"LUN {c}; remove the changer (LUN {c}){rest} together with it"
                )
        for drive in new_drives:
            if drive not in old_drives:
                issues.append(
                    f"{lun_obj(name, drive)}: medium changer LUN {c} has a fixed set of drives "
                    f"({_luns_text(old_drives)}); to give it tape drive LUN {drive}, remove the changer and "
                    "its drives, then add them back together with the new drive"
                )
    elif old_changer is not None and old_changer.lun in touched:
        kept = [d for d in old_drives if d in new_drives and touched.get(d) != "remove"]
        if kept:
            issues.append(
                f"{lun_obj(name, old_changer.lun)}: removing medium changer LUN {old_changer.lun} needs its "
                f"drives removed with it; {_luns_text(kept)} would stay"
            )
    if new_changer is not None and (old_changer is None or new_changer.lun in touched):
        kept = [d for d in new_drives if d in old_drives and touched.get(d) != "add"]
        if kept:
            issues.append(
                f"{lun_obj(name, new_changer.lun)}: a new medium changer takes every tape LUN of the target as "
                f"its drive, and {_luns_text(kept)} is served already: remove it first"
            )
    return issues


def reuse_store(change: Change, old: LunConfig, new: LunConfig) -> bool:
    """For a ``replace`` of LUN ``old`` by ``new``: True when the new unit is built over the old store
    (only unit settings changed); False when a new store is opened (nothing of the old one is shared).
    Raises :class:`AdminError` (409) when neither is safe (see the module docstring)."""
    fields = {
        key
        for key in old.model_dump().keys() | new.model_dump().keys()
        if old.model_dump().get(key) != new.model_dump().get(key)
    }
    how = f"remove LUN {change.lun}, then add it back"
    for lcfg in (old, new):
        if lcfg.backend in TAPE_BACKENDS:
            raise AdminError(
                change.obj,
                f"a {kind_of(lcfg)} LUN is not changed in place (its library stays locked while it serves): "
                f"{how} (two live changes)",
                409,
            )
    if old.backend == "ses" or new.backend == "ses":
        return False  # an SES unit has no store
    if not fields & STORE_FIELDS:
        return True
    shared = {str(p) for p in old.backing_paths()} & {str(p) for p in new.backing_paths()}
    changed = ", ".join(sorted(fields & STORE_FIELDS))
    if shared:
        raise AdminError(
            change.obj,
            f"changing {changed} reopens {', '.join(sorted(shared))}, which the running LUN keeps open and "
            f"locked: {how} (two live changes)",
            409,
        )
    if old.backend == "memory":
        raise AdminError(
            change.obj, f"changing {changed} of a memory LUN would drop its data: {how} (two live changes)", 409
        )
    return False


def target_stores(name: str, old: TargetConfig, new: TargetConfig, running: Mapping[int, object]) -> dict[int, BackingStore]:
    """For a target rebuilt live (portal-group tags or ALUA mode changed): the open stores its new version
    takes over, by LUN (those whose store-defining fields did not change).  AdminError (409) when a LUN
    of the old version would keep a file, device or library the new one needs."""
    before = {lun.lun: lun for lun in old.luns}
    out: dict[int, BackingStore] = {}
    for lcfg in new.luns:
        prior = before.get(lcfg.lun)
        if prior is None:
            continue
        change = Change("replace", lun_obj(name, lcfg.lun), "target rebuilt", name, lcfg.lun)
        try:
            keep = reuse_store(change, prior, lcfg)
        except AdminError as exc:
            raise AdminError(
                f"target {name}", f"rebuilding it (portal group tags or ALUA mode changed): {exc}; or remove "
                "the target and add it back", 409
            ) from None
        unit = running.get(lcfg.lun)
        if keep and isinstance(unit, LogicalUnit):
            out[lcfg.lun] = unit.store
    return out


def check_resize(change: Change, lu: LogicalUnit, size: int | None) -> int | None:
    """The new size in bytes of a ``resize`` (None: nothing to do); AdminError when it cannot be done live."""
    store = lu.store
    if size is None or size == store.size:
        return None
    if size < store.size:
        raise AdminError(
            change.obj,
            f"shrinking from {store.size} to {size} bytes would drop the data past the new end; refused",
        )
    if lu.read_only:
        raise AdminError(change.obj, "a read-only LUN cannot grow")
    if isinstance(store, BlockDeviceStore):
        device = store.probe_size()
        if size > device:
            raise AdminError(
                change.obj,
                f"the block device is {device} bytes, less than size = {size}: grow the device first "
                "(then 'lun rescan' or a larger size)",
            )
    elif not isinstance(store, FileStore | MemoryStore):
        raise AdminError(change.obj, f"a {type(store).__name__} has no size to change (RAID: grow the array)")
    return size


def prepare_resize(lu: LogicalUnit, size: int) -> None:
    """What may fail before a resize is committed: room for a memory store (OSError)."""
    if isinstance(lu.store, MemoryStore):
        lu.store.reserve(size)


def commit_resize(lu: LogicalUnit, size: int) -> None:
    """Make the store ``size`` bytes (the caller then re-reads the LU's capacity and sets the UA)."""
    store: BackingStore = lu.store
    if isinstance(store, MemoryStore):
        store.set_size(size)
    elif isinstance(store, BlockDeviceStore):
        store.size = size  # the cap moves; the device already has room (checked)
    else:
        assert isinstance(store, FileStore)
        store.grow(size)


def rescan_size(obj: str, lu: LogicalUnit, cap: int | None) -> int | None:
    """The size a block (or file) LUN has now that its device may have grown: the device's size, at most
    ``cap`` (the config's ``size``).  None when unchanged; AdminError when it shrank (refused: the
    initiators' data past the new end is gone, and the LUN keeps announcing its old capacity)."""
    store = lu.store
    if as_raid(store) is not None or not isinstance(store, FileStore):
        raise AdminError(obj, f"only block and file LUNs are rescanned, not a {type(store).__name__}", 409)
    size = store.probe_size()
    if cap is not None:
        size = min(size, cap)
    size -= size % lu.block_size
    if size == store.size:
        return None
    if size < store.size:
        raise AdminError(
            obj,
            f"{store.path} is now {size} bytes, less than the {store.size} the LUN serves: a device that "
            "shrank is not followed live (grow it back, or remove the LUN)",
            409,
        )
    return size
