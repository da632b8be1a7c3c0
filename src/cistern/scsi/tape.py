"""A tape drive: sequential-access device (SSC-3, peripheral type 0x01) on cartridges in a library
directory (``storage/tape``).

:class:`TapeUnit` owns the drive's state: the cartridge in the drive (or none), whether it is loaded
(threaded, READY) or unloaded (waiting in the drive for the changer or a LOAD: after an UNLOAD, and
for a cartridge the drive holds at server start, see :meth:`TapeUnit.insert_now`), the current logical
object position, the block length (0: variable), the density code and data compression (DCE: blocks
written while it is set are stored DEFLATE-compressed when that saves space) of the mode pages, counters for the log pages, and a lock serialising its commands (a tape has one head).
Its commands live in ``ssc.py``.  Cartridge I/O runs on a small thread pool, never on the event loop.

Writes are acknowledged when in the host's page cache (BUFFERED MODE 1 in the mode header);
a non-immediate WRITE FILEMARKS, REWIND, LOCATE, SPACE, ERASE, UNLOAD and a MOVE MEDIUM out of the
drive fdatasync the cartridge first, so what preceded them survives a crash.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from ..storage.tape.cartridge import Cartridge
from .sense import (
    MEDIUM_NOT_PRESENT,
    NOT_READY_TO_READY_CHANGE,
    WRITE_ERROR,
    WRITE_PROTECTED,
    CheckCondition,
    SenseKey,
)
from .unit import ISCSI, SAM5, SPC4, LogicalUnitBase, LogPageBuilder, ModePageBuilder

SSC3 = 0x0400
DENSITY_CODE = 0x5A  # LTO-6 (the density every cartridge reports; REPORT DENSITY SUPPORT lists it)
MAX_BLOCK_LENGTH = 1 << 21  # READ BLOCK LIMITS: 2 MiB, variable blocks 1..2 MiB
MAX_FIXED_TRANSFER = 16 << 20  # bytes per fixed-mode READ/WRITE(6)
DEFAULT_BLOCK_LENGTH = 0  # variable-block mode at power on
MIN_EW_RESERVE = 64 * 1024  # early warning at least this far before the end of the medium

log = logging.getLogger(__name__)
T = TypeVar("T")
_executor: ThreadPoolExecutor | None = None


def _get_executor() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="cistern-tape")
    return _executor


async def run_io(fn: Callable[..., T], *args: object) -> T:
    """Run blocking cartridge I/O on the tape thread pool."""
    return await asyncio.get_running_loop().run_in_executor(_get_executor(), fn, *args)


def _report_recovery(cart: Cartridge) -> None:
    if cart.recovered:
        log.warning(
            "cartridge %s: %d trailing object(s) after the last synced point were torn or unreadable and "
            "were dropped at load; it now holds %d object(s)",
            cart.barcode,
            cart.recovered,
            cart.records,
        )


class TapeUnit(LogicalUnitBase):
    """An SSC tape drive; see the module docstring.  ``cartridge`` (a path) is loaded at start."""

    device_type = 0x01
    version_descriptors = (SAM5, ISCSI, SPC4, SSC3)

    def __init__(
        self,
        *,
        lun: int,
        vendor: str = "CISTERN",
        product: str = "cistern tape",
        revision: str = "0001",
        serial: str | None = None,
        naa_id: bytes | None = None,
        read_only: bool = False,
        pr_state_path: str | None = None,
    ) -> None:
        from .ssc import TAPE_COMMANDS

        super().__init__(
            lun=lun,
            commands=TAPE_COMMANDS,
            vendor=vendor,
            product=product,
            revision=revision,
            serial=serial,
            naa_id=naa_id,
            read_only=read_only,
            removable=True,
            pr_state_path=pr_state_path,
        )
        self.cartridge: Cartridge | None = None
        self.loaded = False
        self.medium_present = False
        self.position = 0  # logical object identifier of the next object to read or write
        self.block_length = DEFAULT_BLOCK_LENGTH
        self.density = DENSITY_CODE
        self.dce = False  # data compression enabled (mode page 0x0F): new blocks are stored compressed
        self.lock = asyncio.Lock()
        self.lock_fd: int | None = None  # a standalone drive's library lock (target/tape_luns.py)
        # Sequential-access counters (log page 0x0C), since power on.
        self.bytes_from_host = 0
        self.bytes_to_host = 0
        self.bytes_written = 0
        self.bytes_read = 0

    # -- medium --------------------------------------------------------------------------------

    @property
    def barcode(self) -> str | None:
        return self.cartridge.barcode if self.cartridge is not None else None

    async def insert(self, path: str) -> None:
        """Put the cartridge at ``path`` into the drive and load it (a changer MOVE MEDIUM, or the
        configured cartridge at start): position at BOP, NOT READY TO READY CHANGE for every nexus.
        Raises ``CartridgeError`` / ``OSError`` when it cannot be opened."""
        if self.cartridge is not None:
            raise RuntimeError("drive is full")
        cart = await run_io(Cartridge, path)
        _report_recovery(cart)
        await run_io(cart.count_load)
        self.cartridge = cart
        self._set_loaded(True)
        self.position = 0

    def insert_now(self, path: str) -> None:
        """Put the cartridge at ``path`` into the drive at server start (blocking; no I_T nexus exists
        yet) *without* loading it: the power-on state of a drive that held a cartridge when it lost
        power.  The host's idea of the position is stale (a backup application was perhaps in the
        middle of an archive), so the drive must not be READY at BOP, where the host's next WRITE or
        close-time WRITE FILEMARKS would silently overwrite acknowledged data: every medium access
        command answers NOT READY, MEDIUM NOT PRESENT (02/3A/00, what the drive answers after an
        UNLOAD too) until a LOAD UNLOAD with LOAD=1 (``mt load``) threads the cartridge at BOP, or the
        changer moves it out.  3A/00 rather than 04/02 (LOGICAL UNIT NOT READY, INITIALIZING COMMAND
        REQUIRED): libiscsi's login-time TEST UNIT READY accepts only MEDIUM NOT PRESENT as a not-ready
        answer, so QEMU could not even attach a drive answering 04/02; Linux ``st`` reports it as "no
        medium" either way.  Raises ``CartridgeError`` / ``OSError`` when it cannot be opened."""
        if self.cartridge is not None:
            raise RuntimeError("drive is full")
        cart = Cartridge(path)
        _report_recovery(cart)
        self.cartridge = cart
        self.loaded = self.medium_present = False
        self.position = 0

    async def eject(self) -> str | None:
        """Take the cartridge out of the drive (sync first); return its barcode (None if empty)."""
        cart = self.cartridge
        if cart is None:
            return None
        self.cartridge = None
        self._set_loaded(False)
        self.position = 0
        await run_io(cart.close)
        return cart.barcode

    def removal_prevented(self) -> bool:
        """True while a loaded cartridge is held by PREVENT MEDIUM REMOVAL (SSC-3 7.x)."""
        return self.loaded and bool(self.prevent)

    def _set_loaded(self, loaded: bool) -> None:
        was = self.loaded
        self.loaded = loaded
        self.medium_present = loaded
        if loaded and not was:
            self.establish_ua_all(NOT_READY_TO_READY_CHANGE)

    async def load(self) -> None:
        """LOAD UNLOAD with LOAD=1: thread the cartridge waiting in the drive (after an UNLOAD or a
        server start) and position at BOP (SSC-3 7.2), loaded already or not.  NOT READY / MEDIUM NOT
        PRESENT when the drive is empty."""
        cart = self.cartridge
        if cart is None:
            raise CheckCondition(SenseKey.NOT_READY, MEDIUM_NOT_PRESENT)
        if not self.loaded:
            await run_io(cart.count_load)
        self.loaded = self.medium_present = True
        self.position = 0

    async def unload(self) -> None:
        """LOAD UNLOAD with LOAD=0: sync, rewind and unthread; the cartridge stays in the drive."""
        if self.cartridge is not None:
            await self.sync()
        self.loaded = self.medium_present = False
        self.position = 0

    def cart(self) -> Cartridge:
        """The loaded cartridge; NOT READY / MEDIUM NOT PRESENT otherwise."""
        cart = self.cartridge
        if cart is None or not self.loaded:
            raise CheckCondition(SenseKey.NOT_READY, MEDIUM_NOT_PRESENT)
        return cart

    async def sync(self) -> None:
        """fdatasync whatever was written (WRITE ERROR sense on failure)."""
        cart = self.cartridge
        if cart is not None and cart.dirty:
            try:
                await run_io(cart.sync)
            except OSError:
                raise CheckCondition(SenseKey.MEDIUM_ERROR, WRITE_ERROR) from None

    # -- capacity ------------------------------------------------------------------------------

    @staticmethod
    def early_warning(capacity: int) -> int:
        """Data bytes after which writes report EARLY WARNING (EOM bit, SSC-3 4.2.5)."""
        return capacity - max(capacity // 100, MIN_EW_RESERVE)

    # -- hooks ---------------------------------------------------------------------------------

    def check_writable(self) -> None:
        super().check_writable()
        cart = self.cartridge
        if cart is not None and self.loaded and cart.write_protect:
            raise CheckCondition(SenseKey.DATA_PROTECT, WRITE_PROTECTED)

    def write_protected(self) -> bool:
        cart = self.cartridge
        return self.read_only or self.swp or (cart is not None and cart.write_protect)

    def mode_pages(self) -> dict[int, ModePageBuilder]:
        from .ssc_pages import TAPE_MODE_PAGES

        return TAPE_MODE_PAGES

    def log_pages(self) -> dict[int, LogPageBuilder]:
        from .ssc_pages import TAPE_LOG_PAGES

        return TAPE_LOG_PAGES

    def mode_device_specific(self) -> int:
        # WP, BUFFERED MODE 001b (writes acknowledged before they are on the medium), SPEED 0
        return (0x80 if self.write_protected() else 0) | 0x10

    def mode_block_descriptor(self, llbaa: bool) -> bytes:
        # DENSITY CODE, NUMBER OF BLOCKS 0 (all remaining), BLOCK LENGTH (0: variable), SSC-3 8.3.3
        bl = self.block_length
        return bytes((self.density, 0, 0, 0, 0, (bl >> 16) & 0xFF, (bl >> 8) & 0xFF, bl & 0xFF))

    def mode_check_descriptor(self, desc: bytes, offset: int) -> None:
        from .sense import invalid_param

        if len(desc) != 8:
            raise invalid_param(offset)
        if desc[0] not in (0x00, 0x7F, DENSITY_CODE):  # 00h/7Fh: keep the current density
            raise invalid_param(offset)
        length = int.from_bytes(desc[5:8], "big")
        if length > MAX_BLOCK_LENGTH:
            raise invalid_param(offset + 5)

    def mode_apply(self, descriptor: bytes | None, pages: dict[int, bytes]) -> None:
        if descriptor is not None:
            self.block_length = int.from_bytes(descriptor[5:8], "big")
        compression = pages.get(0x0F)
        if compression is not None:
            self.dce = bool(compression[2] & 0x80)
        super().mode_apply(descriptor, pages)

    async def close(self) -> None:
        await self.eject()
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None
