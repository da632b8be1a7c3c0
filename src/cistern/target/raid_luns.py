"""Target wiring of RAID LUNs and the enclosure services (SES) LU of a target.

- :func:`watch_raid`: a RAID LUN's array events reach its initiators as unit attentions (SPC-4 ASC 3Fh:
  REDUNDANCY GROUP CREATED OR MODIFIED (3F/06) when the array degrades, fails or recovers, SPARE CREATED
  OR MODIFIED (3F/08) when a spare is added or takes over) next to the server log line the array writes.
- :func:`build_ses_luns`: ``backend = "ses"`` LUNs become :class:`~cistern.scsi.ses.EnclosureUnit` over
  every RAID LUN of the same target.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from cistern.scsi.ses import EnclosureUnit
from cistern.storage.raid import as_raid

if TYPE_CHECKING:
    from cistern.config.target import TargetConfig
    from cistern.scsi.unit import LogicalUnitBase
    from cistern.storage.raid import RaidStore

REDUNDANCY_GROUP_MODIFIED = (0x3F, 0x06)
SPARE_MODIFIED = (0x3F, 0x08)
_REDUNDANCY_EVENTS = {"Fail", "DegradedArray", "ArrayFailed", "RebuildFinished", "ReAdded"}
_SPARE_EVENTS = {"SpareActive", "SpareAdded", "FailSpare"}


def watch_raid(store: RaidStore, lu: LogicalUnitBase) -> Callable[[], None]:
    """Turn ``store``'s state changes into unit attentions on ``lu``; returns the function that stops it
    (a live change that hands the store over to a new unit)."""

    def on_event(kind: str, info: dict[str, Any]) -> None:
        if kind in _REDUNDANCY_EVENTS:
            lu.establish_ua_all(REDUNDANCY_GROUP_MODIFIED)
        elif kind in _SPARE_EVENTS:
            lu.establish_ua_all(SPARE_MODIFIED)

    store.listeners.append(on_event)

    def unwatch() -> None:
        if on_event in store.listeners:
            store.listeners.remove(on_event)

    return unwatch


def raid_arrays(luns: Mapping[int, LogicalUnitBase]) -> list[tuple[str, RaidStore]]:
    """(label ``lunN``, store) of every RAID LUN in ``luns``, in LUN order: what an SES LU reports."""
    arrays: list[tuple[str, RaidStore]] = []
    for n, lu in sorted(luns.items()):
        store = as_raid(getattr(lu, "store", None))
        if store is not None:
            arrays.append((f"lun{n}", store))
    return arrays


def build_ses_luns(
    tcfg: TargetConfig, luns: dict[int, LogicalUnitBase], serial_for: Callable[[int], str]
) -> dict[int, EnclosureUnit]:
    """The target's SES LUs, each reporting the RAID LUNs already in ``luns``."""
    arrays = raid_arrays(luns)
    out: dict[int, EnclosureUnit] = {}
    for lcfg in tcfg.luns:
        if lcfg.backend != "ses":
            continue
        kwargs = {k: getattr(lcfg, k) for k in ("vendor", "product", "revision") if getattr(lcfg, k, None)}
        out[lcfg.lun] = EnclosureUnit(arrays, lun=lcfg.lun, serial=lcfg.serial or serial_for(lcfg.lun), **kwargs)
    return out
