"""Host checks of a validated config: do the backing paths exist as the config says they should, and
will ``serve`` accept them (the size rules of :mod:`cistern.storage.factory`)?

- a file or device path that does not exist or is of the wrong kind; a missing directory (with the
  command that creates it);
- an existing file larger than ``size`` (refused: it would hide data), smaller than ``size`` on a
  read-only LUN, or without ``size`` and not a whole number of blocks (an empty file included);
- a block device smaller than ``size``;
- a thick (``thin = false``) file LUN still to be created while the filesystem has less free space
  than ``size``;
- memory LUNs adding up to more than the host's available memory (``MemAvailable``).

Kept apart from the model so a config can be validated for another machine (``check_paths=False``).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from cistern.config.errors import ConfigIssue, format_loc
from cistern.config.raid import check_raid_paths
from cistern.config.sizes import format_size, human_size
from cistern.config.tape import TAPE_BACKENDS, library_issue

if TYPE_CHECKING:
    from cistern.config.lun import LunConfig
    from cistern.config.model import Config


def _check_lun(lun: LunConfig, where: str) -> list[ConfigIssue]:
    if lun.raid is not None:
        return check_raid_paths(lun.raid, where)
    if lun.backend in TAPE_BACKENDS:
        issue = library_issue(lun)
        return [ConfigIssue(f"{where}.library", issue)] if issue else []
    if lun.path is None:
        return []
    path: Path = lun.path
    here = f"{where}.path"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        return [ConfigIssue(here, f"cannot stat {str(path)!r}: {exc.strerror}")]
    size_at = f"{where}.size"
    if lun.backend == "block":
        if st is None:
            return [ConfigIssue(here, f"{str(path)!r} does not exist")]
        if not stat.S_ISBLK(st.st_mode):
            return [ConfigIssue(here, f"{str(path)!r} is not a block device")]
        if lun.size is not None:
            device = _device_size(path)
            if device is not None and device < lun.size:
                return [
                    ConfigIssue(
                        size_at,
                        f"block device {str(path)!r} is {human_size(device)} ({device} bytes), smaller "
                        f"than size {format_size(lun.size)}",
                    )
                ]
        return []
    # file backend
    if st is not None:
        if not stat.S_ISREG(st.st_mode):
            return [ConfigIssue(here, f"{str(path)!r} exists but is not a regular file")]
        return _existing_file(lun, str(path), st.st_size, size_at)
    if not path.parent.is_dir():
        return [
            ConfigIssue(
                here, f"directory {str(path.parent)!r} does not exist (create it: mkdir -p {path.parent})"
            )
        ]
    if lun.read_only:
        return [ConfigIssue(here, f"{str(path)!r} does not exist and a read-only LUN cannot create it")]
    if lun.size is None:
        return [ConfigIssue(size_at, f"{str(path)!r} does not exist; a size is needed to create it")]
    if not lun.thin:
        try:
            vfs = os.statvfs(path.parent)
        except OSError:
            return []
        free = vfs.f_bavail * vfs.f_frsize
        if free < lun.size:
            return [
                ConfigIssue(
                    size_at,
                    f"a thick LUN of {human_size(lun.size)} needs that much space, but the filesystem of "
                    f"{str(path.parent)!r} has {human_size(free)} free (set thin = true to overcommit)",
                )
            ]
    return []


def _existing_file(lun: LunConfig, path: str, actual: int, size_at: str) -> list[ConfigIssue]:
    if lun.size is None:
        if actual < lun.block_size or actual % lun.block_size:
            return [
                ConfigIssue(
                    size_at,
                    f"{path!r} is {actual} bytes, not a whole number of {lun.block_size}-byte blocks: "
                    "set size",
                )
            ]
        return []
    if actual > lun.size:
        return [
            ConfigIssue(
                size_at,
                f"{path!r} is {human_size(actual)} ({actual} bytes), larger than size "
                f"{format_size(lun.size)}: serving it would hide data (set size = "
                f'"{format_size(actual)}" or remove size)',
            )
        ]
    if actual < lun.size and lun.read_only:
        return [
            ConfigIssue(
                size_at,
                f"{path!r} is {human_size(actual)}, smaller than size {format_size(lun.size)}, and a "
                "read-only LUN cannot grow it",
            )
        ]
    return []


def _device_size(path: Path) -> int | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    except OSError:
        return None
    finally:
        os.close(fd)


def mem_available() -> int | None:
    """``MemAvailable`` of /proc/meminfo in bytes, or None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_paths(config: Config) -> list[ConfigIssue]:
    """Problems with the backing paths on this host; empty when all is well."""
    issues: list[ConfigIssue] = []
    memory = 0
    for t_index, target in enumerate(config.targets):
        for l_index, lun in enumerate(target.luns):
            issues += _check_lun(lun, format_loc(("targets", t_index, "luns", l_index)))
            if lun.backend == "memory" and lun.size is not None:
                memory += lun.size
    available = mem_available()
    if memory and available is not None and memory > available:
        issues.append(
            ConfigIssue(
                "targets",
                f"memory LUNs need {human_size(memory)} of RAM in all, but this host has "
                f"{human_size(available)} available",
            )
        )
    return issues
