#!/usr/bin/env python3
"""RAID benchmark (not a test): RAID 0/5/6 LUNs against a plain file LUN on the same disk, rebuild speed,
and foreground IOPS kept during a throttled rebuild.

Usage (from the repository root, PYTHONPATH=src):

    python3 bench/raid.py [--dir /var/tmp/cistern-raid-bench] [--rounds 2] [--scale 0.3]

1. One ``cistern serve`` with LUN 0 a 1 GiB file, LUN 1 RAID 0 (4 members), LUN 2 RAID 5 (5 members),
   LUN 3 RAID 6 (6 members), every member a file in ``--dir``; ``qemu-img bench`` (QEMU's libiscsi
   driver) runs 1 MiB qd16 read/write and 4 KiB qd32 read/write on each LUN, interleaved per round.
2. Rebuild MiB/s (member bytes written per second) of a RAID 6 over 6 files in process: one member
   missing, then two missing (the first role rebuilt while the second is still missing: two-data
   recovery), rebuild unthrottled.
3. A RAID 6 LUN with a member failed (``cistern raid fail``) and a spare: 4 KiB qd32 random-ish read IOPS
   while the rebuild runs at ``rebuild_speed_min`` vs after it finished.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE), str(_HERE.parent / "tests" / "integration"), str(_HERE.parent / "src")]

import peers  # noqa: E402
from cistern_proc import CisternTarget  # noqa: E402
from workloads import KIB, MIB, Workload, run_workload  # noqa: E402

IQN = "iqn.2026-11.org.cistern:raidbench"


def _raid_lun(lun: int, level: int, n: int, member: str, prefix: str, spares: int = 0, extra: str = "") -> str:
    members = ", ".join(f'"{prefix}{i}.img"' for i in range(n))
    spare_list = ", ".join(f'"{prefix}s{i}.img"' for i in range(spares))
    return f"""
