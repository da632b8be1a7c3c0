"""A tape library directory: cartridges (one directory per barcode, ``cartridge.py``) and where each
one is (``library.json``: storage slots, import/export slots, drives).

``library.json`` (replaced atomically, write + fsync + rename)::

    {"format": 1, "slot": [barcode or null, ...], "ie": [...], "drive": [...], "out": [barcode, ...],
     "origin": {barcode in a drive: the slot it came from}}

Positions are indexes within each element kind; the changer (``scsi/changer.py``) maps them to SMC
element addresses.  On open, the lists are resized to the configured counts; cartridges found in the
directory but placed nowhere (new ones, or ones whose element no longer exists) go to the first free
storage slots, and names whose directory vanished are dropped.  ``out`` lists exported cartridges
(``cistern tape export``): they stay in the directory but outside the library until imported.  A cartridge that fits nowhere stays
unplaced (``cistern tape list`` shows it).

While a server uses the library it holds an exclusive ``flock`` on ``<library>/.lock``; the
``cistern tape`` CLI takes the same lock for import/export so the two never edit ``library.json`` at
once.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from typing import Literal

from .cartridge import CartridgeError, _write_json_atomic, check_barcode, create_cartridge, read_meta

log = logging.getLogger(__name__)
ElementKind = Literal["slot", "ie", "drive"]
KINDS: tuple[ElementKind, ...] = ("slot", "ie", "drive")
STATE_FILE = "library.json"
LOCK_FILE = ".lock"


class LibraryError(ValueError):
    """The library cannot be opened or a move is impossible (message says why)."""


class LibraryLocked(LibraryError):
    """Another process (a running server) holds the library."""


def lock_library(path: str) -> int:
    """Take the library's exclusive lock; return the fd to keep (close it to release).
    ``LibraryLocked`` when another process holds it."""
    os.makedirs(path, exist_ok=True)
    fd = os.open(os.path.join(path, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise LibraryLocked(f"{path} is in use by a running cistern server") from None
    return fd


def list_cartridges(path: str) -> list[str]:
    """Barcodes of the cartridge directories in ``path`` (sorted)."""
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return []
    out = []
    for name in sorted(names):
        full = os.path.join(path, name)
        if name.startswith(".") or not os.path.isdir(full):
            continue
        try:
            check_barcode(name)
        except ValueError:
            continue  # not named like a cartridge: not ours
        try:
            read_meta(full)
        except CartridgeError as exc:
            log.warning("%s is not a usable cartridge, ignored: %s", full, exc)
            continue
        out.append(name)
    return out


def default_barcodes(prefix: str, count: int) -> list[str]:
    """``count`` LTO-style barcodes: prefix + serial number + "L6" (e.g. CIS001L6)."""
    width = max(3, 6 - len(prefix))
    return [f"{prefix}{i:0{width}d}L6" for i in range(1, count + 1)]


class Library:
    """Where the cartridges of one library directory are; see the module docstring."""

    def __init__(self, path: str, *, slots: int, ie: int, drives: int) -> None:
        self.path = path
        self.counts: dict[ElementKind, int] = {"slot": slots, "ie": ie, "drive": drives}
        self.where: dict[ElementKind, list[str | None]] = {k: [None] * n for k, n in self.counts.items()}
        self.unplaced: list[str] = []
        self.origin: dict[str, int] = {}  # barcode in a drive -> the slot it came from
        self._load()

    def _load(self) -> None:
        state: dict[str, object] = {}
        try:
            with open(os.path.join(self.path, STATE_FILE), encoding="utf-8") as f:
                state = json.load(f)
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            raise LibraryError(f"{self.path}/{STATE_FILE}: {exc}") from None
        present = set(list_cartridges(self.path))
        out = state.get("out", [])
        if not isinstance(out, list):
            raise LibraryError(f"{self.path}/{STATE_FILE}: out is not a list")
        self.unplaced = sorted(b for b in set(out) if isinstance(b, str) and b in present)
        placed: set[str] = set(self.unplaced)
        for kind in KINDS:
            saved = state.get(kind, [])
            if not isinstance(saved, list):
                raise LibraryError(f"{self.path}/{STATE_FILE}: {kind} is not a list")
            for i, barcode in enumerate(saved[: self.counts[kind]]):
                if isinstance(barcode, str) and barcode in present and barcode not in placed:
                    self.where[kind][i] = barcode
                    placed.add(barcode)
        origin = state.get("origin", {})
        if isinstance(origin, dict):
            drives = set(self.where["drive"])
            self.origin = {
                b: i
                for b, i in origin.items()
                if b in drives and isinstance(i, int) and 0 <= i < self.counts["slot"]
            }
        for barcode in sorted(present - placed):
            free = self.free("slot")
            if free is None:
                self.unplaced.append(barcode)
            else:
                self.where["slot"][free] = barcode
        self.save()

    def save(self) -> None:
        """Persist where every cartridge is (atomic)."""
        state: dict[str, object] = {"format": 1, "out": self.unplaced, "origin": self.origin}
        for kind in KINDS:
            state[kind] = self.where[kind]
        _write_json_atomic(os.path.join(self.path, STATE_FILE), state)

    def free(self, kind: ElementKind) -> int | None:
        """The first empty element of ``kind``, or None."""
        for i, barcode in enumerate(self.where[kind]):
            if barcode is None:
                return i
        return None

    def locate(self, barcode: str) -> tuple[ElementKind, int] | None:
        for kind in KINDS:
            if barcode in self.where[kind]:
                return kind, self.where[kind].index(barcode)
        return None

    def cartridge_path(self, barcode: str) -> str:
        return os.path.join(self.path, barcode)

    def move(self, src: tuple[ElementKind, int], dst: tuple[ElementKind, int]) -> str:
        """Move the cartridge at ``src`` to the empty ``dst`` and persist; return its barcode.
        ``LibraryError`` when the source is empty or the destination full."""
        barcode = self.where[src[0]][src[1]]
        if barcode is None:
            raise LibraryError("source element is empty")
        if src != dst and self.where[dst[0]][dst[1]] is not None:
            raise LibraryError("destination element is full")
        self.where[src[0]][src[1]] = None
        self.where[dst[0]][dst[1]] = barcode
        if dst[0] == "drive" and src[0] == "slot":
            self.origin[barcode] = src[1]
        elif dst[0] != "drive":
            self.origin.pop(barcode, None)
        self.save()
        return barcode

    def place(self, barcode: str, kind: ElementKind, index: int) -> None:
        """Put an unplaced cartridge into an empty element (CLI import) and persist."""
        if self.where[kind][index] is not None:
            raise LibraryError(f"{kind} {index} is full")
        if barcode in self.unplaced:
            self.unplaced.remove(barcode)
        self.where[kind][index] = barcode
        self.save()

    def remove(self, kind: ElementKind, index: int) -> str:
        """Take the cartridge out of an element (CLI export): it stays in the directory, unplaced."""
        barcode = self.where[kind][index]
        if barcode is None:
            raise LibraryError(f"{kind} {index} is empty")
        self.where[kind][index] = None
        self.unplaced.append(barcode)
        self.save()
        return barcode


def ensure_cartridges(path: str, barcodes: list[str], capacity: int) -> list[str]:
    """Create the cartridges of ``barcodes`` that do not exist yet (first start); return the new ones."""
    os.makedirs(path, exist_ok=True)
    made = []
    for barcode in barcodes:
        if not os.path.exists(os.path.join(path, barcode)):
            create_cartridge(path, barcode, capacity)
            made.append(barcode)
    return made
