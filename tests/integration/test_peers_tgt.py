"""The real-peer harness proven against tgt: tgtd lifecycle, libiscsi tools, QEMU, iscsi-test-cu.

The parser tests at the top need no peer; everything marked ``peers`` starts a private tgtd. When a
tool is missing these tests fail with the install hint (``scripts/install-test-deps.sh``).
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections import Counter
from pathlib import Path

import peers
import pytest

# Captured from `iscsi-test-cu -d -S -t ALL` against tgt 1.0.85 (Debian 12), trimmed to the shapes
# the parser must tell apart.
CUNIT_SNIPPET = """\


     CUnit - A unit testing framework for C - Version 2.1-3
     http://cunit.sourceforge.net/


Suite: CompareAndWrite
  Test: Simple ...    [SKIPPED] COMPAREANDWRITE is not implemented.
    [SKIPPED] COMPAREANDWRITE is not implemented.
passed
  Test: InvalidDataOutSize ...    [SKIPPED] Logical unit is fully provisioned. Skipping test
passed
Suite: GetLBAStatus
  Test: Simple ...passed
  Test: BeyondEol ...    [FAILED] GET_LBA_STATUS successful but should have failed with ILLEGAL_REQUEST(0x05)/LBA_OUT_OF_RANGE(0x2100)
FAILED
    1. test_get_lba_status_beyond_eol.c:38  - CU_ASSERT_EQUAL(_r,0)
Suite: Reserve6
  Test: 2Initiators ...    Take out a RESERVE6 from the first initiator
    MODE SENSE should fail from the second initiator
    [FAILED] MODESENSE6 successful but should have failed with NO SENSE(0x00)/NO ASCQ(0x0000)
    RELEASE6 from the second initiator
FAILED
    1. test_reserve6_2initiators.c:70  - CU_ASSERT_EQUAL(_r,0)
  Test: TargetColdReset ...    [SKIPPED] Task Management functionfor ColdReset is not working/implemented

passed
  Test: LUNReset ...passed    [FAILED] PRIN command: failed with sense. SENSE KEY:UNIT_ATTENTION(6) ASCQ:BUS_RESET(0x2900)

Suite: iSCSIdatasn
  Test: iSCSIDataSnInvalid ...FAILED
    1. test_iscsi_datasn_invalid.c:98  - CU_ASSERT_NOT_EQUAL(ret,0)
Suite: iSCSIResiduals
  Test: Read10Invalid ...passed

Run Summary:    Type  Total    Ran Passed Failed Inactive
              suites      5      5    n/a      0        0
               tests      9      9      6      3        0
             asserts    312    312    309      3      n/a

