"""kill -9 of ``cistern serve`` during 4 KiB random writes to a degraded RAID 5 and RAID 6 (issue 10,
must-show 3): the write journal closes the write hole.

Each array is created by a first ``cistern serve``, then ``cistern raid fail`` takes members out (one for
RAID 5, two for RAID 6: no redundancy left, so any stripe whose parity disagreed with its data would
reconstruct a missing member's chunk wrongly).  Twenty rounds: start the target, write random 4 KiB
blocks with 8 in flight through cistern's initiator, SIGKILL the target at a random moment, restart it
and read the whole LUN: every acknowledged write is there and every other block holds its last
acknowledged content (blocks whose write was in flight at the kill hold the old or the new data).  At the
end a spare is added, rebuilt, and ``cistern raid check`` reports 0 mismatches.

The target runs with ``CISTERN_RAID_WRITE_GAP`` (data written, 2 ms pause, then parity), so kills land in
the write hole; without the journal (``CISTERN_TEST_RAID_NO_JOURNAL=1``) the first round already loses an
acknowledged write on the missing member, which is what this test would catch.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import peers
import pytest
from cistern_proc import CisternTarget

from cistern.initiator import ReconnectPolicy, connect

IQN = "iqn.2026-11.org.cistern:raidcrash"
BS = 4096
CHUNK = 16 * 1024
ROUNDS = 20


def _config(port: int, level: int, n: int, spares: list[str], journal: bool = True) -> str:
    members = ", ".join(f'"m{i}.img"' for i in range(n))
    spare_list = ", ".join(f'"{s}"' for s in spares)
    return f"""
[[targets]]
name = "{IQN}"
portals = ["127.0.0.1:{port}"]
open = true

[[targets.luns]]
lun = 0
backend = "raid"

[targets.luns.raid]
level = {level}
members = [{members}]
spares = [{spare_list}]
member_size = "{1024 + 64 * CHUNK // 1024}K"
chunk = "{CHUNK // 1024}K"
bitmap_region = "{4 * CHUNK // 1024}K"
{'journal = "journal.img"' if journal else ''}
journal_size = "4M"
member_timeout = 5
"""


def _cli(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cistern", "raid", *args, "--config", str(workdir / "cistern.toml")],
                          capture_output=True, text=True, timeout=60)


async def _round(url: str, target: CisternTarget, model: list[bytes], rng: random.Random,
                 uncertain: dict[int, set[bytes]]) -> int:
    """Write until the target is killed; returns the count of acknowledged writes."""
    sess = await connect(url, reconnect=ReconnectPolicy(max_attempts=0))
    nblocks = len(model)
    inflight: set[int] = set()
    acked = 0
    stop = asyncio.Event()

    async def writer() -> None:
        nonlocal acked
        while not stop.is_set():
            lba = rng.randrange(nblocks)
            if lba in inflight:
                continue
            data = rng.randbytes(BS)
            inflight.add(lba)
            uncertain.setdefault(lba, {model[lba]}).add(data)
            try:
                await asyncio.wait_for(sess.write(0, lba * (BS // 512), data), 5)
            except Exception:
                stop.set()
                return  # not acknowledged: old or new content are both right
            finally:
                inflight.discard(lba)
            model[lba] = data
            uncertain.pop(lba, None)
            acked += 1

    loop = asyncio.get_running_loop()
    assert target.proc is not None
    pid = target.proc.pid
    loop.call_later(rng.uniform(0.2, 0.5), os.kill, pid, signal.SIGKILL)
    await asyncio.gather(*(writer() for _ in range(8)))
    target.proc.wait(5)
    target.proc = None
    with __import__("contextlib").suppress(Exception):
        await asyncio.wait_for(sess.close(), 1)
    return acked


async def _verify(url: str, model: list[bytes], uncertain: dict[int, set[bytes]]) -> None:
    sess = await connect(url)
    try:
        per = 64
        for first in range(0, len(model), per):
            got = bytes(await sess.read(0, first * (BS // 512), per * (BS // 512)))
            for i in range(per):
                lba = first + i
                blk = got[i * BS:(i + 1) * BS]
                if lba in uncertain:
                    assert blk in uncertain[lba], f"block {lba}: neither the old nor the new content"
                    model[lba] = blk
                else:
                    assert blk == model[lba], f"block {lba}: acknowledged write lost"
        uncertain.clear()
    finally:
        await sess.close()


@pytest.mark.parametrize(("level", "n", "fail"), [(5, 4, 1), (6, 5, 2)])
def test_kill9_during_degraded_writes(level: int, n: int, fail: int, tmp_path: Path, artifacts_dir: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    port = peers.free_port()
    journal = os.environ.get("CISTERN_TEST_RAID_NO_JOURNAL") != "1"  # =1 shows the write hole it closes
    target = CisternTarget(_config(port, level, n, [], journal), tmp_path, artifacts_dir / f"raid{level}-crash.log",
                           port)
    target.start()
    target.stop()
    for i in range(fail):
        r = _cli(tmp_path, "fail", "--member", str(tmp_path / f"m{i + 1}.img"))
        assert r.returncode == 0, r.stderr
    st = _cli(tmp_path, "status")
    assert "degraded" in st.stdout, st.stdout
    url = f"iscsi://127.0.0.1:{port}/{IQN}/0"
    k = n - (1 if level == 5 else 2)
    model = [bytes(BS)] * (k * 64 * CHUNK // BS)
    uncertain: dict[int, set[bytes]] = {}
    rng = random.Random(level)
    total_acked = 0
    t0 = time.monotonic()
    monkeypatch.setenv("CISTERN_RAID_WRITE_GAP", "0.002")  # every stripe update has a 2 ms write hole to land in
    target.start()
    for _ in range(ROUNDS):
        total_acked += asyncio.run(_round(url, target, model, rng, uncertain))
        target.start()
        asyncio.run(_verify(url, model, uncertain))
    target.stop()
    monkeypatch.delenv("CISTERN_RAID_WRITE_GAP")
    assert total_acked > ROUNDS * 20
    # a spare joins, the failed roles are rebuilt, and the scrub finds parity right everywhere
    target.config_text = _config(port, level, n, [f"s{i}.img" for i in range(fail)], journal)
    target.start()
    deadline = time.monotonic() + 60
    while "clean" not in _cli(tmp_path, "status").stdout.splitlines()[0] and time.monotonic() < deadline:
        time.sleep(0.3)
    asyncio.run(_verify(url, model, uncertain))
    target.stop()
    chk = _cli(tmp_path, "check")
    assert chk.returncode == 0 and "0 mismatched stripe(s)" in chk.stdout, chk.stdout + chk.stderr
    print(f"RAID {level}: {ROUNDS} kill -9 rounds, {total_acked} acknowledged writes, {time.monotonic() - t0:.1f} s")
