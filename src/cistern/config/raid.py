"""The ``[targets.luns.raid]`` table of a ``backend = "raid"`` LUN: a software RAID array of member files
or block devices (see :mod:`cistern.storage.raid` and docs/config.md).

Fields: ``level`` (0, 1, 5, 6, 10), ``members`` (paths, in role order at creation; any order later: the
superblocks say who is who), ``spares``, ``member_size`` (creates missing member files sparse at that size),
``chunk`` (power of two, 4 KiB..64 MiB; md's default 512 KiB), ``bitmap`` and ``bitmap_region`` (write-intent
bitmap granule, member bytes), ``journal`` (a file that closes the RAID 5/6 write hole) and
``journal_size``, ``member_timeout`` (seconds before a stalled member is failed), ``rebuild_speed_min`` /
``rebuild_speed_max`` (bytes/s, md's ``speed_limit_min``/``max``; 0 = unlimited), ``size_tolerance``
(percent by which member sizes may differ), ``scrub_interval`` (seconds between background ``check``
scrubs, like Debian's monthly checkarray; 0 = never), ``assume_clean`` (skip the initial resync).  Impossible layouts are refused here, before any file is
touched: too few members for the level, a path used twice, a journal on a member.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cistern.config.errors import ConfigIssue, ConfigValueError
from cistern.config.fields import PathField, SizeBytes

MIN_MEMBERS = {0: 2, 1: 2, 5: 3, 6: 4, 10: 2}
MAX_MEMBERS = 32  # members + spares: every superblock (4 KiB) lists them all
MAX_JOURNAL = 1 << 30  # read whole at start
METADATA_BYTES = 1 << 20  # superblocks + bitmap before each member's data (storage/raid/superblock.py)


class RaidConfig(BaseModel):
    """A software RAID array (see module docstring)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    level: Literal[0, 1, 5, 6, 10]
    members: Annotated[list[PathField], Field(min_length=2, max_length=MAX_MEMBERS)]
    spares: Annotated[list[PathField], Field(max_length=MAX_MEMBERS)] = Field(default_factory=list)
    member_size: SizeBytes | None = None
    chunk: SizeBytes = 512 * 1024
    bitmap: bool = True
    bitmap_region: SizeBytes = 64 * 1024 * 1024
    journal: PathField | None = None
    journal_size: SizeBytes = 64 * 1024 * 1024
    member_timeout: Annotated[float, Field(gt=0, le=3600)] = 30.0
    rebuild_speed_min: SizeBytes = 1024 * 1024
    rebuild_speed_max: SizeBytes = 0
    size_tolerance: Annotated[float, Field(ge=0, le=50)] = 1.0
    assume_clean: bool = False
    scrub_interval: Annotated[float, Field(ge=0, le=366 * 86400)] = 0.0

    @model_validator(mode="after")
    def _layout(self) -> RaidConfig:
        need = MIN_MEMBERS[self.level]
        if len(self.members) < need:
            raise ConfigValueError(
                f"RAID {self.level} needs at least {need} members, got {len(self.members)}", at=("members",)
            )
        if self.level == 0 and self.spares:
            raise ConfigValueError("RAID 0 has no redundancy: a spare could never be used", at=("spares",))
        if self.chunk < 4096 or self.chunk > 64 << 20 or self.chunk & (self.chunk - 1):
            raise ConfigValueError(f"chunk {self.chunk} must be a power of two from 4K to 64M", at=("chunk",))
        if self.bitmap and (self.bitmap_region < self.chunk or self.bitmap_region % self.chunk):
            raise ConfigValueError("bitmap_region must be a multiple of chunk", at=("bitmap_region",))
        if self.member_size is not None and self.member_size < METADATA_BYTES + 2 * self.chunk:
            raise ConfigValueError(
                f"member_size must hold the 1 MiB metadata area and at least two chunks "
                f"({METADATA_BYTES + 2 * self.chunk} bytes)",
                at=("member_size",),
            )
        if self.journal is not None and self.level not in (5, 6):
            raise ConfigValueError("a journal closes the RAID 5/6 write hole; other levels have none",
                                   at=("journal",))
        if not 1 << 20 <= self.journal_size <= MAX_JOURNAL:
            raise ConfigValueError("journal_size must be 1M..1G", at=("journal_size",))
        if len(self.members) + len(self.spares) > MAX_MEMBERS:
            raise ConfigValueError(f"at most {MAX_MEMBERS} members and spares together", at=("spares",))
        if self.rebuild_speed_max and self.rebuild_speed_min > self.rebuild_speed_max:
            raise ConfigValueError("rebuild_speed_min is above rebuild_speed_max", at=("rebuild_speed_min",))
        seen: dict[Path, str] = {}
        for what, paths in (("members", self.members), ("spares", self.spares)):
            for i, p in enumerate(paths):
                key = Path(os.path.abspath(p))
                if key in seen:
                    raise ConfigValueError(f"{str(p)!r} is already used as {seen[key]}", at=(what, i))
                seen[key] = f"{what}[{i}]"
        if self.journal is not None and Path(os.path.abspath(self.journal)) in seen:
            raise ConfigValueError("the journal cannot be a member", at=("journal",))
        return self

    def paths(self) -> list[Path]:
        """Every file this array uses (members, spares, journal)."""
        return [*self.members, *self.spares, *([self.journal] if self.journal is not None else [])]


