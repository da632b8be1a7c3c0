"""``cistern serve`` as an administrator meets it (issue 13): errors that name the object (a block device
smaller than ``size``, a file too large for the filesystem with no empty file left behind, a port in
use), the size rules (no LUN silently smaller or larger than configured), one exporter per backing file,
SIGHUP not fatal, sd_notify READY/STOPPING, JSON and file logs, the systemd unit, and the README /
example configs through ``config check``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import peers
import pytest
from cistern_proc import CisternTarget, lun_toml, target_toml

pytestmark = [pytest.mark.peers, pytest.mark.timeout(120)]

IQN = "iqn.2026-11.org.cistern:serve-ops"
ROOT = Path(__file__).parents[2]


def serve_once(
    tmp_path: Path, luns: str, port: int | None = None, *extra: str
) -> subprocess.CompletedProcess[str]:
    """``cistern serve`` expected to fail at start: its result."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(target_toml(IQN, port or peers.free_port(), luns))
    return subprocess.run(
        [sys.executable, "-m", "cistern", *extra, "serve", "-c", str(cfg)],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def one_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


@contextlib.contextmanager
def loop_device(backing: Path) -> Iterator[str]:
    dev = subprocess.run(
        ["losetup", "-f", "--show", str(backing)], check=True, capture_output=True, text=True
    )
    try:
        yield dev.stdout.strip()
    finally:
        subprocess.run(["losetup", "-d", dev.stdout.strip()], check=False)


def test_serve_errors_name_the_object(tmp_path: Path) -> None:
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(4 << 20))
    with loop_device(disk) as dev:
        small = serve_once(tmp_path, lun_toml(0, "block", path=Path(dev), size="8M"))
        # config check catches it too, before serve
        assert f"block device '{dev}' is 4.0 MiB (4194304 bytes), smaller than size 8M" in small.stderr
        assert small.returncode == 2
    huge = tmp_path / "huge.img"
    too_large = serve_once(tmp_path, lun_toml(0, "file", path=huge, size="8P", thin=True))
    line = one_error(too_large)
    assert f"LUN 0: cannot create {huge} at 8.0 PiB: the file is larger than this filesystem allows" in line
    assert not huge.exists()  # no empty file left behind
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        in_use = one_error(serve_once(tmp_path, lun_toml(0, "memory", size="1M"), port))
    assert f"cannot listen on portal 127.0.0.1:{port}" in in_use and "already listens there" in in_use


def test_lun_is_never_silently_smaller_or_larger(tmp_path: Path) -> None:
    big = tmp_path / "big.img"
    big.write_bytes(bytes(32 << 20))
    larger = serve_once(tmp_path, lun_toml(0, "file", path=big, size="16M"))
    assert larger.returncode == 2 and "larger than size 16M: serving it would hide data" in larger.stderr
    assert big.stat().st_size == 32 << 20
    empty = tmp_path / "empty.img"
    empty.touch()
    refused = serve_once(tmp_path, lun_toml(0, "file", path=empty))
    assert refused.returncode == 2 and "is 0 bytes, not a whole number of 512-byte blocks" in refused.stderr
    # a smaller file is grown to the configured size, and the log says so
    small = tmp_path / "small.img"
    small.write_bytes(b"\x11" * (1 << 20))
    port = peers.free_port()
    cfg = target_toml(IQN, port, lun_toml(0, "file", path=small, size="4M"))
    with CisternTarget(cfg, tmp_path / "grow", tmp_path / "grow.log", port=port) as target:
        capacity = subprocess.run(
            [sys.executable, "-m", "cistern", "capacity", "--json", target.url(IQN)],
            capture_output=True,
            timeout=30,
        )
        assert json.loads(capacity.stdout)["size_bytes"] == 4 << 20
    assert small.stat().st_size == 4 << 20 and small.read_bytes()[: 1 << 20] == b"\x11" * (1 << 20)
    assert re.search(
        r"WARNING .*grew .*small\.img from 1\.0 MiB to 4\.0 MiB", (tmp_path / "grow.log").read_text()
    )


