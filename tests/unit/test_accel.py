"""The optional compiled accelerator (cistern/accel.py, setup.py): which path a process runs, the
CISTERN_PURE_PYTHON switch, and that a stale or partial build is never mixed with the sources.

Each case runs in a fresh interpreter (``sys.executable``), because the path is chosen once at import of
:mod:`cistern`.  With ``CISTERN_EXPECT_COMPILED=1`` (scripts/test.sh sets it when a C compiler exists) the
default path must be the compiled one, so a build that silently fell back to pure Python fails the suite.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cistern
from cistern import accel

PROBE = (
    "import importlib, json, cistern.accel as a\n"
    "for m in a.COMPILED_MODULES: importlib.import_module(m)\n"
    "print(json.dumps({'path': a.active(), 'describe': a.describe(), 'loaded': a.loaded_compiled()}))\n"
)


def _probe(env_extra: dict[str, str], pythonpath: Path | None = None) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != accel.ENV_PURE}
    env.update(env_extra)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(out.stdout)


def test_every_listed_module_has_a_source() -> None:
    assert len(set(accel.COMPILED_MODULES)) == len(accel.COMPILED_MODULES)
    for module in accel.COMPILED_MODULES:
        assert accel.source_path(module).is_file(), module
    assert "cistern.accel" not in accel.COMPILED_MODULES  # it chooses the path: always interpreted


def test_default_path_is_what_is_loaded() -> None:
    state = _probe({})
    if state["path"] == "compiled":
        assert state["loaded"] == list(accel.COMPILED_MODULES)
        assert state["describe"] == f"compiled (mypyc: {len(accel.COMPILED_MODULES)} modules)"
    else:
        assert state["loaded"] == []
        assert str(state["describe"]).startswith("pure Python (")
    if os.environ.get("CISTERN_EXPECT_COMPILED") == "1":
        assert state["path"] == "compiled", f"accelerator expected but not active: {state['describe']}"


def test_pure_switch_loads_every_module_from_source() -> None:
    state = _probe({accel.ENV_PURE: "1"})
    assert state["path"] == "pure"
    assert state["loaded"] == []
    assert str(state["describe"]).startswith("pure Python (CISTERN_PURE_PYTHON set")
    assert _probe({accel.ENV_PURE: "0"})["path"] == _probe({})["path"]


def test_stale_build_falls_back_to_sources_as_a_whole(tmp_path: Path) -> None:
    """A copy of the package whose first compiled module's source changed after the build: nothing of the
    group is loaded compiled (compiled modules call each other natively), and the reason is given."""
    package = Path(cistern.__file__).parent
    copy = tmp_path / "cistern"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    for group_lib in package.parent.glob("cistern_accel__mypyc*"):
        shutil.copy2(group_lib, tmp_path)
    first = accel.COMPILED_MODULES[0]
    source = copy.joinpath(*first.split(".")[1:]).with_suffix(".py")
    # a manifest that matches every source, then one source edited after the "build"
    (copy / accel.MANIFEST).write_text(
        json.dumps({"modules": {m: accel.source_digest(copy.joinpath(*m.split(".")[1:]).with_suffix(".py"))
                                for m in accel.COMPILED_MODULES}})
    )  # fmt: skip
    before = _probe({}, tmp_path)
    source.write_text(source.read_text() + "\n# edited after the build\n")
    after = _probe({}, tmp_path)
    assert after["path"] == "pure" and after["loaded"] == []
    if before["path"] == "compiled":  # extensions present: the edit alone made the difference
        assert after["describe"] == f"pure Python (stale build ({first} changed since it was compiled))"
    else:
        assert after["describe"] == "pure Python (not built)"
