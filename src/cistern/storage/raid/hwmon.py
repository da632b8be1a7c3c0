"""The host's real environmental sensors, read from Linux hwmon (``/sys/class/hwmon/hwmon*/``).

``temp*_input`` (millidegrees Celsius, with ``temp*_crit`` / ``temp*_max`` thresholds and
``temp*_label``) and ``fan*_input`` (rpm).  A machine without hwmon (containers, many VMs: this build
host) yields empty lists, and the enclosure reports those elements as "not available" — values are
never invented.  Unreadable files are skipped.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass

HWMON_ROOT = "/sys/class/hwmon"


@dataclass(frozen=True, slots=True)
class Reading:
    label: str
    value: float  # °C or rpm
    crit: float | None = None
    warn: float | None = None


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _num(path: str, scale: float = 1.0) -> float | None:
    raw = _read(path)
    try:
        return None if raw is None else int(raw) / scale
    except ValueError:
        return None


def read_sensors(root: str = HWMON_ROOT) -> tuple[list[Reading], list[Reading]]:
    """(temperatures, fans) of every hwmon chip under ``root``."""
    temps: list[Reading] = []
    fans: list[Reading] = []
    for chip in sorted(glob.glob(os.path.join(root, "hwmon*"))):
        name = _read(os.path.join(chip, "name")) or os.path.basename(chip)
        for path in sorted(glob.glob(os.path.join(chip, "temp*_input"))):
            value = _num(path, 1000.0)
            if value is None:
                continue
            base = path[: -len("_input")]
            label = _read(base + "_label") or os.path.basename(base)
            temps.append(Reading(f"{name} {label}", value, _num(base + "_crit", 1000.0), _num(base + "_max", 1000.0)))
        for path in sorted(glob.glob(os.path.join(chip, "fan*_input"))):
            value = _num(path)
            if value is None:
                continue
            base = path[: -len("_input")]
            fans.append(Reading(f"{name} {_read(base + '_label') or os.path.basename(base)}", value))
    return temps, fans
