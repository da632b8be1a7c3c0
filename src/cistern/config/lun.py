"""One logical unit (SAM-5 LU) of a target: its LUN, the backing store, and how it presents itself.

Backends: ``file`` (a regular file, created sparse at ``size`` if missing), ``block`` (a block device),
``memory`` (RAM, lost on exit; ``size`` required). ``vendor``/``product``/``revision`` override the
INQUIRY T10 strings (SPC-5 6.7.2: 8, 16 and 4 ASCII characters); ``serial`` overrides VPD page 0x80.
``pr_state`` is where persistent reservations registered with APTPL=1 are kept across restarts (SPC-4
5.13.5; default ``<path>.pr.json`` for file and block LUNs, none for memory LUNs);
``persist_reservations = false`` turns APTPL off (PTPL_C=0). ``soft_threshold`` (thin LUs only) is the
percentage of the capacity physically allocated at which every I_T nexus gets THIN PROVISIONING SOFT
THRESHOLD REACHED (SBC-3 4.7.3.7).  ``sanitize_rate`` paces a SANITIZE overwrite (bytes per second);
left out, it runs at the store's speed while no other I/O waits (SBC-3 5.19).  Backends ``tape`` and
``changer`` and their fields (``library``, ``slots``, ...) are in :mod:`cistern.config.tape`; ``raid``
(backend ``raid``) is a software RAID array of member files or devices (:mod:`cistern.config.raid`);
``ses`` is an enclosure services LU (SES-3) reporting the RAID LUNs of its target.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cistern.config.errors import ConfigValueError
from cistern.config.fields import PathField, SizeBytes
from cistern.config.raid import RaidConfig
from cistern.config.sizes import human_size
from cistern.config.tape import TAPE_BACKENDS, TapeFields, check_tape_lun

MAX_LUN = 16383  # single-level LUN, peripheral/flat addressing (SAM-5 4.7)
Backend = Literal["file", "memory", "block", "tape", "changer", "raid", "ses"]


def _ascii_field(value: str | None, what: str, max_len: int, *, spaces: bool) -> str | None:
    if value is None:
        return None
    low = 0x20 if spaces else 0x21
    if not value or len(value) > max_len or any(not low <= ord(ch) <= 0x7E for ch in value):
        kind = "printable ASCII" if spaces else "printable ASCII without spaces"
        raise ConfigValueError(f"{value!r}: {what} must be 1..{max_len} characters of {kind}")
    return value


class LunConfig(TapeFields, BaseModel):
    """A LUN and its backing store."""

    model_config = ConfigDict(extra="forbid", strict=True)

    lun: Annotated[int, Field(ge=0, le=MAX_LUN)]
    backend: Backend
    path: PathField | None = None
    size: SizeBytes | None = None
    block_size: Literal[512, 4096] = 512
    read_only: bool = False
    thin: bool = False
    removable: bool = False
    serial: str | None = None
    vendor: str | None = None
    product: str | None = None
    revision: str | None = None
    pr_state: PathField | None = None
    persist_reservations: bool = True
    soft_threshold: Annotated[int, Field(ge=1, le=100)] | None = None
    sanitize_rate: Annotated[SizeBytes, Field(ge=1)] | None = None
    raid: RaidConfig | None = None

    @field_validator("serial")
    @classmethod
    def _serial(cls, value: str | None) -> str | None:
        return _ascii_field(value, "serial", 64, spaces=False)

    @field_validator("vendor")
    @classmethod
    def _vendor(cls, value: str | None) -> str | None:
        return _ascii_field(value, "vendor", 8, spaces=True)

    @field_validator("product")
    @classmethod
    def _product(cls, value: str | None) -> str | None:
        return _ascii_field(value, "product", 16, spaces=True)

    @field_validator("revision")
    @classmethod
    def _revision(cls, value: str | None) -> str | None:
        return _ascii_field(value, "revision", 4, spaces=True)

    def backing_paths(self) -> list[Path]:
        """Every file or device this LUN uses (a path, or a RAID array's members, spares and journal)."""
        if self.raid is not None:
            return self.raid.paths()
        return [self.path] if self.path is not None else []

    def pr_state_path(self) -> str | None:
        """Where APTPL state lives, or None when reservations do not persist across restarts."""
        if not self.persist_reservations:
            return None
        if self.pr_state is not None:
            return str(self.pr_state)
        if self.path is None and self.raid is not None:
            return f"{self.raid.members[0]}.pr.json"
        return f"{self.path}.pr.json" if self.path is not None else None

    @model_validator(mode="after")
    def _backend_fields(self) -> LunConfig:
        if (self.raid is not None) != (self.backend == "raid"):
            raise ConfigValueError("a [raid] table goes with backend = \"raid\" (and it needs one)", at=("raid",))
        check_tape_lun(self)
        if self.backend in TAPE_BACKENDS:
            return self
        if self.backend == "ses":
            for name in ("path", "size", "pr_state", "soft_threshold"):
                if getattr(self, name) is not None:
                    raise ConfigValueError(f"an SES LUN has no {name}", at=(name,))
            for name in ("thin", "read_only", "removable"):
                if getattr(self, name):
                    raise ConfigValueError(f"an SES LUN has no {name} setting", at=(name,))
        elif self.backend == "raid":
            for name in ("path", "size"):
                if getattr(self, name) is not None:
                    raise ConfigValueError(f"a {self.backend} LUN has no {name}", at=(name,))
            if self.thin:
                raise ConfigValueError("a RAID LUN is not thin-provisioned", at=("thin",))
        elif self.backend == "memory":
            if self.path is not None:
                raise ConfigValueError("a memory LUN has no path", at=("path",))
            if self.size is None:
                raise ConfigValueError("a memory LUN needs a size", at=("size",))
        elif self.path is None:
            raise ConfigValueError(f"a {self.backend} LUN needs a path", at=("path",))
        if self.soft_threshold is not None and not self.thin:
            raise ConfigValueError("soft_threshold needs thin = true", at=("soft_threshold",))
        if self.size is not None:
            if self.size < self.block_size:
                raise ConfigValueError(
                    f"{self.size} bytes is smaller than one {self.block_size}-byte block", at=("size",)
                )
            if self.size % self.block_size:
                raise ConfigValueError(
                    f"{self.size} bytes ({human_size(self.size)}) is not a multiple of block_size "
                    f"{self.block_size}",
                    at=("size",),
                )
        return self
