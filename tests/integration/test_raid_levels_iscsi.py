"""RAID 0, 1, 5 and 10 LUNs through iSCSI against one ``cistern serve`` (issue 10, must-show 1; RAID 6 has
its own deeper run in test_raid_ses.py).

A seeded pattern is written through cistern's initiator to every LUN; in the middle of a second round of
writes one member file of each redundant array (RAID 1 x3, RAID 5 x4, RAID 10 x4) is deleted: the
target notices it vanished, fails it, the hot spare takes over and is rebuilt while writes go on.  Every
acknowledged write reads back (sha256 per region) through cistern's initiator and through QEMU's libiscsi
driver (``qemu-img convert``); after the target stops, ``cistern raid check`` reports 0 mismatches on
each redundant array and ``cistern raid status`` shows them clean.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import peers
from cistern_proc import CisternTarget

from cistern.initiator import UnitAttention, connect

IQN = "iqn.2026-11.org.cistern:raidlevels"
MIB = 1 << 20
LEVELS = {0: (0, 3), 1: (1, 3), 2: (5, 4), 3: (10, 4)}  # LUN: (level, members)


def _lun(lun: int, level: int, n: int) -> str:
    members = ", ".join(f'"l{lun}m{i}.img"' for i in range(n))
    spares = "" if level == 0 else f'"l{lun}s0.img"'
    return f"""
[[targets.luns]]
lun = {lun}
backend = "raid"
[targets.luns.raid]
level = {level}
members = [{members}]
spares = [{spares}]
member_size = "5M"
chunk = "16K"
bitmap_region = "256K"
member_timeout = 5
"""


def _config(port: int) -> str:
    luns = "".join(_lun(lun, level, n) for lun, (level, n) in LEVELS.items())
    return f'[[targets]]\nname = "{IQN}"\nportals = ["127.0.0.1:{port}"]\nopen = true\n' + luns


async def _write(sess, lun: int, model: bytearray, off: int, data: bytes) -> None:  # type: ignore[no-untyped-def]
    for _ in range(5):
        try:
            await sess.write(lun, off // 512, data)
            model[off:off + len(data)] = data
            return
        except UnitAttention:
            continue
    raise AssertionError("write kept failing with unit attentions")


def _digests(data: bytes) -> list[str]:
    return [hashlib.sha256(data[i:i + 256 * 1024]).hexdigest() for i in range(0, len(data), 256 * 1024)]


def test_raid_levels_with_vanishing_members(tmp_path: Path, artifacts_dir: Path) -> None:
    port = peers.free_port()
    work = tmp_path / "levels"
    target = CisternTarget(_config(port), work, artifacts_dir / "raid-levels.log", port)
    models: dict[int, bytearray] = {}
    rng = random.Random(3)

    async def run() -> None:
        sess = await connect(f"iscsi://127.0.0.1:{port}/{IQN}/0", retry_unit_attention=5)
        try:
            for lun in LEVELS:
                cap = await sess.read_capacity(lun)
                models[lun] = bytearray(cap.blocks * cap.block_size)
                for off in range(0, len(models[lun]), MIB):
                    await _write(sess, lun, models[lun], off, rng.randbytes(min(MIB, len(models[lun]) - off)))
            for i in range(60):
                for lun, model in models.items():
                    off = rng.randrange(0, len(model) // 4096 - 4) * 4096
                    await _write(sess, lun, model, off, rng.randbytes(4096 * rng.choice([1, 2, 4])))
                if i == 20:
                    for lun, (level, _) in LEVELS.items():
                        if level:
                            (work / f"l{lun}m1.img").unlink()
                if i == 40:
                    await asyncio.sleep(1.5)  # the monitor notices vanished files within a second
            for lun, model in models.items():
                got = bytearray()
                for off in range(0, len(model), MIB):
                    n = min(MIB, len(model) - off)
                    got += bytes(await sess.read(lun, off // 512, n // 512))
                assert _digests(got) == _digests(model), f"LUN {lun}: acknowledged data lost"
        finally:
            await sess.close()

    def status() -> list[dict]:  # type: ignore[type-arg]
        r = subprocess.run([sys.executable, "-m", "cistern", "raid", "status", "--json", "--config",
                            str(work / "cistern.toml")], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        return [json.loads(line) for line in r.stdout.splitlines()]

    with target:
        asyncio.run(run())
        for lun in LEVELS:
            out = tmp_path / f"lun{lun}.raw"
            peers.qemu_img("convert", "-f", "raw", "-O", "raw", f"iscsi://127.0.0.1:{port}/{IQN}/{lun}", str(out))
            assert _digests(out.read_bytes()) == _digests(bytes(models[lun])), f"LUN {lun} via qemu-img"
            out.unlink()
        deadline = time.monotonic() + 60
        while any(s["state"] != "clean" for s in status()) and time.monotonic() < deadline:
            time.sleep(0.5)
    states = status()
    assert all(s["state"] == "clean" for s in states), states
    for s in states:
        if s["level"]:
            assert any(d.get("state", "").startswith(("stale", "faulty")) or "cannot read" in d.get("note", "")
                       for d in s["devices"]), s  # the vanished member is out of the array
    for lun, (level, _) in LEVELS.items():
        if level:
            r = subprocess.run([sys.executable, "-m", "cistern", "raid", "check", "--lun", str(lun), "--config",
                                str(work / "cistern.toml")], capture_output=True, text=True, timeout=120)
            assert r.returncode == 0 and "0 mismatched stripe(s)" in r.stdout, r.stdout + r.stderr
