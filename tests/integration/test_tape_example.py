"""examples/tape.toml as shipped: ``cistern config check`` accepts it and ``cistern serve`` runs it on a
fresh directory (cartridges created on first start); libiscsi's tools see a medium changer and two
removable sequential-access devices; a clean stop leaves the library listable by ``cistern tape list``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import peers
from admin_proc import metric_value
from cistern_proc import CisternTarget

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tape.toml"
IQN = "iqn.2026-11.org.cistern:vtl"


def test_example_tape_library_serves(tmp_path: Path, artifacts_dir: Path) -> None:
    port = peers.free_port()
    text = EXAMPLE.read_text()
    assert '"127.0.0.1:3260"' in text and 'library = "tape-library"' in text
    admin_port = peers.free_port()
    config = text.replace("127.0.0.1:3260", f"127.0.0.1:{port}") + (
        f'\n[admin]\nsocket_enabled = false\nlisten = "127.0.0.1:{admin_port}"\n'
    )
    with CisternTarget(config, tmp_path, artifacts_dir / "cistern.log", port=port) as target:
        out = subprocess.run(
            ["iscsi-ls", "-s", f"iscsi://127.0.0.1:{port}"], capture_output=True, text=True, timeout=30
        )
        assert out.returncode == 0, out.stderr
        assert "Lun:0    Type:MEDIA_CHANGER" in out.stdout
        assert out.stdout.count("Type:SEQUENTIAL_ACCESS (No media loaded)") == 2
        inq = subprocess.run(["iscsi-inq", target.url(IQN, 1)], capture_output=True, text=True, timeout=30)
        assert "Peripheral Device Type:SEQUENTIAL_ACCESS" in inq.stdout and "Removable:1" in inq.stdout
        assert "Version Descriptor:0400" in inq.stdout  # SSC-3
        vpd = subprocess.run(
            ["iscsi-inq", "-e", "1", "-c", "0", target.url(IQN, 0)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert "DEVICE_IDENTIFICATION" in vpd.stdout, vpd.stdout + vpd.stderr
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=10) as resp:
            metrics = resp.read().decode()
        assert metric_value(metrics, "cistern_changer_elements", kind="slot", full="yes") == 8, metrics
        assert metric_value(metrics, "cistern_changer_elements", kind="drive", full="no") == 2
        assert metric_value(metrics, "cistern_tape_loaded", lun="1") == 0
        assert target.stop() == 0
    library = tmp_path / "tape-library"
    assert sorted(p for p in os.listdir(library) if not p.startswith(".")) == [
        *[f"CIS00{i}L6" for i in range(1, 9)], "library.json",
    ]  # fmt: skip
    listing = subprocess.run(
        [sys.executable, "-m", "cistern", "tape", "list", "-l", str(library), "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    rows = json.loads(listing.stdout)
    assert [r["location"] for r in rows] == [f"slot {i}" for i in range(1, 9)]
    assert all(r["capacity"] == 1 << 30 and r["used"] == 0 for r in rows)
