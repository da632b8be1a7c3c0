"""The optional compiled accelerator: which modules mypyc compiles, and which path is active at run time.

``COMPILED_MODULES`` is the one list of hot-path modules that ``setup.py`` compiles with mypyc into C
extensions placed next to their ``.py`` sources (``pip install .`` / ``pip install -e .``; set
``CISTERN_NO_ACCEL=1`` at install time to skip it).  When the build fails or no C compiler is present, the
install goes on with the pure-Python package: the accelerator is optional and never changes behaviour.

At import of :mod:`cistern` (:func:`activate`) the compiled modules are used only when *all* of them are
present and were built from the ``.py`` files now on disk (SHA-256 of each source, recorded by the build
in ``accel_manifest.json``): compiled modules call each other directly, so a mix of compiled and
interpreted members of the group is never loaded.  Otherwise, or when ``CISTERN_PURE_PYTHON=1`` is set,
an import hook loads every listed module from its ``.py`` source.  ``cistern --version`` and the ``serve``
start-up log line print :func:`describe`.

To compile one more module: add its dotted name below and reinstall (bench/README.md).
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

#: modules compiled by mypyc (dotted names); measured per module in bench/RESULTS.md
COMPILED_MODULES: tuple[str, ...] = (
    "cistern.wire.framing",
    "cistern.scsi.server",
    "cistern.scsi.sbc",
    "cistern.scsi.stats",
    "cistern.scsi.table",
    "cistern.scsi.task",
    "cistern.scsi.unit",
    "cistern.scsi.lu",
    "cistern.scsi.alua",
    "cistern.wire.recovery",
    "cistern.wire.target_connection",
    "cistern.wire.target_session",
    "cistern.wire.tasks",
    "cistern.target.engine",
    "cistern.wire.bhs",
    "cistern.wire.pdu",
    "cistern.scsi.reservations",
    "cistern.scsi.rangelock",
    "cistern.target.busypoll",
    "cistern.target.pump",
)

ENV_PURE = "CISTERN_PURE_PYTHON"
"""Set to ``1`` to load every module of :data:`COMPILED_MODULES` from its ``.py`` source."""
MANIFEST = "accel_manifest.json"
"""Written by ``setup.py`` next to this file: ``{"modules": {name: sha256 of the .py}}``."""

_PACKAGE_DIR = Path(__file__).resolve().parent
_state: dict[str, str] = {"path": "pure", "reason": "not activated"}


def source_path(module: str) -> Path:
    """The ``.py`` file of a ``cistern.*`` module (no import)."""
    parts = module.split(".")
    if parts[0] != "cistern" or len(parts) < 2:
        raise ValueError(f"not a cistern module: {module}")
    return _PACKAGE_DIR.joinpath(*parts[1:-1], parts[-1] + ".py")


def source_digest(path: Path) -> str:
    """SHA-256 (hex) of one source file, as the build records it."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _extension(module: str) -> Path | None:
    src = source_path(module)
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = src.with_name(src.stem + suffix)
        if candidate.exists():
            return candidate
    return None


def _compiled_state() -> tuple[bool, str]:
    """(usable, why): whether every compiled module exists and matches its source."""
    present = [m for m in COMPILED_MODULES if _extension(m) is not None]
    if not present:
        return False, "not built"
    if len(present) != len(COMPILED_MODULES):
        missing = sorted(set(COMPILED_MODULES) - set(present))
        return False, f"incomplete build (missing {', '.join(missing)})"
    try:
        recorded = json.loads((_PACKAGE_DIR / MANIFEST).read_text())["modules"]
    except (OSError, ValueError, KeyError, TypeError):
        return False, f"no valid {MANIFEST}"
    for module in COMPILED_MODULES:
        try:
            digest = source_digest(source_path(module))
        except OSError:
            return False, f"source of {module} unreadable"
        if recorded.get(module) != digest:
            return False, f"stale build ({module} changed since it was compiled)"
    return True, "mypyc"


class _SourceFinder:
    """Meta-path finder that loads the listed modules from their ``.py`` files, ahead of the
    extension modules that the default path finder would prefer."""

    def __init__(self, modules: Sequence[str]) -> None:
        self.modules = frozenset(modules)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.modules:
            return None
        return importlib.util.spec_from_file_location(fullname, source_path(fullname))


def activate() -> None:
    """Choose the path once, at import of :mod:`cistern`, before any listed module is imported."""
    if _state["reason"] != "not activated":
        return
    usable, why = _compiled_state()
    if os.environ.get(ENV_PURE, "") not in ("", "0"):
        usable, why = False, f"{ENV_PURE} set" + ("" if why == "mypyc" else f"; accelerator {why}")
    if usable:
        _state.update(path="compiled", reason=why)
        return
    _state.update(path="pure", reason=why)
    if why != "not built" and not any(isinstance(f, _SourceFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourceFinder(COMPILED_MODULES))


def active() -> str:
    """``"compiled"`` or ``"pure"``: the path this process runs."""
    return _state["path"]


def describe() -> str:
    """One line for ``--version`` and logs, e.g. ``compiled (mypyc: 9 modules)`` or
    ``pure Python (not built)`` / ``pure Python (CISTERN_PURE_PYTHON set)`` / ``pure Python (stale build
    (...))``."""
    if _state["path"] == "compiled":
        return f"compiled (mypyc: {len(COMPILED_MODULES)} modules)"
    return f"pure Python ({_state['reason']})"


def loaded_compiled() -> list[str]:
    """Names of the listed modules that are loaded in this process as C extensions."""
    out = []
    for name in COMPILED_MODULES:
        module = sys.modules.get(name)
        loader = getattr(getattr(module, "__spec__", None), "loader", None)
        if isinstance(loader, importlib.machinery.ExtensionFileLoader):
            out.append(name)
    return out
