"""A logical unit: a direct-access block device (SBC-3 peripheral type 0x00) on a backing store.

The LU owns its per-LU state: identity (vendor, product, serial, NAA designator), mode parameters
(caching WCE, control D_SENSE/SWP), medium presence for removable units, PREVENT ALLOW MEDIUM REMOVAL
holders, and the unit-attention conditions pending for each I_T nexus (SAM-5 5.14, SPC-4 5.12).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from ..storage.base import BackingStore
from .rangelock import RangeLock
from .reservations import LuReservations
from .sense import (
    MEDIUM_NOT_PRESENT,
    POWER_ON_RESET,
    SOFTWARE_WRITE_PROTECTED,
    WRITE_ERROR,
    WRITE_PROTECTED,
    CheckCondition,
    SenseKey,
)
from .stats import LuStats
from .task import ITNexus, ScsiTask

if TYPE_CHECKING:
    from .commands import CommandSpec
    from .sanitize import SanitizeOperation

OPTIMAL_TRANSFER_BYTES = 1024 * 1024
MAX_TRANSFER_BYTES = 32 * 1024 * 1024  # MAXIMUM TRANSFER LENGTH reported in the Block Limits VPD page
MAX_WRITE_SAME_BLOCKS = 0x400000
MAX_UNMAP_BLOCKS = 1 << 20
MAX_UNMAP_DESCRIPTORS = 256
UA_QUEUE_DEPTH = 8


def _ascii(value: str, width: int) -> bytes:
    raw = value.encode("ascii", "replace")[:width]
    return bytes(c if 0x20 <= c <= 0x7E else 0x20 for c in raw).ljust(width, b" ")


class LogicalUnit:
    """A SCSI disk; see the module docstring.  ``naa_id`` is an 8-byte (NAA 3/5) or 16-byte (NAA 6)
    designator; when omitted a locally assigned NAA 3 designator is derived from ``serial``."""

    def __init__(
        self,
        store: BackingStore,
        *,
        lun: int,
        vendor: str = "CISTERN",
        product: str = "cistern disk",
        revision: str = "0001",
        serial: str | None = None,
        naa_id: bytes | None = None,
        read_only: bool = False,
        thin: bool = False,
        removable: bool = False,
        write_cache: bool = True,
        pr_state_path: str | None = None,
        soft_threshold: int | None = None,
    ) -> None:
        if not 0 <= lun < 16384:
            raise ValueError("lun must be in 0..16383")
        self.store = store
        self.lun = lun
        self.vendor = _ascii(vendor, 8)
        self.product = _ascii(product, 16)
        self.revision = _ascii(revision, 4)
        self.serial = serial if serial is not None else f"cistern-{lun:05d}"
        if naa_id is None:
            digest = hashlib.sha256(self.serial.encode()).digest()
            naa_id = bytes([0x30 | (digest[0] & 0x0F)]) + digest[1:8]
        if len(naa_id) not in (8, 16) or naa_id[0] >> 4 not in (2, 3, 5, 6):
            raise ValueError("naa_id must be an 8-byte NAA 2/3/5 or 16-byte NAA 6 designator")
        self.naa_id = bytes(naa_id)
        self.read_only = read_only or store.read_only
        self.thin = thin and store.supports_unmap
        self.removable = removable
        if soft_threshold is not None and not 1 <= soft_threshold <= 100:
            raise ValueError("soft_threshold must be a percentage 1..100")
        # Thin provisioning soft threshold (percent of capacity allocated; see scsi/thin.py).
        self.soft_threshold = soft_threshold if self.thin else None
        self.soft_threshold_reached = False
        self.block_size = store.block_size
        self.num_blocks = store.num_blocks
        self.max_transfer_blocks = max(1, MAX_TRANSFER_BYTES // self.block_size)
        # 1 MiB: a good request size for this target, and below what Linux accepts as a hint
        # (it ignores an OPTIMAL TRANSFER LENGTH above its 65535-block dev_max)
        self.optimal_transfer_blocks = max(1, OPTIMAL_TRANSFER_BYTES // self.block_size)
        # Mode parameters (current values; nothing is saveable).
        self.wce = write_cache
        self.d_sense = False
        self.swp = False
        # Medium state (START STOP UNIT LOEJ / PREVENT ALLOW MEDIUM REMOVAL, removable units only).
        self.medium_present = True
        self.prevent: set[ITNexus] = set()
        # Unit attention conditions per I_T nexus, oldest first.
        self.ua: dict[ITNexus, list[tuple[int, int]]] = {}
        self.nexuses: set[ITNexus] = set()
        # COMPARE AND WRITE / WRITE ATOMIC / ORWRITE hold LBA ranges exclusively, writers shared.
        self.range_lock = RangeLock()
        # The running or failed SANITIZE operation (sanitize.py), None when there is none; the
        # overwrite pace in bytes/s (None: sanitize.DEFAULT_RATE, 0: unpaced).
        self.sanitize: SanitizeOperation | None = None
        self.sanitize_rate: int | None = None
        # SPC-2 and persistent reservations; APTPL state in ``pr_state_path`` (None: PTPL_C=0).
        self.reservations = LuReservations(pr_state_path)
        # I/O counters read by the metrics and the dashboard (stats.py)
        self.stats = LuStats()

    # -- hooks -----------------------------------------------------------------------------------

    def check_access(self, task: ScsiTask, spec: CommandSpec) -> None:
        """Per-LU admission check before a command runs (reservations / ALUA plug in here).

        Raise :class:`CheckCondition`, or return normally to let the command run.
        """
        self.reservations.check(task, spec)

    # -- state helpers ---------------------------------------------------------------------------

    def check_medium(self) -> None:
        if not self.medium_present:
            raise CheckCondition(SenseKey.NOT_READY, MEDIUM_NOT_PRESENT)

    async def write_blocks(self, lba: int, data: bytes | bytearray | memoryview, fua: bool) -> None:
        """Write ``data`` at ``lba`` and make it stable when FUA is set or the write cache is off; a store
        failure becomes MEDIUM ERROR / WRITE ERROR with the LBA (SBC-3 4.18).  The caller holds the range lock."""
        try:
            if len(data):
                await self.store.write(lba * self.block_size, data)
            if fua or not self.wce:
                await self.store.flush()
        except OSError:
            raise CheckCondition(SenseKey.MEDIUM_ERROR, WRITE_ERROR, information=lba) from None

    def check_writable(self) -> None:
        if self.read_only:
            raise CheckCondition(SenseKey.DATA_PROTECT, WRITE_PROTECTED)
        if self.swp:
            raise CheckCondition(SenseKey.DATA_PROTECT, SOFTWARE_WRITE_PROTECTED)

    def refresh_capacity(self) -> bool:
        """Re-read the store size; True when the capacity changed."""
        n = self.store.num_blocks
        changed = n != self.num_blocks
        self.num_blocks = n
        return changed

    # -- unit attention --------------------------------------------------------------------------

    def establish_ua(self, nexus: ITNexus, asc_ascq: tuple[int, int]) -> None:
        """Queue a unit attention for ``nexus``.  A reset-class UA (29/xx) supersedes the others."""
        queue = self.ua.get(nexus)
        if queue is None:
            self.ua[nexus] = [asc_ascq]
            return
        if asc_ascq[0] == POWER_ON_RESET[0]:
            queue[:] = [asc_ascq]
        elif asc_ascq not in queue and len(queue) < UA_QUEUE_DEPTH:
            queue.append(asc_ascq)

    def establish_ua_all(self, asc_ascq: tuple[int, int], *, exclude: ITNexus | None = None) -> None:
        for nexus in self.nexuses:
            if nexus != exclude:
                self.establish_ua(nexus, asc_ascq)

    def pop_ua(self, nexus: ITNexus) -> tuple[int, int] | None:
        queue = self.ua.get(nexus)
        if not queue:
            return None
        ua = queue.pop(0)
        if not queue:
            del self.ua[nexus]
        return ua

    def clear_ua(self, nexus: ITNexus, asc_ascq: tuple[int, int]) -> None:
        queue = self.ua.get(nexus)
        if queue and asc_ascq in queue:
            queue.remove(asc_ascq)
            if not queue:
                del self.ua[nexus]

    def forget_nexus(self, nexus: ITNexus) -> None:
        self.ua.pop(nexus, None)
        self.prevent.discard(nexus)
        self.nexuses.discard(nexus)
        self.reservations.nexus_lost(nexus)
