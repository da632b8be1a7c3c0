"""Host checks of a validated config: do the backing paths exist as the config says they should?

Kept apart from the model so a config can be validated for another machine (``check_paths=False``).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from cistern.config.errors import ConfigIssue, format_loc
from cistern.config.tape import TAPE_BACKENDS, library_issue

if TYPE_CHECKING:
    from cistern.config.lun import LunConfig
    from cistern.config.model import Config


def _check_lun(lun: LunConfig, where: str) -> list[ConfigIssue]:
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
    if lun.backend == "block":
        if st is None:
            return [ConfigIssue(here, f"{str(path)!r} does not exist")]
        if not stat.S_ISBLK(st.st_mode):
            return [ConfigIssue(here, f"{str(path)!r} is not a block device")]
        return []
    # file backend
    if st is not None:
        if not stat.S_ISREG(st.st_mode):
            return [ConfigIssue(here, f"{str(path)!r} exists but is not a regular file")]
        return []
    if not path.parent.is_dir():
        return [ConfigIssue(here, f"directory {str(path.parent)!r} does not exist")]
    if lun.read_only:
        return [ConfigIssue(here, f"{str(path)!r} does not exist and a read-only LUN cannot create it")]
    if lun.size is None:
        return [ConfigIssue(f"{where}.size", f"{str(path)!r} does not exist; a size is needed to create it")]
    return []


def check_paths(config: Config) -> list[ConfigIssue]:
    """Problems with the backing paths on this host; empty when all is well."""
    issues: list[ConfigIssue] = []
    for t_index, target in enumerate(config.targets):
        for l_index, lun in enumerate(target.luns):
            issues += _check_lun(lun, format_loc(("targets", t_index, "luns", l_index)))
    return issues
