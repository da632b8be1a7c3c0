"""A bounded run of every atheris fuzz target (fuzz/harness.py): 3 seconds each, no crash.

The long run (10^6 inputs per target) is ``bash scripts/fuzz.sh``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TARGETS = ["framer", "text", "login", "negotiation", "chap", "cdb", "tape"]


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_target_smoke(target: str, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    harness = [sys.executable, str(ROOT / "fuzz" / "harness.py")]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    if target in ("login", "cdb", "tape"):  # start from complete logins / every opcode of the table
        seeds = [*harness, "--seeds", target, str(corpus)]
        subprocess.run(seeds, check=True, capture_output=True, env=env, timeout=60)
        assert len(list(corpus.iterdir())) >= 5
    done = subprocess.run(
        [*harness, target, "-max_total_time=3", f"-artifact_prefix={tmp_path}/", str(corpus)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    runs = [line for line in done.stderr.splitlines() if "DONE" in line.split()]
    assert runs, done.stderr[-2000:]
    executions = int(runs[-1].split()[0].lstrip("#"))
    assert executions > 1000, runs[-1]
    assert not list(tmp_path.glob("crash-*"))
