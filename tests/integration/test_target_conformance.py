"""libiscsi's conformance suite against cistern (issue 2 must show 3, issue 3 must show 1).

``iscsi-test-cu -d -S -t ALL`` runs once against a thick file LUN; the per-test PASS/SKIP/FAIL list is kept
in the artifacts.  Nothing may FAIL (issue 3).  Every test of the suites issue 2 names must PASS outright,
except tests libiscsi runs only on another LU kind (they run in test_conformance_kinds).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import peers
import pytest
from cistern_proc import CisternTarget, lun_toml, target_toml

pytestmark = pytest.mark.peers

IQN = "iqn.2026-11.org.cistern:conformance"
SECOND_INITIATOR = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test-2"

REQUIRED_SUITES = {
    "iSCSIcmdsn",
    "iSCSIdatasn",
    "iSCSIResiduals",
    "iSCSITMF",
    "Inquiry",
    "Mandatory",
    "ModeSense6",
    "NoMedia",
    "Read6",
    "Read10",
    "Read12",
    "Read16",
    "ReadCapacity10",
    "ReadCapacity16",
    "TestUnitReady",
    "Verify10",
    "Verify12",
    "Verify16",
    "Write10",
    "Write12",
    "Write16",
    "WriteVerify10",
    "WriteVerify12",
    "WriteVerify16",
    "Prefetch10",
    "Prefetch16",
    "ReportSupportedOpcodes",
}


# libiscsi's Sanitize.Reset checks that an OVERWRITE is still running 3 s after it was sent and again after
# task/LU/target resets and a reconnect (a real drive takes hours); at the store's own speed (the default
# sanitize_rate) 128 MiB takes well under a second, so this LU paces it to last 8 s.
SANITIZE_OBSERVABLE = 'sanitize_rate = "16M"\n'

# Tests of those suites that libiscsi skips on a thick LU by design, and where they run instead
OTHER_KIND_TESTS = {"Inquiry.BlockLimits": "thin LU, test_conformance_kinds"}


@pytest.fixture(scope="module")
def thick_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CisternTarget]:
    work = tmp_path_factory.mktemp("conformance")
    port = peers.free_port()
    lun = lun_toml(0, "file", path=work / "thick.img", size="128M") + SANITIZE_OBSERVABLE
    cfg = target_toml(IQN, port, lun)
    with CisternTarget(cfg, work, work / "cistern.log", port=port) as t:
        yield t


def test_iscsi_test_cu_all_on_thick_lun(thick_target: CisternTarget, artifacts_dir: Path) -> None:
    run = peers.run_iscsi_test_cu(
        thick_target.url(IQN),
        tests="ALL",
        stall_timeout=120,
        total_timeout=600,
        initiator_name_2=SECOND_INITIATOR,
        artifact_path=artifacts_dir / "iscsi-test-cu-ALL.txt",
    )
    assert not run.stalled, f"iscsi-test-cu stalled in {run.unfinished_test}"
    results = run.results
    assert len(results) >= 200, f"only {len(results)} tests ran"
    seen = {name.split(".", 1)[0] for name in results}
    missing = REQUIRED_SUITES - seen
    assert not missing, f"suites that did not run: {sorted(missing)}"
    failed = sorted(n for n, v in results.items() if v == "FAIL")
    assert not failed, f"failing tests (issue 3 holds -t ALL at zero): {failed}\n{run.report()}"
    not_passed = sorted(
        n
        for n, v in results.items()
        if v != "PASS" and n.split(".", 1)[0] in REQUIRED_SUITES and n not in OTHER_KIND_TESTS
    )
    assert not not_passed, f"issue 2's suites must pass outright on a thick LU: {not_passed}"
