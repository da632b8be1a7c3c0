"""Tape cartridges and libraries on a filesystem (``cartridge.py``: one directory per barcode with an
append-only data file and a fixed-record index; ``library.py``: where each cartridge is)."""

from .cartridge import Cartridge, CartridgeError, CorruptBlock, cartridge_summary, create_cartridge
from .library import Library, LibraryError, LibraryLocked, default_barcodes, ensure_cartridges, lock_library

__all__ = [
    "Cartridge",
    "CartridgeError",
    "CorruptBlock",
    "Library",
    "LibraryError",
    "LibraryLocked",
    "cartridge_summary",
    "create_cartridge",
    "default_barcodes",
    "ensure_cartridges",
    "lock_library",
]
