"""Tape LUNs: ``backend = "tape"`` (an SSC tape drive) and ``backend = "changer"`` (an SMC medium
changer over a library directory), the fields they add to ``[[targets.luns]]``, and their checks.

A changer owns a library directory (``library``) of ``slots`` storage slots and ``import_export``
mailslots; on first start ``cartridges`` cartridges of ``cartridge_size`` bytes are created there
(barcodes ``<barcode_prefix>001L6``, ...).  The tape LUNs of the same target are its drives, in LUN
order.  A tape LUN on a target without a changer is a standalone drive: it needs ``library`` and the
``cartridge`` (barcode) to load at start, created if missing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, Field, field_validator

from cistern.config.errors import ConfigValueError
from cistern.config.fields import PathField, SizeBytes

if TYPE_CHECKING:
    from cistern.config.lun import LunConfig

TAPE_BACKENDS = ("tape", "changer")
DEFAULT_SLOTS = 8
DEFAULT_IMPORT_EXPORT = 1
DEFAULT_CARTRIDGE_SIZE = 1 << 30
DEFAULT_BARCODE_PREFIX = "CIS"
MIN_CARTRIDGE_SIZE = 1 << 20
_CHANGER_ONLY = ("slots", "import_export", "cartridges", "barcode_prefix")
_DISK_ONLY = ("path", "size", "block_size", "thin", "removable", "soft_threshold")


class TapeFields(BaseModel):
    """The ``[[targets.luns]]`` fields of tape and changer LUNs (unset on disks)."""

    library: PathField | None = None
    slots: Annotated[int, Field(ge=1, le=4096)] | None = None
    import_export: Annotated[int, Field(ge=0, le=64)] | None = None
    cartridges: Annotated[int, Field(ge=0, le=4096)] | None = None
    cartridge_size: SizeBytes | None = None
    barcode_prefix: str | None = None
    cartridge: str | None = None

    @field_validator("barcode_prefix")
    @classmethod
    def _prefix(cls, value: str | None) -> str | None:
        if value is not None and not (
            1 <= len(value) <= 3 and value.isascii() and value.isalnum() and value.isupper()
        ):
            raise ConfigValueError(f"{value!r}: barcode_prefix must be 1..3 characters A-Z or 0-9")
        return value

    @field_validator("cartridge")
    @classmethod
    def _barcode(cls, value: str | None) -> str | None:
        if value is not None and not (
            1 <= len(value) <= 32 and value.isascii() and value.isalnum() and value.upper() == value
        ):
            raise ConfigValueError(f"{value!r}: a barcode is 1..32 characters A-Z or 0-9")
        return value

    @field_validator("cartridge_size")
    @classmethod
    def _size(cls, value: int | None) -> int | None:
        if value is not None and value < MIN_CARTRIDGE_SIZE:
            raise ConfigValueError(f"{value} bytes: cartridge_size must be at least 1M")
        return value


def check_tape_lun(lun: LunConfig) -> None:
    """Field checks of one LUN against its backend (``ConfigValueError`` naming the field)."""
    set_fields = lun.model_fields_set
    if lun.backend not in TAPE_BACKENDS:
        for name in (*_CHANGER_ONLY, "library", "cartridge_size", "cartridge"):
            if name in set_fields:
                raise ConfigValueError(f"{name} is only for tape and changer LUNs", at=(name,))
        return
    for name in _DISK_ONLY:
        if name in set_fields:
            raise ConfigValueError(f"a {lun.backend} LUN has no {name}", at=(name,))
    if lun.backend == "tape":
        for name in _CHANGER_ONLY:
            if name in set_fields:
                raise ConfigValueError(f"{name} belongs on the changer LUN, not a tape LUN", at=(name,))
        return
    if lun.library is None:
        raise ConfigValueError(
            "a changer LUN needs library (a directory for the cartridges)", at=("library",)
        )
    if lun.cartridge is not None:
        raise ConfigValueError(
            "cartridge is for a standalone tape LUN; a changer has slots", at=("cartridge",)
        )
    if lun.read_only:
        raise ConfigValueError(
            "a changer cannot be read_only (write-protect cartridges instead)", at=("read_only",)
        )
    slots = lun.slots if lun.slots is not None else DEFAULT_SLOTS
    ie = lun.import_export if lun.import_export is not None else DEFAULT_IMPORT_EXPORT
    if lun.cartridges is not None and lun.cartridges > slots + ie:
        raise ConfigValueError(
            f"{lun.cartridges} cartridges do not fit in {slots} slots and {ie} import/export slots",
            at=("cartridges",),
        )


def check_target_tape(luns: list[LunConfig]) -> None:
    """Cross-LUN checks of one target: at most one changer; its drives share its library; a drive
    without a changer names its library and cartridge.  ``ConfigValueError`` at the offending LUN."""
    changers = [i for i, lun in enumerate(luns) if lun.backend == "changer"]
    if len(changers) > 1:
        raise ConfigValueError("a target has at most one changer LUN", at=("luns", changers[1], "backend"))
    changer = luns[changers[0]] if changers else None
    for i, lun in enumerate(luns):
        if lun.backend != "tape":
            continue
        if changer is not None:
            if lun.library is not None and lun.library != changer.library:
                raise ConfigValueError(
                    "a drive of this target's changer uses the changer's library; remove library",
                    at=("luns", i, "library"),
                )
            if lun.cartridge is not None:
                raise ConfigValueError(
                    "the changer loads this drive; remove cartridge (use mtx load)",
                    at=("luns", i, "cartridge"),
                )
        else:
            if lun.library is None:
                raise ConfigValueError(
                    "a tape LUN without a changer on its target needs library", at=("luns", i, "library")
                )
            if lun.cartridge is None:
                raise ConfigValueError(
                    "a tape LUN without a changer needs cartridge (the barcode to load)",
                    at=("luns", i, "cartridge"),
                )
    if changer is not None:
        drives = sum(1 for lun in luns if lun.backend == "tape")
        if drives == 0:
            raise ConfigValueError(
                "a changer needs at least one tape LUN (its drive)", at=("luns", changers[0])
            )


def drop_disk_defaults(lun: dict[str, object]) -> None:
    """In a dumped tape or changer LUN (a dict), leave out the disk fields still at their defaults
    (``block_size = 512``...), which the LUN cannot have: so a dump loads again."""
    if lun.get("backend") in TAPE_BACKENDS:
        for name, default in (("block_size", 512), ("thin", False), ("removable", False)):
            if lun.get(name) == default:
                del lun[name]


def describe(lun: LunConfig) -> str:
    """One line about a tape or changer LUN for listings (``cistern serve``, ``config check``)."""
    if lun.backend == "changer":
        slots = lun.slots if lun.slots is not None else DEFAULT_SLOTS
        ie = lun.import_export if lun.import_export is not None else DEFAULT_IMPORT_EXPORT
        return f"{slots} slots + {ie} mailslot(s)"
    return f"cartridge {lun.cartridge}" if lun.cartridge else "loaded by the changer"


def library_issue(lun: LunConfig) -> str | None:
    """Why this host cannot hold ``lun.library`` (not a directory, no parent), or None."""
    if lun.library is None:
        return None
    path = lun.library
    if path.exists():
        return None if path.is_dir() else f"{str(path)!r} exists but is not a directory"
    if not path.parent.is_dir():
        return f"directory {str(path.parent)!r} does not exist"
    return None