[[targets.luns]]
lun = {lun}
backend = "raid"
[targets.luns.raid]
level = {level}
members = [{members}]
spares = [{spare_list}]
member_size = "{member}"
chunk = "64K"
{extra}
"""


def _target(port: int, luns: str) -> str:
    return f'[[targets]]\nname = "{IQN}"\nportals = ["127.0.0.1:{port}"]\nopen = true\n' + luns


def bench_levels(base: Path, rounds: int, scale: float) -> None:
    port = peers.free_port()
    luns = '[[targets.luns]]\nlun = 0\nbackend = "file"\npath = "plain.img"\nsize = "1G"\n'
    luns += _raid_lun(1, 0, 4, "257M", "r0m") + _raid_lun(2, 5, 5, "257M", "r5m") + _raid_lun(3, 6, 6, "257M", "r6m")
    names = {0: "file", 1: "RAID 0 x4", 2: "RAID 5 x5", 3: "RAID 6 x6"}
    workloads = [Workload("qemu-img", w, bs, qd) for bs, qd in ((MIB, 16), (4 * KIB, 32)) for w in (True, False)]
    results: dict[tuple[int, str], list[float]] = {}
    with CisternTarget(_target(port, luns), base / "levels", base / "levels.log", port) as t:
        for rnd in range(rounds):
            for wl in workloads:
                order = list(names) if rnd % 2 == 0 else list(reversed(names))
                for lun in order:
                    m = run_workload(wl, t.url(IQN, lun), scale=scale, timeout=300)
                    value = m.mib_per_s if wl.block_size >= MIB else m.iops
                    results.setdefault((lun, wl.name), []).append(value)
    print(f"\n{'workload':28s}" + "".join(f"{names[lun]:>14s}" for lun in names))
    for wl in workloads:
        unit = "MiB/s" if wl.block_size >= MIB else "IOPS"
        row = f"{wl.name + ' ' + unit:28s}"
        for lun in names:
            row += f"{statistics.median(results[(lun, wl.name)]):14.0f}"
        print(row)


async def _rebuild_speed(base: Path) -> None:
    from cistern.storage.file import FileStore
    from cistern.storage.raid import RaidStore
    from cistern.storage.raid.superblock import DATA_OFFSET

    d = base / "rebuild"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    size = DATA_OFFSET + 256 * MIB
    members = [(f"m{i}", FileStore(d / f"m{i}.img", size)) for i in range(6)]
    spares = [(f"s{i}", FileStore(d / f"s{i}.img", size)) for i in range(2)]
    arr = await RaidStore.assemble(members, spares, level=6, chunk=64 * KIB, assume_clean=True, speed_max=0)
    arr.auto_rebuild = False
    block = os.urandom(4 * MIB)
    for off in range(0, arr.size, len(block)):
        await arr.write(off, block[: min(len(block), arr.size - off)])
    await arr.flush()
    arr._mark_failed(arr.slots[1], "bench")
    t0 = time.monotonic()
    await arr.recover(1)
    one = arr.geometry.member_size / (time.monotonic() - t0) / MIB
    arr._mark_failed(arr.slots[2], "bench")
    arr._mark_failed(arr.slots[4], "bench")
    t0 = time.monotonic()
    await arr.recover(2)
    two = arr.geometry.member_size / (time.monotonic() - t0) / MIB
    await arr.close()
    shutil.rmtree(d, ignore_errors=True)
    print(f"\nRAID 6 x6 rebuild, 256 MiB members on files: one missing {one:.0f} MiB/s, two missing {two:.0f} MiB/s")


def bench_throttled(base: Path, scale: float) -> None:
    port = peers.free_port()
    work = base / "throttle"
    shutil.rmtree(work, ignore_errors=True)
    cfg = _target(port, _raid_lun(0, 6, 6, "513M", "t", spares=1,
                                  extra='rebuild_speed_min = "20M"\nrebuild_speed_max = "0"'))
    wl = Workload("qemu-img", False, 4 * KIB, 32)
    with CisternTarget(cfg, work, base / "throttle.log", port) as t:
        run_workload(Workload("qemu-img", True, MIB, 16), t.url(IQN, 0), scale=0.5, timeout=300)
    r = subprocess.run([sys.executable, "-m", "cistern", "raid", "fail", "--config", str(work / "cistern.toml"),
                        "--member", str(work / "t1.img")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    with CisternTarget(cfg, work, base / "throttle.log", port) as t:
        during = run_workload(wl, t.url(IQN, 0), scale=scale, timeout=300).iops
        status = subprocess.run([sys.executable, "-m", "cistern", "raid", "status", "--config",
                                 str(work / "cistern.toml")], capture_output=True, text=True).stdout
        still = "rebuilding" in status.splitlines()[0]
        deadline = time.monotonic() + 600
        while "rebuilding" in subprocess.run([sys.executable, "-m", "cistern", "raid", "status", "--config",
                                              str(work / "cistern.toml")], capture_output=True, text=True).stdout \
                and time.monotonic() < deadline:
            time.sleep(1)
        after = run_workload(wl, t.url(IQN, 0), scale=scale, timeout=300).iops
    print(f"\nRAID 6 4k qd32 read IOPS: during throttled rebuild {during:.0f} (rebuild still running at the end: "
          f"{still}), healthy {after:.0f}: {during / after:.0%} kept")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", type=Path, default=Path("/var/tmp/cistern-raid-bench"))
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--scale", type=float, default=0.3)
    p.add_argument("--skip", action="append", default=[], choices=["levels", "rebuild", "throttle"])
    a = p.parse_args()
    shutil.rmtree(a.dir, ignore_errors=True)
    a.dir.mkdir(parents=True)
    try:
        if "levels" not in a.skip:
            bench_levels(a.dir, a.rounds, a.scale)
        if "rebuild" not in a.skip:
            asyncio.run(_rebuild_speed(a.dir))
        if "throttle" not in a.skip:
            bench_throttled(a.dir, a.scale)
    finally:
        shutil.rmtree(a.dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
