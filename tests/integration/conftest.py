"""Fixtures that start real peers for integration tests (helpers themselves live in ``peers.py``).

A missing tool is a failure with the install hint, never a skip: CI installs everything with
``scripts/install-test-deps.sh``.

``disk`` runs a test once against tgt and once against cistern's own target (``targets_under_test``):
tgt is started per test (about 0.1 s); the cistern process is shared by the tests of a module and put
back to its open configuration after each test.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import peers
import pytest
from targets_under_test import CisternUnderTest, DiskUnderTest, TgtUnderTest

TGT_IQN = "iqn.2024-01.org.cistern.test:tgt"
TGT_LUN_SIZE = 64 * 1024 * 1024
CISTERN_IQN = "iqn.2024-01.org.cistern.test:cistern"
CISTERN_LUN_SIZE = 64 * 1024 * 1024
ARTIFACTS_ROOT = Path(__file__).resolve().parents[2] / "artifacts"


@pytest.fixture
def tgt(artifacts_dir: Path) -> Iterator[peers.Tgt]:
    """A private tgtd on 127.0.0.1:<free port> with no targets; its log goes to the artifacts."""
    with peers.Tgt(log_path=artifacts_dir / "tgtd.log") as daemon:
        yield daemon


@pytest.fixture
def tgt_disk(tgt: peers.Tgt) -> peers.TgtDisk:
    """``tgt`` plus target ``TGT_IQN`` open to all, with a 64 MiB /dev/shm rdwr disk at LUN 1."""
    return peers.open_ram_disk(tgt, TGT_IQN, TGT_LUN_SIZE)


@pytest.fixture(scope="module")
def cistern_target(request: pytest.FixtureRequest) -> Iterator[CisternUnderTest]:
    """``cistern serve`` for one test module: target ``CISTERN_IQN``, open, a 64 MiB RAM disk at LUN 0.

    Its log is ``artifacts/<module>-cistern/cistern.log``."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.module.__name__) + "-cistern"
    folder = ARTIFACTS_ROOT / name
    folder.mkdir(parents=True, exist_ok=True)
    target = CisternUnderTest(CISTERN_IQN, CISTERN_LUN_SIZE, folder / "work", folder / "cistern.log")
    target.start()
    try:
        yield target
    finally:
        target.stop()


@pytest.fixture(params=["tgt", "cistern"])
def disk(request: pytest.FixtureRequest) -> Iterator[DiskUnderTest]:
    """The test's scratch disk, once on tgt and once on cistern (see ``targets_under_test``)."""
    if request.param == "tgt":
        yield TgtUnderTest(request.getfixturevalue("tgt_disk"))
        return
    target: CisternUnderTest = request.getfixturevalue("cistern_target")
    target.mark()
    try:
        yield target
    finally:
        target.reset()
