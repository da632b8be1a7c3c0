"""libiscsi's VAAI / copy-offload / remaining-SBC suites against cistern (issue 3).

Two file LUNs on one target (EXTENDED COPY copies between LUs of the device server), thick and thin.
Every test of these suites must PASS or SKIP for a reason listed in ``ALLOWED_SKIPS``; nothing FAILs.
Sanitize.Reset sleeps 60 s by itself (its ``while (testunitready_clear_ua) sleep(60)``), so the stall
timeout is above that.
"""

from __future__ import annotations

from pathlib import Path

import peers
import pytest
from cistern_proc import CisternTarget, lun_toml, target_toml

pytestmark = pytest.mark.peers

IQN = "iqn.2026-11.org.cistern:vaai"
SECOND_INITIATOR = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test-2"

THICK_SUITES = (
    "ALL.CompareAndWrite,ALL.ExtendedCopy,ALL.ReceiveCopyResults,ALL.WriteSame10,ALL.WriteSame16,"
    "ALL.OrWrite,ALL.WriteAtomic16,ALL.ReadDefectData10,ALL.ReadDefectData12"
)  # Sanitize on a thick LU runs in test_target_conformance's -t ALL (it takes over a minute)
THIN_SUITES = "ALL.CompareAndWrite,ALL.WriteSame10,ALL.WriteSame16,ALL.Sanitize"
# Sanitize.Reset expects an OVERWRITE to still run about 5 s after it starts (see test_target_conformance):
# 128 MiB at 16 MiB/s lasts 8 s; the default (the store's speed) would finish first.
SANITIZE_OBSERVABLE = 'sanitize_rate = "16M"\n'

# Skips the standard or the LU kind justifies (see the test names' [SKIPPED] texts).
ALLOWED_SKIPS = {
    "thick": {
        "WriteSame10.Unmap",  # fully provisioned LU: no WRITE SAME UNMAP (LBPWS=0)
        "WriteSame10.UnmapUnaligned",
        "WriteSame10.UnmapUntilEnd",
        "WriteSame10.InvalidDataOutSize",
        "WriteSame16.Unmap",
        "WriteSame16.UnmapUnaligned",
        "WriteSame16.UnmapUntilEnd",
        "WriteSame16.InvalidDataOutSize",
        "CompareAndWrite.InvalidDataOutSize",  # runs on thin LUs only
        "Sanitize.BlockErase",  # BLOCK ERASE is a deallocation: thin LUs only
        "Sanitize.CryptoErase",  # no store encrypts, so no key to change
        "Sanitize.Readonly",  # prints [SKIPPED] for the unsupported erase kinds while passing
        "Sanitize.Reservations",
    },
    "thin": {
        "WriteSame10.UnmapUnaligned",  # LBPPB < 2: 512-byte physical blocks
        "WriteSame10.InvalidDataOutSize",
        "WriteSame16.UnmapUnaligned",
        "WriteSame16.InvalidDataOutSize",
        "CompareAndWrite.InvalidDataOutSize",
        "Sanitize.CryptoErase",
        "Sanitize.Readonly",
        "Sanitize.Reservations",
    },
}


@pytest.mark.parametrize("kind", ["thick", "thin"])
def test_vaai_suites(kind: str, tmp_path: Path, artifacts_dir: Path) -> None:
    port = peers.free_port()
    thin = kind == "thin"
    luns = lun_toml(0, "file", path=tmp_path / "a.img", size="128M", thin=thin) + SANITIZE_OBSERVABLE
    luns += lun_toml(1, "file", path=tmp_path / "b.img", size="128M", thin=thin) + SANITIZE_OBSERVABLE
    cfg = target_toml(IQN, port, luns)
    with CisternTarget(cfg, tmp_path, tmp_path / "cistern.log", port=port) as target:
        run = peers.run_iscsi_test_cu(
            target.url(IQN),
            tests=THIN_SUITES if thin else THICK_SUITES,
            stall_timeout=120,
            total_timeout=900,
            initiator_name_2=SECOND_INITIATOR,
            artifact_path=artifacts_dir / f"iscsi-test-cu-vaai-{kind}.txt",
        )
    assert not run.stalled and not run.timed_out, run.unfinished_test
    failed = run.names("FAIL")
    assert not failed, "\n".join(f"{n}: {' / '.join(run.details.get(n, []))[:400]}" for n in failed)
    unexpected_skips = set(run.names("SKIP")) - ALLOWED_SKIPS[kind]
    assert not unexpected_skips, sorted(unexpected_skips)
    assert run.counts()["PASS"] >= (38 if not thin else 18)  # thick: 44 with Sanitize, which runs elsewhere
