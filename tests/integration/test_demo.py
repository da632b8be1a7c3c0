"""``cistern demo`` as a user runs it (issue 2, Project): data written through it survives a restart on the
same ``--dir``, and SIGTERM with a session logged in and I/O running ends the process cleanly (exit 0).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import peers
import pytest
from cistern_proc import CisternTarget

pytestmark = pytest.mark.peers

IQN = "iqn.2026-11.org.cistern:demo"


def test_demo_serves_the_same_data_after_restart(tmp_path: Path) -> None:
    port = peers.free_port()
    demo = CisternTarget(None, tmp_path, tmp_path / "demo.log", port=port)
    opts = f"driver=iscsi,transport=tcp,portal=127.0.0.1:{port},target={IQN},lun=0"
    with demo:
        out = peers.qemu_io(
            "--image-opts", opts, "-c", "write -P 0x3c 1M 256k", "-c", "write -P 0xc3 0 4k"
        ).stdout
        assert out.count("wrote ") == 2, out
    assert (tmp_path / "demo-lun0.img").exists()
    with demo:
        out = peers.qemu_io(
            "--image-opts", opts, "-c", "read -P 0x3c 1M 256k", "-c", "read -P 0xc3 0 4k"
        ).stdout
        assert "Pattern verification failed" not in out and out.count("read ") == 2, out


def test_sigterm_with_active_session_exits_cleanly(tmp_path: Path) -> None:
    port = peers.free_port()
    demo = CisternTarget(None, tmp_path, tmp_path / "demo.log", port=port)
    demo.start()
    try:
        perf = subprocess.Popen(
            ["iscsi-perf", "-m", "4", "-b", "8", demo.url(IQN)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        time.sleep(1.5)  # logged in, reading
        assert perf.poll() is None, "iscsi-perf did not keep running against the demo"
        code = demo.stop(timeout=15)
        assert code == 0, (tmp_path / "demo.log").read_text()
        log = (tmp_path / "demo.log").read_text()
        assert "Traceback" not in log, log
    finally:
        demo.stop()
        if perf.poll() is None:
            perf.kill()
        perf.wait(10)


def test_acknowledged_writes_survive_a_killed_target(tmp_path: Path) -> None:
    """SIGKILL, no shutdown path at all: every write QEMU saw acknowledged is there after a restart."""
    port = peers.free_port()
    demo = CisternTarget(None, tmp_path, tmp_path / "demo.log", port=port)
    opts = f"driver=iscsi,transport=tcp,portal=127.0.0.1:{port},target={IQN},lun=0"
    demo.start()
    try:
        writes = [f"write -P 0x{0x10 + i:02x} {i * 3}M 1M" for i in range(8)]
        out = peers.qemu_io("--image-opts", opts, *[a for w in writes for a in ("-c", w)]).stdout
        assert out.count("wrote ") == 8, out
        assert demo.proc is not None
        demo.proc.kill()
        demo.proc.wait(10)
    finally:
        demo.stop()
    with demo:
        reads = [f"read -P 0x{0x10 + i:02x} {i * 3}M 1M" for i in range(8)]
        out = peers.qemu_io("--image-opts", opts, *[a for r in reads for a in ("-c", r)]).stdout
        assert "Pattern verification failed" not in out and out.count("read ") == 8, out