def test_two_servers_cannot_export_the_same_file(tmp_path: Path) -> None:
    shared = tmp_path / "shared.img"
    port = peers.free_port()
    cfg = target_toml(IQN, port, lun_toml(0, "file", path=shared, size="4M"))
    with CisternTarget(cfg, tmp_path / "first", tmp_path / "first.log", port=port) as first:
        assert first.proc is not None
        second = one_error(serve_once(tmp_path, lun_toml(0, "file", path=shared, size="4M")))
        assert f"{shared} is already exported by PID {first.proc.pid} (" in second
        assert "cistern" in second and "serve" in second
    # released with the process: a new server may take it
    with CisternTarget(cfg, tmp_path / "again", tmp_path / "again.log", port=port):
        pass
    # the same for a block device
    backing = tmp_path / "dev.img"
    backing.write_bytes(bytes(4 << 20))
    with loop_device(backing) as dev:
        cfg = target_toml(IQN, port, lun_toml(0, "block", path=Path(dev)))
        with CisternTarget(cfg, tmp_path / "blk", tmp_path / "blk.log", port=port) as first:
            assert first.proc is not None
            second = one_error(serve_once(tmp_path, lun_toml(0, "block", path=Path(dev))))
            assert f"{dev} is already exported by PID {first.proc.pid} (" in second


def test_sighup_is_not_fatal_and_systemd_is_notified(tmp_path: Path) -> None:
    notify = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    sock.settimeout(20)
    port = peers.free_port()
    cfg = tmp_path / "c.toml"
    cfg.write_text(target_toml(IQN, port, lun_toml(0, "memory", size="1M")))
    log_file = tmp_path / "serve.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cistern", "--log-format", "json", "--log-file", str(log_file), "serve", "-v", "-c", str(cfg)],
        env={**os.environ, "NOTIFY_SOCKET": str(notify)},
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        ready = sock.recv(4096).decode()
        assert ready.startswith("READY=1\nSTATUS=serving on 127.0.0.1:"), ready
        peers.wait_port("127.0.0.1", port)
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert proc.poll() is None, "SIGHUP killed the server"
        login = subprocess.run(
            [sys.executable, "-m", "cistern", "capacity", f"iscsi://127.0.0.1:{port}/{IQN}/0"],
            capture_output=True,
            timeout=30,
        )
        assert login.returncode == 0
        proc.send_signal(signal.SIGTERM)
        assert sock.recv(4096) == b"STOPPING=1"
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        sock.close()
    records = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert all(set(r) >= {"time", "level", "logger", "message"} for r in records)
    messages = [r["message"] for r in records]
    # SIGHUP re-reads the (unchanged) file: nothing to apply, still serving (admin: control/service.py)
    assert any(m.startswith("SIGHUP: reloading") for m in messages), messages
    assert any("applied: 0 change(s) live" in m for m in messages), messages
    assert any("logged in to" in m for m in messages) and any(r.get("session") for r in records)
    assert any("session ended" in m and "logged out" in m for m in messages)
    assert re.match(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}[+-]\d{2}:\d{2}$", records[0]["time"])


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze (package systemd) is needed"
    cistern = shutil.which("cistern") or "/bin/true"
    unit = (ROOT / "contrib" / "cistern.service").read_text().replace("/usr/local/bin/cistern", cistern)
    assert "Type=notify" in unit and "ExecReload=/bin/kill -HUP $MAINPID" in unit
    path = tmp_path / "cistern.service"
    path.write_text(unit)
    result = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "cistern.service" not in result.stderr, result.stderr


def test_readme_and_example_configs_pass_config_check(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    minimal = next(b for b in re.findall(r"```toml\n(.*?)```", readme, re.S) if "[[targets.luns]]" in b)
    path = tmp_path / "minimal.toml"
    path.write_text(minimal)
    check = subprocess.run(
        [sys.executable, "-m", "cistern", "config", "check", str(path)], capture_output=True, text=True
    )
    if not Path("/var/lib/cistern").is_dir():  # a fresh machine: the message says what to do
        assert check.returncode == 2 and "(create it: mkdir -p /var/lib/cistern)" in check.stderr, (
            check.stderr
        )
    moved = tmp_path / "lib"
    moved.mkdir()
    path.write_text(minimal.replace("/var/lib/cistern", str(moved)))
    check = subprocess.run(
        [sys.executable, "-m", "cistern", "config", "check", str(path)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
    chap = (ROOT / "examples" / "chap.toml").read_text().replace("/var/lib/cistern", str(moved))
    path.write_text(chap)
    check = subprocess.run(
        [sys.executable, "-m", "cistern", "config", "check", "--json", str(path)],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout
    summary = json.loads(check.stdout)
    assert summary["valid"] is True and [t["chap_user"] for t in summary["targets"]] == [
        "app-host",
        "db-host",
    ]
    assert "app-host-secret" not in check.stdout and "db-target-secret" not in check.stdout
