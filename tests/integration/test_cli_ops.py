"""Everyday use of the command line against one real ``cistern serve`` (issue 13): transfers between LUNs,
regular files, loop block devices and pipes copy everything or fail; existing files keep what is outside
the copied range; Ctrl-C reports bytes done and ``--resume`` finishes; SCSI errors are one line in
words; listings piped into a file keep full names and ``--json`` has the documented keys; the target's
log names refused initiators and logs session ends in plain ISO-8601 lines.

Every command runs as a real process (``python -m cistern``) so pipes, TTY detection and signals are
the ones a user gets. One target for the module.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import peers
import pytest
from cistern_proc import CisternTarget

pytestmark = [pytest.mark.peers, pytest.mark.timeout(120)]

LONG = "iqn.2026-11.org.cistern.operations.example:a-rather-long-target-name-for-listings"
ACL_IQN = "iqn.2026-11.org.cistern:acl"
CLIENT = "iqn.2026-11.org.cistern:client"
MIB = 1 << 20


def config(port: int, work: Path) -> str:
    return f"""
[[targets]]
name = "{LONG}"
open = true
portals = ["127.0.0.1:{port}"]
[[targets.luns]]
lun = 0
backend = "memory"
size = "64M"
[[targets.luns]]
lun = 1
backend = "file"
path = "{work / "ro.img"}"
read_only = true
[[targets.luns]]
lun = 2
backend = "file"
path = "{work / "thin.img"}"
size = "64M"
thin = true

