"""Build the tape drive and medium changer LUs of one target from its config (``config/tape.py``).

A changer locks its library directory (``storage/tape/library.lock_library``), creates its
cartridges on first start (when the library has no ``library.json`` yet), and puts back into the
drives the cartridges ``library.json`` records there.  A standalone drive locks its library and puts
its ``cartridge`` in, creating it if missing.  Either way the cartridge is in the drive *unloaded*
(``TapeUnit.insert_now``: NOT READY until a LOAD).  Blocking: called while the server is built,
before serving.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any

from cistern.config.lun import LunConfig
from cistern.config.tape import (
    DEFAULT_BARCODE_PREFIX,
    DEFAULT_CARTRIDGE_SIZE,
    DEFAULT_IMPORT_EXPORT,
    DEFAULT_SLOTS,
)
from cistern.config.target import TargetConfig
from cistern.scsi.changer import ChangerUnit
from cistern.scsi.tape import TapeUnit
from cistern.scsi.unit import LogicalUnitBase
from cistern.storage.tape.library import (
    STATE_FILE,
    Library,
    default_barcodes,
    ensure_cartridges,
    lock_library,
)


def build_tape_luns(tcfg: TargetConfig, serial_for: Callable[[int], str]) -> dict[int, LogicalUnitBase]:
    """The tape and changer LUs of ``tcfg`` by LUN.  Raises ``OSError`` / ``ValueError`` /
    ``LibraryError`` / ``CartridgeError`` with a message naming the library or cartridge."""
    tapes = sorted((c for c in tcfg.luns if c.backend == "tape"), key=lambda c: c.lun)
    changers = [c for c in tcfg.luns if c.backend == "changer"]
    out: dict[int, LogicalUnitBase] = {}
    locks: list[int] = []
    try:
        drives = []
        for lcfg in tapes:
            drive = TapeUnit(
                lun=lcfg.lun,
                serial=lcfg.serial or serial_for(lcfg.lun),
                read_only=lcfg.read_only,
                pr_state_path=lcfg.pr_state_path(),
                **_identity(lcfg),
            )
            drives.append(drive)
            out[lcfg.lun] = drive
        if changers:
            ccfg = changers[0]
            assert ccfg.library is not None
            path = str(ccfg.library)
            locks.append(lock_library(path))
            slots = ccfg.slots if ccfg.slots is not None else DEFAULT_SLOTS
            ie = ccfg.import_export if ccfg.import_export is not None else DEFAULT_IMPORT_EXPORT
            if not os.path.exists(os.path.join(path, STATE_FILE)):
                count = ccfg.cartridges if ccfg.cartridges is not None else slots
                prefix = ccfg.barcode_prefix or DEFAULT_BARCODE_PREFIX
                ensure_cartridges(
                    path, default_barcodes(prefix, count), ccfg.cartridge_size or DEFAULT_CARTRIDGE_SIZE
                )
            library = Library(path, slots=slots, ie=ie, drives=len(drives))
            changer = ChangerUnit(
                library,
                drives,
                lun=ccfg.lun,
                serial=ccfg.serial or serial_for(ccfg.lun),
                pr_state_path=ccfg.pr_state_path(),
                **_identity(ccfg),
            )
            changer.lock_fd = locks.pop()
            for i, barcode in enumerate(library.where["drive"]):
                if barcode is not None:
                    drives[i].insert_now(library.cartridge_path(barcode))
            out[ccfg.lun] = changer
        else:
            for lcfg, drive in zip(tapes, drives, strict=True):
                assert lcfg.library is not None and lcfg.cartridge is not None
                path = str(lcfg.library)
                locks.append(lock_library(path))
                ensure_cartridges(path, [lcfg.cartridge], lcfg.cartridge_size or DEFAULT_CARTRIDGE_SIZE)
                drive.insert_now(os.path.join(path, lcfg.cartridge))
                drive.lock_fd = locks.pop()
    except BaseException:
        for fd in locks:
            with contextlib.suppress(OSError):
                os.close(fd)
        for lu in out.values():
            close_now(lu)
        raise
    return out


def _identity(lcfg: LunConfig) -> dict[str, Any]:
    return {n: getattr(lcfg, n) for n in ("vendor", "product", "revision") if getattr(lcfg, n, None)}


def close_now(lu: LogicalUnitBase) -> None:
    """Blocking close of a tape or changer LU (cartridge synced and closed, library unlocked)."""
    if isinstance(lu, TapeUnit) and lu.cartridge is not None:
        with contextlib.suppress(OSError):
            lu.cartridge.close()
        lu.cartridge = None
    fd = getattr(lu, "lock_fd", None)
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)
        lu.lock_fd = None  # type: ignore[attr-defined]
