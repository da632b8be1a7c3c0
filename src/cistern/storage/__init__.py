"""cistern.storage: backing stores behind one small async interface (see ``base.BackingStore``)."""

from .base import VALID_BLOCK_SIZES, BackingStore, StoreError
from .factory import STORE_KINDS, open_store
from .file import BlockDeviceStore, FileStore
from .memory import MemoryStore

__all__ = [
    "STORE_KINDS",
    "VALID_BLOCK_SIZES",
    "BackingStore",
    "BlockDeviceStore",
    "FileStore",
    "MemoryStore",
    "StoreError",
    "open_store",
]