[[targets]]
name = "{ACL_IQN}"
acl = ["{CLIENT}"]
portals = ["127.0.0.1:{port}"]
[targets.auth.chap]
username = "opsuser"
secret = "ops-secret-123"
[[targets.luns]]
lun = 0
backend = "memory"
size = "8M"
"""


class Env:
    def __init__(self, target: CisternTarget, work: Path) -> None:
        self.target, self.work = target, work
        self.url = f"iscsi://127.0.0.1:{target.port}/{LONG}"

    def lun(self, n: int) -> str:
        return f"{self.url}/{n}"

    def log(self) -> str:
        return self.target.log_path.read_text()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    work = tmp_path_factory.mktemp("cli-ops")
    (work / "ro.img").write_bytes(b"\x5a" * (16 * MIB))
    port = peers.free_port()
    target = CisternTarget(config(port, work), work, work / "serve.log", port=port)
    with target:
        yield Env(target, work)


def cistern(
    *args: str, stdin: object = subprocess.DEVNULL, timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    """Run the CLI; ``stdin`` bytes arrive through a pipe (a stream, length unknown)."""
    command = [sys.executable, "-m", "cistern", *args]
    if isinstance(stdin, bytes):
        return subprocess.run(command, input=stdin, capture_output=True, timeout=timeout)
    return subprocess.run(command, stdin=stdin, capture_output=True, timeout=timeout)  # type: ignore[call-overload]


def error_line(result: subprocess.CompletedProcess[bytes], code: int = 1) -> str:
    """The single ``error:`` line of a failed command; no traceback."""
    err = result.stderr.decode()
    assert result.returncode == code, (result.returncode, err)
    assert "Traceback" not in err and "Task exception" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(("error:", "Error:"))]
    assert len(lines) == 1, err
    return lines[0]


@contextlib.contextmanager
def loop_device(backing: Path) -> Iterator[str]:
    dev = subprocess.run(
        ["losetup", "-f", "--show", str(backing)], check=True, capture_output=True, text=True
    )
    name = dev.stdout.strip()
    try:
        yield name
    finally:
        subprocess.run(["losetup", "-d", name], check=False)


# --------------------------------------------------------------------------------------------------
# transfers: every kind of source and destination


def test_transfer_sources_and_destinations_of_every_kind(env: Env, tmp_path: Path) -> None:
    data = os.urandom(3 * MIB)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    # a block device as the source: fstat says 0 bytes, the device says 3 MiB
    with loop_device(src) as dev:
        result = cistern("write", dev, env.lun(0))
        assert result.returncode == 0, result.stderr
        assert b"copied 3145728 bytes" in result.stderr
    back = cistern("read", env.lun(0), "-", "--length", "3M")  # stdout, a pipe
    assert back.returncode == 0 and back.stdout == data
    # stdin as a pipe (length unknown: read to the end), at an offset
    with subprocess.Popen(["cat", str(src)], stdout=subprocess.PIPE) as cat:
        piped = cistern("write", "-", env.lun(0), "--dest-offset", "8M", stdin=cat.stdout)
    assert piped.returncode == 0 and b"copied 3145728 bytes" in piped.stderr, piped.stderr
    assert cistern("read", env.lun(0), "-", "--offset", "8M", "--length", "3M").stdout == data
    # a block device as the destination, and one too small for the copy (refused before writing)
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\xee" * (4 * MIB))
    with loop_device(disk) as dev:
        assert cistern("read", env.lun(0), dev, "--offset", "8M", "--length", "3M").returncode == 0
        too_big = cistern("read", env.lun(0), dev, "--length", "5M")
        assert "do not fit" in error_line(too_big)
    assert disk.read_bytes() == data + b"\xee" * MIB
    # a stream ending inside a block is padded, and said so
    odd = cistern("write", "-", env.lun(0), "--dest-offset", "16M", stdin=b"x" * 1000)
    assert odd.returncode == 0 and b"padded the last block with 24 zero bytes" in odd.stderr
    # a stream that ends before --length is a failure, not a short success
    short = cistern("write", "-", env.lun(0), "--length", "2M", stdin=b"y" * MIB)
    assert "stdin ended after 1048576 bytes" in error_line(short)
    # more input than the LUN holds is a failure
    big = tmp_path / "big.bin"
    big.write_bytes(b"z" * (2 * MIB))
    over = cistern("write", str(big), env.lun(0), "--dest-offset", "63M")
    assert "beyond the end" in error_line(over)
    with subprocess.Popen(["cat", str(big)], stdout=subprocess.PIPE) as cat:
        over_pipe = cistern("write", "-", env.lun(0), "--dest-offset", "63M", stdin=cat.stdout)
    assert "is full" in error_line(over_pipe)
    empty = cistern("write", "-", env.lun(0), stdin=b"")
    assert "was empty: nothing was written" in error_line(empty)


def test_read_at_offset_keeps_the_rest_of_an_existing_file(env: Env, tmp_path: Path) -> None:
    pattern = os.urandom(MIB)
    assert cistern("write", "-", env.lun(0), "--dest-offset", "4M", stdin=pattern).returncode == 0
    part = tmp_path / "part.img"
    original = os.urandom(8 * MIB)
    part.write_bytes(original)
    result = cistern("read", "--offset", "4M", "--dest-offset", "4M", "--length", "1M", env.lun(0), str(part))
    assert result.returncode == 0, result.stderr
    after = part.read_bytes()
    assert len(after) == 8 * MIB
    assert after[: 4 * MIB] == original[: 4 * MIB] and after[5 * MIB :] == original[5 * MIB :]
    assert after[4 * MIB : 5 * MIB] == pattern


def test_ctrl_c_reports_bytes_done_and_resume_finishes(env: Env, tmp_path: Path) -> None:
    assert cistern("write", "-", env.lun(0), "--dest-offset", "40M", stdin=os.urandom(MIB)).returncode == 0
    out = tmp_path / "big.img"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cistern", "read", env.lun(0), str(out), "--chunk", "4K", "--depth", "2"],
        stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=30)[1].decode()
    assert proc.returncode == 130, err
    match = re.search(r"interrupted: (\d+) bytes of 67108864 copied without a gap", err)
    assert match and 0 < int(match.group(1)) < 64 * MIB, err
    assert "Traceback" not in err and "--resume" in err
    assert out.stat().st_size <= int(match.group(1))
    resumed = cistern("read", "--resume", env.lun(0), str(out))
    assert resumed.returncode == 0 and b"resuming after" in resumed.stderr, resumed.stderr
    whole = cistern("read", env.lun(0), "-")
    assert out.read_bytes() == whole.stdout
    # a file holding other data is not "resumed" into silently
    other = tmp_path / "other.img"
    other.write_bytes(os.urandom(40 * MIB))
    refused = cistern("read", "--resume", env.lun(0), str(other))
    assert "cannot resume" in error_line(refused)


def test_read_keeps_holes_where_the_lun_is_unmapped(env: Env, tmp_path: Path) -> None:
    assert cistern("write", "-", env.lun(2), "--dest-offset", "10M", stdin=os.urandom(MIB)).returncode == 0
    sparse, full = tmp_path / "sparse.img", tmp_path / "full.img"
    assert cistern("read", env.lun(2), str(sparse)).returncode == 0
    assert cistern("read", "--no-sparse", env.lun(2), str(full)).returncode == 0
    assert sparse.stat().st_size == full.stat().st_size == 64 * MIB
    assert sparse.read_bytes() == full.read_bytes()
    assert sparse.stat().st_blocks * 512 <= 2 * MIB < full.stat().st_blocks * 512
    redirected = tmp_path / "redirected.img"
    with open(redirected, "wb") as fh:  # `cistern read URL - > FILE`: stdout is a regular file
        run = subprocess.run(
            [sys.executable, "-m", "cistern", "read", env.lun(2), "-"], stdout=fh, timeout=60
        )
    assert run.returncode == 0 and redirected.read_bytes() == full.read_bytes()


def test_verify_to_stdout_is_refused_and_bench_writes_need_yes(env: Env, tmp_path: Path) -> None:
    assert "--verify needs a FILE that can be read back" in error_line(
        cistern("read", "--verify", env.lun(0), "-"), 2
    )
    marker = os.urandom(MIB)
    assert cistern("write", "-", env.lun(0), stdin=marker).returncode == 0
    refused = cistern("bench", "-r", "50", "-t", "0.3", "--span", "1M", env.lun(0))
    assert "Pass --yes" in error_line(refused, 2)
    assert cistern("read", env.lun(0), "-", "--length", "1M").stdout == marker  # untouched
    ran = cistern("bench", "-r", "50", "-t", "0.3", "--span", "1M", "--yes", "--json", env.lun(0))
    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout)
    assert set(report) == {
        "block_size",
        "depth",
        "read_percent",
        "duration_s",
        "ops",
        "seconds",
        "iops",
        "mib_s",
    }
    assert report["read_percent"] == 50 and report["ops"] > 0


# --------------------------------------------------------------------------------------------------
# errors: one line, in words


def test_scsi_errors_are_one_line_in_words(env: Env, tmp_path: Path) -> None:
    src = tmp_path / "one.bin"
    src.write_bytes(os.urandom(MIB))
    assert error_line(cistern("write", str(src), env.lun(1))) == "error: the LUN is write-protected"
    verbose = error_line(cistern("write", "-v", str(src), env.lun(1)))
    assert "write-protected (sense: DATA PROTECT ASC/ASCQ 0x27/0x00)" in verbose
    beyond = error_line(cistern("read", env.lun(0), str(tmp_path / "x"), "--offset", "63M", "--length", "2M"))
    assert beyond.startswith("error: LBA 131072 is beyond the end (capacity 131072 blocks)")
    for command in (["inquiry"], ["capacity"], ["read", "--length", "1M"], ["inquiry", "--vpd", "lbp"]):
        args = [*command, env.lun(9)] + ([str(tmp_path / "y")] if command[0] == "read" else [])
        assert error_line(cistern(*args)) == "error: LUN 9 does not exist", command
    assert not (tmp_path / "y").exists()  # a read that copied nothing leaves no empty file behind
    wrong = error_line(
        cistern("capacity", f"iscsi://127.0.0.1:{env.target.port}/iqn.2026-11.org.cistern:nope/0")
    )
    assert "not found" in wrong
    refused = error_line(cistern("capacity", f"iscsi://127.0.0.1:{peers.free_port()}/{LONG}/0"))
    assert "refused" in refused


# --------------------------------------------------------------------------------------------------
# output for scripts


def test_listings_piped_keep_full_names_and_json_schema(env: Env, tmp_path: Path) -> None:
    portal = f"127.0.0.1:{env.target.port}"
    out_file = tmp_path / "ls.txt"
    with open(out_file, "wb") as fh:  # stdout redirected to a file, as `cistern ls URL > ls.txt`
        listing = subprocess.run(
            [sys.executable, "-m", "cistern", "ls", f"iscsi://{portal}"], stdout=fh, timeout=60
        )
    assert listing.returncode == 0
    text = out_file.read_text()
    assert [line.split()[0] for line in text.splitlines()[1:]] == [LONG] * 3, text  # ACL target hidden
    assert "64.0 MiB (131072 x 512)" in text and "…" not in text
    ls_json = json.loads(cistern("ls", "--json", env.url).stdout)
    lun = ls_json["targets"][0]["luns"][0]
    assert ls_json["targets"][0]["name"] == LONG
    assert set(lun) == {
        "lun", "peripheral_qualifier", "device_type", "device_type_name", "vendor", "product", "revision",
        "removable", "version", "blocks", "block_size", "size_bytes", "thin_provisioned",
    }  # fmt: skip
    assert [x["size_bytes"] for x in ls_json["targets"][0]["luns"]] == [64 * MIB, 16 * MIB, 64 * MIB]
    assert f"{LONG}  {portal},1" in cistern("discover", portal).stdout.decode()
    disc = json.loads(cistern("discover", "--json", portal).stdout)
    assert disc == {"targets": [{"name": LONG, "portals": [{"address": portal, "tpgt": 1}]}]}
    assert json.loads(cistern("discover", "--digest", "--json", portal).stdout) == disc
    cap = json.loads(cistern("capacity", "--json", env.lun(2)).stdout)
    assert cap == {"lun": 2, "blocks": 131072, "block_size": 512, "size_bytes": 64 * MIB,
                   "thin_provisioned": True, "lbppbe": 0}  # fmt: skip
    inq = json.loads(cistern("inquiry", "--json", env.lun(0)).stdout)
    assert inq["device_type_name"] == "disk" and inq["vendor"] == "CISTERN"
    check = cistern("config", "check", str(env.work / "cistern.toml")).stdout.decode()
    rows = [line.split() for line in check.splitlines()]
    assert [r[0] for r in rows if r and r[0].startswith("iqn.")] == [LONG, ACL_IQN, LONG, LONG, LONG, ACL_IQN]
    assert any(r[:2] == [LONG, "1"] and str(env.work / "ro.img") in r for r in rows), check
    config_json = json.loads(cistern("config", "check", "--json", str(env.work / "cistern.toml")).stdout)
    assert config_json["valid"] and [t["name"] for t in config_json["targets"]] == [LONG, ACL_IQN]
    assert set(config_json["targets"][0]["luns"][0]) == {
        "lun", "backend", "size_bytes", "block_size", "path", "read_only", "thin", "removable",
    }  # fmt: skip


def test_inquiry_decodes_vpd_pages(env: Env) -> None:
    limits = json.loads(cistern("inquiry", "--json", "--vpd", "block-limits", env.lun(2)).stdout)
    assert limits["page"] == 0xB0 and limits["page_name"] == "Block Limits"
    fields = limits["fields"]
    assert fields["max_unmap_lba_count"] > 0 and fields["max_transfer_length"] > 0
    lbp = json.loads(cistern("inquiry", "--json", "--vpd", "0xb2", env.lun(2)).stdout)["fields"]
    assert lbp["lbpu"] is True and lbp["provisioning_type"] == "thin provisioned"
    chars = json.loads(cistern("inquiry", "--json", "--vpd", "177", env.lun(0)).stdout)["fields"]
    assert "medium_rotation_rate" in chars
    ident = json.loads(cistern("inquiry", "--json", "--vpd", "device-id", env.lun(0)).stdout)["fields"]
    types = {d["type"] for d in ident["designators"]}
    assert "SCSI name string" in types or "NAA" in types, ident
    tpc = json.loads(cistern("inquiry", "--json", "--vpd", "third-party-copy", env.lun(0)).stdout)["fields"]
    assert tpc["descriptors"] and all("name" in d for d in tpc["descriptors"])
    text = cistern("inquiry", "--vpd", "block-limits", env.lun(2)).stdout.decode()
    assert "VPD page 0xb0 (Block Limits)" in text and "max_unmap_lba_count: " in text


# --------------------------------------------------------------------------------------------------
# the try-it lines of a target with an ACL and CHAP, and the README's Python


def test_try_it_lines_work_for_an_acl_chap_target(env: Env) -> None:
    out = env.log()
    block = out[out.index(f"Target {ACL_IQN}") :]
    lines = [line.strip() for line in block.split("Try it:")[1].splitlines()]
    commands = [line for line in lines if line.startswith(("iscsi-", "qemu-img"))]
    assert any(c.startswith("qemu-img info --image-opts") for c in commands), commands
    for command in commands:
        args = shlex.split(command.replace("SECRET", "ops-secret-123"))
        result = subprocess.run(args, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert result.returncode == 0, (command, result.stdout, result.stderr)


def test_readme_python_snippet_runs(env: Env, tmp_path: Path) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    snippet = next(block for block in re.findall(r"```python\n(.*?)```", readme, re.S) if "connect(" in block)
    url = "iscsi://127.0.0.1:3260/iqn.2026-11.org.cistern:demo/0"
    assert url in snippet
    script = tmp_path / "snippet.py"
    script.write_text(snippet.replace(url, env.lun(0)))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "4096 bytes", result.stderr


# --------------------------------------------------------------------------------------------------
# the target's log


def test_log_names_refused_initiators_and_session_ends(env: Env) -> None:
    acl_url = f"iscsi://opsuser%wrong-secret-99@127.0.0.1:{env.target.port}/{ACL_IQN}/0"
    for _ in range(8):
        error_line(cistern("capacity", "-i", CLIENT, acl_url))
    ok = cistern("capacity", "-i", CLIENT, acl_url.replace("wrong-secret-99", "ops-secret-123"))
    assert ok.returncode == 0, ok.stderr
    time.sleep(0.3)
    log = env.log()
    every = [line for line in log.splitlines() if "login refused" in line]
    refused = [line for line in every if ACL_IQN in line]
    assert refused, log
    first = refused[0]
    assert re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}[+-]\d{2}:\d{2} WARNING ", first), first
    assert f"initiator {CLIENT} from 127.0.0.1:" in first and f"to {ACL_IQN}" in first
    assert "as CHAP user 'opsuser'" in first and "authentication failure" in first
    assert len(every) <= 6 and "summarised" in every[-1]  # rate limited per source: 8+ attempts, 6 lines
    assert re.search(rf"session ended: {CLIENT} ISID \w+ on {ACL_IQN} \(TSIH \d+\): logged out", log), log
