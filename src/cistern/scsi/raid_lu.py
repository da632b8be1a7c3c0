"""A disk LU on a RAID array: the SBC disk plus the array's health in LOG SENSE and mode page 0x1C.

- Informational exceptions (SPC-4 7.3.8, log page 0x2F; mode page 0x1C with DEXCPT=0, MRIE=0: the
  initiator polls): parameter 0000h carries INFORMATIONAL EXCEPTION ADDITIONAL SENSE CODE 5Dh/00h
  (FAILURE PREDICTION THRESHOLD EXCEEDED) while the array is degraded, rebuilding or failed — one more
  member lost would lose data — and 00h/00h otherwise; the temperature byte is the host's first hwmon
  temperature or FFh (not available).
- Temperature (SPC-4 7.3.21, log page 0x0D): parameter 0000h, FFh when the host has no sensor.
- RAID status (vendor-specific log page 0x30): 0000h array state (0 clean, 1 degraded, 2 rebuilding,
  3 checking, 4 resyncing, 5 failed), 0001h members not in sync, 0002h sync progress in 1/10000
  (FFFFh: no sync running), 0003h sync speed in KiB/s, 0004h mismatch count of the last check, and
  0100h + n the I/O error count of the device in role n.
LOG SENSE (0x4D) joins the disk's command table for this LU only.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import log
from .commands import COMMANDS
from .lu import LogicalUnit
from .mode import DISK_PAGES
from .table import CommandSpec, CommandTable
from .unit import LogPageBuilder, ModePageBuilder

if TYPE_CHECKING:
    from ..storage.raid import RaidStore

STATE_CODES = {"clean": 0, "degraded": 1, "rebuilding": 2, "checking": 3, "resyncing": 4, "failed": 5}
FAILURE_PREDICTION_THRESHOLD_EXCEEDED = (0x5D, 0x00)

RAID_DISK_COMMANDS = CommandTable((
    *COMMANDS,
    CommandSpec(0x4D, None, "LOG SENSE", bytes((0x4D, 0x03, 0xFF, 0xFF, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0)),
                log.log_sense, needs_medium=False),
))


def _temperature() -> int:
    from ..storage.raid.hwmon import read_sensors

    temps, _ = read_sensors()
    return max(0, min(0xFE, round(temps[0].value))) if temps else 0xFF


def _ie_log(lu: RaidDiskUnit) -> bytes:
    at_risk = lu.raid.degraded or lu.raid.failed
    asc, ascq = FAILURE_PREDICTION_THRESHOLD_EXCEEDED if at_risk else (0, 0)
    return log.parameter(0x0000, bytes((asc, ascq, _temperature())))


def _temperature_log(lu: RaidDiskUnit) -> bytes:
    return log.parameter(0x0000, bytes((0, _temperature())))


def _raid_log(lu: RaidDiskUnit) -> bytes:
    st: dict[str, Any] = lu.raid.status()
    progress = st["sync_progress"]
    out = log.parameter(0x0000, bytes((STATE_CODES.get(st["state"], 0xFF),)))
    out += log.parameter(0x0001, struct.pack(">H", sum(1 for m in lu.raid.slots if m is None or m.state != "in_sync")))
    out += log.parameter(0x0002, struct.pack(">H", 0xFFFF if progress is None else min(10000, int(progress * 10000))))
    out += log.parameter(0x0003, struct.pack(">I", int((st["sync_speed"] or 0) // 1024)))
    out += log.parameter(0x0004, struct.pack(">Q", st["mismatch_cnt"]))
    for role, m in enumerate(lu.raid.slots):
        out += log.parameter(0x0100 + role, struct.pack(">I", 0 if m is None else m.errors))
    return out


def _iec(lu: Any, pc: int) -> bytes:
    # DEXCPT=0 (exceptions are reported), MRIE=0 (through log page 0x2F, polled); nothing changeable
    return bytes((0x1C, 10)) + bytes(10)


class RaidDiskUnit(LogicalUnit):
    """A :class:`LogicalUnit` whose store is a :class:`~cistern.storage.raid.RaidStore`."""

    def __init__(self, store: RaidStore, **kwargs: Any) -> None:
        super().__init__(store, **kwargs)
        self.commands = RAID_DISK_COMMANDS
        self.raid = store
        #: stops this unit's unit attentions on array events (set by the target's wiring, watch_raid)
        self.unwatch: Callable[[], None] | None = None

    def log_pages(self) -> dict[int, LogPageBuilder]:
        return {0x0D: _temperature_log, 0x2F: _ie_log, 0x30: _raid_log}

    def mode_pages(self) -> dict[int, ModePageBuilder]:
        return {**DISK_PAGES, 0x1C: _iec}
