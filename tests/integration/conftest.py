"""Fixtures that start real peers for integration tests (helpers themselves live in ``peers.py``).

A missing tool is a failure with the install hint, never a skip: CI installs everything with
``scripts/install-test-deps.sh``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import peers
import pytest

TGT_IQN = "iqn.2024-01.org.cistern.test:tgt"
TGT_LUN_SIZE = 64 * 1024 * 1024


@pytest.fixture
def tgt(artifacts_dir: Path) -> Iterator[peers.Tgt]:
    """A private tgtd on 127.0.0.1:<free port> with no targets; its log goes to the artifacts."""
    with peers.Tgt(log_path=artifacts_dir / "tgtd.log") as daemon:
        yield daemon


@pytest.fixture
def tgt_disk(tgt: peers.Tgt) -> peers.TgtDisk:
    """``tgt`` plus target ``TGT_IQN`` open to all, with a 64 MiB /dev/shm rdwr disk at LUN 1."""
    return peers.open_ram_disk(tgt, TGT_IQN, TGT_LUN_SIZE)
