"""libiscsi's conformance suite against a *degraded* RAID 6 LUN (a member failed, no spare, write journal
on): every read of the missing member's chunks is reconstructed and every write keeps P and Q right, and
the LU must still behave as a disk in every test: ``iscsi-test-cu -t ALL`` (but Sanitize, over a
minute by design and run on the thick/thin LUs elsewhere) with zero FAIL.  This caught member I/O
deadlines that needed an asyncio task while the target runs commands eagerly outside one.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import peers
import pytest
from cistern_proc import CisternTarget

pytestmark = pytest.mark.peers

IQN = "iqn.2026-11.org.cistern:raidconf"
SECOND_INITIATOR = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test-2"


def _config(port: int) -> str:
    return f"""
[[targets]]
name = "{IQN}"
portals = ["127.0.0.1:{port}"]
open = true

[[targets.luns]]
lun = 0
backend = "raid"
[targets.luns.raid]
level = 6
members = ["m0.img", "m1.img", "m2.img", "m3.img", "m4.img"]
member_size = "23M"
chunk = "64K"
journal = "journal.img"
journal_size = "16M"
"""


def test_iscsi_test_cu_all_on_degraded_raid6(tmp_path: Path, artifacts_dir: Path) -> None:
    port = peers.free_port()
    target = CisternTarget(_config(port), tmp_path, artifacts_dir / "cistern-raid6.log", port)
    target.start()
    target.stop()
    r = subprocess.run([sys.executable, "-m", "cistern", "raid", "fail", "--config", str(tmp_path / "cistern.toml"),
                        "--member", str(tmp_path / "m2.img")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    with target:
        run = peers.run_iscsi_test_cu(
            target.url(IQN),
            tests=peers.all_suites_except("Sanitize"),
            stall_timeout=120,
            total_timeout=400,
            initiator_name_2=SECOND_INITIATOR,
            artifact_path=artifacts_dir / "iscsi-test-cu-ALL-raid6-degraded.txt",
        )
    assert not run.stalled and not run.timed_out, f"iscsi-test-cu stalled in {run.unfinished_test}"
    assert len(run.results) >= 200, f"only {len(run.results)} tests ran"
    assert not run.names("FAIL"), run.report()
    st = subprocess.run([sys.executable, "-m", "cistern", "raid", "status", "--config", str(tmp_path / "cistern.toml")],
                        capture_output=True, text=True, timeout=60)
    assert "RAID 6 degraded" in st.stdout, st.stdout  # it really ran degraded all along
