"""Build hook for the optional compiled accelerator (everything else is in pyproject.toml).

Compiles the modules listed in ``src/cistern/accel.py`` (``COMPILED_MODULES``) with mypyc into C
extensions next to their sources, and records the SHA-256 of each compiled source in
``cistern/accel_manifest.json`` so that the package only uses a build that matches the code on disk.
Any failure (mypy/mypyc error, no C compiler, no Python headers) prints one warning and installs the
pure-Python package instead.  ``CISTERN_NO_ACCEL=1`` skips the accelerator.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
ACCEL = ROOT / "src" / "cistern" / "accel.py"


def _warn(message: str) -> None:
    print(f"cistern: {message}; installing the pure-Python package", file=sys.stderr)


def compiled_modules() -> tuple[str, ...]:
    """``COMPILED_MODULES`` from accel.py, read without importing the package."""
    for node in ast.parse(ACCEL.read_text()).body:
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.target.id == "COMPILED_MODULES"
            and node.value is not None
        ):
            return tuple(ast.literal_eval(node.value))
    raise RuntimeError("COMPILED_MODULES not found in src/cistern/accel.py")


def _source(module: str) -> Path:
    return Path("src", *module.split(".")).with_suffix(".py")


def accelerator_extensions() -> list[Any]:
    if os.environ.get("CISTERN_NO_ACCEL", "") not in ("", "0"):
        print("cistern: CISTERN_NO_ACCEL set, not compiling the accelerator", file=sys.stderr)
        return []
    try:
        from mypyc.build import mypycify

        os.chdir(ROOT)
        return mypycify(
            [str(_source(m)) for m in compiled_modules()], opt_level="3", group_name="cistern_accel"
        )
    except BaseException as exc:  # mypycify exits on type errors; anything here means "no accelerator"
        if isinstance(exc, KeyboardInterrupt):
            raise
        _warn(f"mypyc could not compile the accelerator ({type(exc).__name__}: {exc})")
        return []


class OptionalBuildExt(build_ext):
    """Builds the extensions if it can; on failure removes them so the pure-Python package installs.

    mypyc runs only here, when the extensions are really built: pip's metadata and requirement steps
    only see the placeholder, so the type check and C generation happen once per install."""

    extensions: list[Any]

    def finalize_options(self) -> None:
        if [e.name for e in self.distribution.ext_modules or []] == [PLACEHOLDER]:
            self.distribution.ext_modules = accelerator_extensions()
        super().finalize_options()

    def run(self) -> None:
        if not self.extensions:
            return
        try:
            super().run()
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                raise
            _warn(f"the accelerator did not compile ({type(exc).__name__}: {exc})")
            for ext in self.extensions:
                Path(self.get_ext_fullpath(ext.name)).unlink(missing_ok=True)
            self.extensions = []
            return
        package_dir = Path(self.get_ext_fullpath("cistern.accel")).parent
        manifest = {
            "modules": {
                m: hashlib.sha256((ROOT / _source(m)).read_bytes()).hexdigest() for m in compiled_modules()
            }
        }
        package_dir.mkdir(parents=True, exist_ok=True)
        (package_dir / "accel_manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")

    def get_outputs(self) -> list[str]:
        outputs = super().get_outputs()
        if self.extensions:
            outputs.append(str(Path(self.get_ext_fullpath("cistern.accel")).parent / "accel_manifest.json"))
        return outputs


# A stand-in until build_ext runs (it marks the wheel platform-specific); none when the accelerator is off.
PLACEHOLDER = "cistern_accel__mypyc"
_wanted = os.environ.get("CISTERN_NO_ACCEL", "") in ("", "0")
setup(
    ext_modules=[Extension(PLACEHOLDER, sources=[])] if _wanted else [],
    cmdclass={"build_ext": OptionalBuildExt},
)