Elapsed time =    0.002 seconds
"""

TGT_KNOWN_FAILURES = {
    "GetLBAStatus.BeyondEol",
    "PrinServiceactionRange.Range",
    "ProutReserve.OwnershipEA",
    "ProutReserve.OwnershipWE",
    "ProutReserve.OwnershipEARO",
    "ProutReserve.OwnershipWERO",
    "Reserve6.2Initiators",
    "iSCSIdatasn.iSCSIDataSnInvalid",
}


# ---------------------------------------------------------------------------------------------
# Parser (no peer needed)


def test_parser_tells_pass_skip_and_fail_apart() -> None:
    results, details, unfinished, summary = peers.parse_cunit_output(CUNIT_SNIPPET)
    assert results == {
        "CompareAndWrite.Simple": "SKIP",
        "CompareAndWrite.InvalidDataOutSize": "SKIP",
        "GetLBAStatus.Simple": "PASS",
        "GetLBAStatus.BeyondEol": "FAIL",
        "Reserve6.2Initiators": "FAIL",
        "Reserve6.TargetColdReset": "SKIP",
        "Reserve6.LUNReset": "PASS",  # the [FAILED] after `passed` is teardown noise, not the verdict
        "iSCSIdatasn.iSCSIDataSnInvalid": "FAIL",
        "iSCSIResiduals.Read10Invalid": "PASS",
    }
    assert unfinished is None
    assert summary == peers.CunitSummary(total=9, ran=9, passed=6, failed=3, inactive=0)
    assert "MODE SENSE should fail from the second initiator" in details["Reserve6.2Initiators"]
    # CUnit counts skips as passes; the parse must agree with CUnit's own totals.
    counts = Counter(results.values())
    assert counts["PASS"] + counts["SKIP"] == summary.passed
    assert counts["FAIL"] == summary.failed


def test_parser_reports_the_test_cut_off_by_a_stall() -> None:
    cut = CUNIT_SNIPPET[: CUNIT_SNIPPET.index("FAILED\n    1. test_reserve6")]
    results, _details, unfinished, summary = peers.parse_cunit_output(cut)
    assert unfinished == "Reserve6.2Initiators"
    assert "Reserve6.2Initiators" not in results
    assert results["GetLBAStatus.BeyondEol"] == "FAIL"
    assert summary is None


def test_parser_keeps_the_worst_verdict_of_a_repeated_test() -> None:
    text = "Suite: S\n  Test: T ...FAILED\nSuite: S\n  Test: T ...passed\n  Test: U ...passed\n"
    results, *_ = peers.parse_cunit_output(text)
    assert results == {"S.T": "FAIL", "S.U": "PASS"}


def test_cunit_report_lists_every_verdict() -> None:
    results, details, _, summary = peers.parse_cunit_output(CUNIT_SNIPPET)
    run = peers.CunitRun(results=results, details=details, output="", returncode=0, summary=summary)
    lines = run.report().splitlines()
    assert lines[0] == "# PASS 3  SKIP 3  FAIL 3"
    assert "SKIP CompareAndWrite.Simple" in lines
    assert "FAIL iSCSIdatasn.iSCSIDataSnInvalid" in lines
    assert len(lines) == 1 + len(results)


def test_listening_addresses_sees_our_own_socket() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert ("127.0.0.1", port) in peers.listening_addresses(os.getpid())
    assert ("127.0.0.1", port) not in peers.listening_addresses(os.getpid())


def test_run_raises_with_output_on_failure() -> None:
    with pytest.raises(peers.PeerCommandError) as err:
        peers.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert err.value.returncode == 3
    assert err.value.stdout == "out\n"
    assert "err" in str(err.value)


def test_missing_tool_names_the_install_script() -> None:
    with pytest.raises(peers.PeerToolMissing, match=r"install-test-deps\.sh"):
        peers.require_tool("no-such-iscsi-tool-xyz")


# ---------------------------------------------------------------------------------------------
# tgt and the libiscsi / QEMU clients


@pytest.mark.peers
def test_tgt_listens_on_exactly_its_portal(tgt: peers.Tgt) -> None:
    assert tgt.port is not None
    assert peers.listening_addresses(tgt.pid) == {("127.0.0.1", tgt.port)}
    peers.wait_port("127.0.0.1", tgt.port, timeout=2)


@pytest.mark.peers
def test_tgt_bind_fallback_is_detected(artifacts_dir: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        daemon = peers.Tgt(port=taken, log_path=artifacts_dir / "tgtd.log", start_timeout=5)
        with pytest.raises(peers.PeerError, match=r"instead of only|exited"):
            daemon.start(attempts=1)
        assert daemon.proc is not None and daemon.proc.poll() is not None  # our tgtd was killed
        daemon.stop()


@pytest.mark.peers
def test_libiscsi_tools_see_the_tgt_disk(tgt_disk: peers.TgtDisk) -> None:
    listing = peers.iscsi_ls(tgt_disk.portal_url, "-s").stdout
    assert f"Target:{tgt_disk.iqn} Portal:127.0.0.1:{tgt_disk.tgt.port},1" in listing
    assert "Lun:0    Type:STORAGE_ARRAY_CONTROLLER" in listing
    assert "Lun:1    Type:DIRECT_ACCESS" in listing

    inquiry = peers.iscsi_inq(tgt_disk.url).stdout
    assert "Peripheral Device Type:DIRECT_ACCESS" in inquiry

    capacity = peers.iscsi_readcapacity16(tgt_disk.url).stdout
    assert f"RETURNED LOGICAL BLOCK ADDRESS:{tgt_disk.size // 512 - 1}" in capacity
    assert f"Total size:{tgt_disk.size}" in capacity


@pytest.mark.peers
def test_qemu_writes_and_reads_back_a_pattern(tgt_disk: peers.TgtDisk) -> None:
    info = peers.qemu_img("info", "--output=json", tgt_disk.url).stdout
    assert f'"virtual-size": {tgt_disk.size}' in info
    out = peers.qemu_io(
        "-f", "raw", "-c", "write -P 0xab 1M 1M", "-c", "read -P 0xab 1M 1M", "-c", "read -P 0 0 1M",
        tgt_disk.url,
    ).stdout  # fmt: skip
    assert "Pattern verification failed" not in out
    assert out.count("wrote 1048576/1048576") == 1
    assert out.count("read 1048576/1048576") == 2


@pytest.mark.peers
def test_tgt_offers_the_parameters_we_set(tgt_disk: peers.TgtDisk) -> None:
    tgt_disk.tgt.set_param(tgt_disk.tid, "MaxRecvDataSegmentLength", 262144)
    tgt_disk.tgt.set_param(tgt_disk.tid, "InitialR2T", "No")
    shown = peers.run(
        ["tgtadm", "-C", str(tgt_disk.tgt.control), "--lld", "iscsi", "--mode", "target",
         "--op", "show", "--tid", str(tgt_disk.tid)]
    ).stdout  # fmt: skip
    assert "MaxRecvDataSegmentLength=262144" in shown
    assert "InitialR2T=No" in shown
    peers.iscsi_inq(tgt_disk.url)  # a session still logs in with them


@pytest.mark.peers
def test_tgt_chap_and_mutual_chap(tgt_disk: peers.TgtDisk) -> None:
    tgt_disk.tgt.add_chap(tgt_disk.tid, "alice", "alicesecret12")
    with pytest.raises(peers.PeerCommandError):
        peers.iscsi_inq(tgt_disk.url)
    peers.iscsi_inq(tgt_disk.url, env=peers.chap_env("alice", "alicesecret12"))
    with pytest.raises(peers.PeerCommandError):
        peers.iscsi_inq(tgt_disk.url, env=peers.chap_env("alice", "wrongsecret99"))

    tgt_disk.tgt.add_chap(tgt_disk.tid, "tgtname", "targetsecret1", outgoing=True)
    mutual = peers.chap_env("alice", "alicesecret12", "tgtname", "targetsecret1")
    peers.iscsi_inq(tgt_disk.url, env=mutual)
    with pytest.raises(peers.PeerCommandError):
        peers.iscsi_inq(tgt_disk.url, env=peers.chap_env("alice", "alicesecret12", "tgtname", "notthesecret"))


# ---------------------------------------------------------------------------------------------
# iscsi-test-cu through the harness


@pytest.mark.peers
def test_iscsi_test_cu_residuals_on_tgt(tgt_disk: peers.TgtDisk, artifacts_dir: Path) -> None:
    artifact = artifacts_dir / "iscsi-test-cu.txt"
    run = peers.run_iscsi_test_cu(
        tgt_disk.url,
        tests="iSCSI.iSCSIResiduals",
        stall_timeout=30,
        total_timeout=120,
        artifact_path=artifact,
    )
    assert not run.stalled and not run.timed_out
    assert run.summary == peers.CunitSummary(total=10, ran=10, passed=10, failed=0, inactive=0)
    assert len(run.results) == 10
    assert set(run.results.values()) == {"PASS"}
    assert "iSCSIResiduals.Read10Residuals" in run.results
    assert "PASS iSCSIResiduals.Write16Residuals" in artifact.read_text().splitlines()
    assert "Suite: iSCSIResiduals" in artifact.with_suffix(".log").read_text()


@pytest.mark.peers
def test_iscsi_test_cu_all_on_tgt_matches_cunit_totals(tgt_disk: peers.TgtDisk, artifacts_dir: Path) -> None:
    """The whole 230-test set (~20 s): the parse must agree with CUnit and with tgt's known result."""
    run = peers.run_iscsi_test_cu(
        tgt_disk.url, stall_timeout=60, total_timeout=300, artifact_path=artifacts_dir / "all.txt"
    )
    assert not run.stalled and not run.timed_out
    assert run.summary is not None and run.summary.total == 230
    counts = run.counts()
    assert counts["PASS"] + counts["SKIP"] == run.summary.passed
    assert counts["FAIL"] == run.summary.failed
    assert len(run.results) == 230
    assert set(run.names("FAIL")) == TGT_KNOWN_FAILURES
    assert counts == {"PASS": 160, "SKIP": 62, "FAIL": 8}


@pytest.mark.peers
def test_iscsi_test_cu_stall_is_cut_off(tgt_disk: peers.TgtDisk) -> None:
    """Freeze our tgtd mid-run: the harness must kill iscsi-test-cu and name the test that hung."""
    pid = tgt_disk.tgt.pid
    freezer = threading.Timer(1.0, os.kill, (pid, signal.SIGSTOP))
    freezer.start()
    try:
        run = peers.run_iscsi_test_cu(tgt_disk.url, tests="ALL", stall_timeout=3, total_timeout=60)
    finally:
        freezer.cancel()
        os.kill(pid, signal.SIGCONT)
    assert run.stalled
    assert run.returncode is None
    assert run.unfinished_test is not None
    assert run.results[run.unfinished_test] == "FAIL"
    assert run.summary is None
