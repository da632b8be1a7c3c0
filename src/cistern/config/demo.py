"""The demo configuration: one open target with one sparse file LUN, for trying cistern in a minute."""

from __future__ import annotations

import os
from pathlib import Path

from cistern.config.lun import LunConfig
from cistern.config.model import Config
from cistern.config.portals import Portal
from cistern.config.sizes import parse_size
from cistern.config.target import TargetConfig

DEMO_TARGET = "iqn.2026-11.org.cistern:demo"
DEMO_TAPE_TARGET = "iqn.2026-11.org.cistern:demo-tape"
DEMO_TAPE_LIBRARY = "tape-library"
DEMO_LUN_FILE = "demo-lun0.img"
DEMO_SIZE = 1 << 30


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/cistern``, else ``~/.local/share/cistern`` (not created here)."""
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".local" / "share"
    return base / "cistern"


def demo_config(
    portal: str | Portal = "127.0.0.1:3260",
    data_dir: str | Path | None = None,
    size: int | str = DEMO_SIZE,
    *,
    tape: bool = False,
) -> Config:
    """Target ``iqn.2026-11.org.cistern:demo``, open to any initiator, no auth, LUN 0 a thin file
    ``<data_dir>/demo-lun0.img`` of ``size`` bytes; with ``tape`` also target
    ``iqn.2026-11.org.cistern:demo-tape``: a changer (LUN 0, eight 1 GiB cartridges in
    ``<data_dir>/tape-library``) and two drives (LUNs 1, 2). Pure: creates nothing on disk."""
    portal = portal if isinstance(portal, Portal) else Portal.parse(portal)
    directory = Path(data_dir) if data_dir is not None else default_data_dir()
    lun = LunConfig(lun=0, backend="file", path=directory / DEMO_LUN_FILE, size=parse_size(size), thin=True)
    target = TargetConfig(name=DEMO_TARGET, alias="cistern demo", portals=[portal], open=True, luns=[lun])
    targets = [target]
    if tape:
        library = LunConfig(
            lun=0, backend="changer", library=directory / DEMO_TAPE_LIBRARY, slots=8, cartridges=8
        )
        drives = [LunConfig(lun=n, backend="tape") for n in (1, 2)]
        targets.append(
            TargetConfig(
                name=DEMO_TAPE_TARGET, alias="cistern demo tape library", portals=[portal], open=True,
                luns=[library, *drives],
            )
        )  # fmt: skip
    return Config(targets=targets)
