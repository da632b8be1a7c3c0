"""Suite-wide pytest setup: the real-peer helpers on the import path and a per-test artifacts folder.

``tests/integration/peers.py`` is importable as ``import peers`` from any test. Artifacts (tgtd logs,
iscsi-test-cu result lists) go to ``artifacts/<test name>/`` at the repository root, which CI keeps.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS_ROOT = REPO_ROOT / "artifacts"

_integration = str(Path(__file__).resolve().parent / "integration")
if _integration not in sys.path:
    sys.path.insert(0, _integration)


@pytest.fixture
def artifacts_dir(request: pytest.FixtureRequest) -> Path:
    """A folder under ``artifacts/`` named after the test, created empty-or-kept for this run."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid).strip("_")[-150:]
    path = ARTIFACTS_ROOT / name
    path.mkdir(parents=True, exist_ok=True)
    return path