def check_raid_paths(raid: RaidConfig, where: str) -> list[ConfigIssue]:
    """Host checks: every member exists (a file or block device) or can be created at ``member_size``,
    and existing members' sizes agree within ``size_tolerance``."""
    issues: list[ConfigIssue] = []
    sizes: list[tuple[int, str]] = []
    for what, paths in (("members", raid.members), ("spares", raid.spares)):
        for i, p in enumerate(paths):
            here = f"{where}.raid.{what}[{i}]"
            try:
                st = os.stat(p)
            except FileNotFoundError:
                if raid.member_size is None:
                    issues.append(ConfigIssue(here, f"{str(p)!r} does not exist; member_size is needed to create it"))
                elif not p.parent.is_dir():
                    issues.append(ConfigIssue(here, f"directory {str(p.parent)!r} does not exist"))
                elif what == "members":
                    sizes.append((raid.member_size, str(p)))
                continue
            except OSError as exc:
                issues.append(ConfigIssue(here, f"cannot stat {str(p)!r}: {exc.strerror}"))
                continue
            if stat.S_ISREG(st.st_mode):
                size = st.st_size
            elif stat.S_ISBLK(st.st_mode):
                try:
                    with open(p, "rb") as f:
                        size = f.seek(0, os.SEEK_END)
                except OSError as exc:
                    issues.append(ConfigIssue(here, f"cannot open {str(p)!r}: {exc.strerror}"))
                    continue
            else:
                issues.append(ConfigIssue(here, f"{str(p)!r} is neither a regular file nor a block device"))
                continue
            if size < METADATA_BYTES + 2 * raid.chunk:
                issues.append(ConfigIssue(here, f"{str(p)!r} is too small ({size} bytes)"))
            elif what == "members":
                sizes.append((size, str(p)))
    if sizes:
        lo, hi = min(sizes), max(sizes)
        if hi[0] - lo[0] > raid.size_tolerance / 100 * hi[0]:
            issues.append(ConfigIssue(
                f"{where}.raid.members",
                f"member sizes differ by more than {raid.size_tolerance}%: {lo[1]} has {lo[0]} bytes, "
                f"{hi[1]} has {hi[0]}"))
    if raid.journal is not None and not raid.journal.parent.is_dir():
        issues.append(ConfigIssue(f"{where}.raid.journal", f"directory {str(raid.journal.parent)!r} does not exist"))
    return issues
