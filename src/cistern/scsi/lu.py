"""The SCSI disk: a direct-access block device (SBC-3 peripheral type 0x00) on a backing store.

:class:`LogicalUnit` adds to the shared base (``unit.LogicalUnitBase``: identity, nexuses, unit
attentions, reservations, control page) what a disk owns: geometry, caching mode page (WCE), thin
provisioning, the LBA range lock, SANITIZE state, its command table (``commands.DISK_COMMANDS``) and
its VPD / mode pages.  The name stays ``LogicalUnit`` for the many callers that mean "the disk".
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from mypy_extensions import mypyc_attr

from ..storage.base import BackingStore
from .rangelock import RangeLock
from .sense import WRITE_ERROR, CheckCondition, SenseKey, invalid_param
from .unit import ISCSI, SAM5, SPC4, LogicalUnitBase, LogPageBuilder, ModePageBuilder, VpdBuilder

if TYPE_CHECKING:
    from .sanitize import SanitizeOperation

OPTIMAL_TRANSFER_BYTES = 1024 * 1024
MAX_TRANSFER_BYTES = 32 * 1024 * 1024  # MAXIMUM TRANSFER LENGTH reported in the Block Limits VPD page
MAX_WRITE_SAME_BLOCKS = 0x400000
MAX_UNMAP_BLOCKS = 1 << 20
MAX_UNMAP_DESCRIPTORS = 256
SBC3 = 0x04C0


@mypyc_attr(allow_interpreted_subclasses=True)  # tape, changer, SES, RAID units subclass it
class LogicalUnit(LogicalUnitBase):
    """A SCSI disk; see the module docstring.  ``naa_id`` is an 8-byte (NAA 3/5) or 16-byte (NAA 6)
    designator; when omitted a locally assigned NAA 3 designator is derived from ``serial``."""

    device_type = 0x00
    version_descriptors = (SAM5, ISCSI, SPC4, SBC3)
    three_pc = True

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
        sanitize_rate: int | None = None,
    ) -> None:
        from .commands import DISK_COMMANDS

        super().__init__(
            lun=lun,
            commands=DISK_COMMANDS,
            vendor=vendor,
            product=product,
            revision=revision,
            serial=serial,
            naa_id=naa_id,
            read_only=read_only or store.read_only,
            removable=removable,
            pr_state_path=pr_state_path,
        )
        self.store = store
        self.thin = thin and store.supports_unmap
        if soft_threshold is not None and not 1 <= soft_threshold <= 100:
            raise ValueError("soft_threshold must be a percentage 1..100")
        if sanitize_rate is not None and sanitize_rate < 0:
            raise ValueError("sanitize_rate must not be negative")
        # Thin provisioning soft threshold (percent of capacity allocated; see scsi/thin.py).
        self.soft_threshold = soft_threshold if self.thin else None
        self.soft_threshold_reached = False
        self.block_size = store.block_size
        self.num_blocks = store.num_blocks
        self.max_transfer_blocks = max(1, MAX_TRANSFER_BYTES // self.block_size)
        # 1 MiB: a good request size for this target, and below what Linux accepts as a hint
        # (it ignores an OPTIMAL TRANSFER LENGTH above its 65535-block dev_max)
        self.optimal_transfer_blocks = max(1, OPTIMAL_TRANSFER_BYTES // self.block_size)
        # Caching mode page (current value; nothing is saveable).
        self.wce = write_cache
        # COMPARE AND WRITE / WRITE ATOMIC / ORWRITE hold LBA ranges exclusively, writers shared.
        self.range_lock = RangeLock()
        # The running or failed SANITIZE operation (sanitize.py), None when there is none; the
        # overwrite pace in bytes/s (None: the store's speed while no other I/O waits, 0: unpaced).
        self.sanitize: SanitizeOperation | None = None
        self.sanitize_rate: int | None = sanitize_rate

    # -- hooks -----------------------------------------------------------------------------------

    # -- state helpers ---------------------------------------------------------------------------

    def write_blocks_now(self, lba: int, data: bytes | bytearray | memoryview, fua: bool) -> bool:
        """:meth:`write_blocks` without waiting: True when ``data`` is written and nothing more is due (no
        FUA, write cache on, the store took it at once: :meth:`BackingStore.write_now`); False, with nothing
        done, when :meth:`write_blocks` must be awaited.  Raises CheckCondition as :meth:`write_blocks`."""
        if fua or not self.wce or not len(data):
            return False
        try:
            return self.store.write_now(lba * self.block_size, data)
        except OSError:
            raise CheckCondition(SenseKey.MEDIUM_ERROR, WRITE_ERROR, information=lba) from None

    async def write_blocks(self, lba: int, data: bytes | bytearray | memoryview, fua: bool) -> None:
        """Write ``data`` at ``lba`` and make it stable when FUA is set or the write cache is off; a store
        failure becomes MEDIUM ERROR / WRITE ERROR with the LBA (SBC-3 4.18).  The caller holds the range lock."""
        try:
            if len(data) and not self.store.write_now(lba * self.block_size, data):
                await self.store.write(lba * self.block_size, data)
            if fua or not self.wce:
                await self.store.flush()
        except OSError:
            raise CheckCondition(SenseKey.MEDIUM_ERROR, WRITE_ERROR, information=lba) from None

    def refresh_capacity(self) -> bool:
        """Re-read the store size; True when the capacity changed."""
        n = self.store.num_blocks
        changed = n != self.num_blocks
        self.num_blocks = n
        return changed

    # -- page hooks (unit.LogicalUnitBase) ---------------------------------------------------------

    def vpd_pages(self) -> dict[int, VpdBuilder]:
        from .inquiry import disk_vpd_pages

        return disk_vpd_pages(self)

    def mode_pages(self) -> dict[int, ModePageBuilder]:
        from .mode import DISK_PAGES

        return DISK_PAGES

    def log_pages(self) -> dict[int, LogPageBuilder]:
        return {}

    def mode_device_specific(self) -> int:
        return super().mode_device_specific() | 0x10  # DPOFUA

    def mode_block_descriptor(self, llbaa: bool) -> bytes:
        if llbaa:
            return struct.pack(">Q4xI", self.num_blocks, self.block_size)
        return struct.pack(
            ">IxBH", min(self.num_blocks, 0xFFFFFFFF), self.block_size >> 16, self.block_size & 0xFFFF
        )

    def mode_check_descriptor(self, desc: bytes, offset: int) -> None:
        # Only the current block length (or 0, "unchanged") is accepted.
        if len(desc) == 16:
            if struct.unpack_from(">I", desc, 12)[0] not in (0, self.block_size):
                raise invalid_param(offset + 12)
        elif int.from_bytes(desc[5:8], "big") not in (0, self.block_size):
            raise invalid_param(offset + 5)

    def mode_apply(self, descriptor: bytes | None, pages: dict[int, bytes]) -> None:
        caching = pages.get(0x08)
        if caching is not None:
            self.wce = bool(caching[2] & 0x04)
        super().mode_apply(descriptor, pages)
