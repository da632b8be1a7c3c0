"""A RAID 6 LUN and its enclosure services LU through iSCSI against ``cistern serve`` (issue 10, must-show
1 deep case and 5).

Phases: a background check (``checking``), healthy with a hot spare, member 1's file vanishing in the
middle of writes (the spare takes over: ``rebuilding``), rebuilt, member 3 vanishing mid-write with no
spare left (``degraded``), and after a restart with a new spare, rebuilt again (``clean``).  In every phase
the SES pages are read through cistern's initiator (RECEIVE DIAGNOSTIC RESULTS), written as hex and decoded
by ``sg_ses --inhex=FILE --status --join --warn`` (sg3-utils) with no warning; ``sg_ses --get`` values
must match the array state.  Every acknowledged write reads back (sha256 per 256 KiB region) through
cistern's initiator and through QEMU's libiscsi driver (``qemu-img convert``); the RAID LU raises
unit attention 3F/06 when the array degrades; ``cistern raid check`` reports 0 mismatches at the end.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import shutil
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import peers
import pytest
from admin_proc import metric_value
from cistern_proc import CisternTarget

from cistern.initiator import UnitAttention, connect

IQN = "iqn.2026-11.org.cistern:enclosure-test"
MIB = 1 << 20
REGION = 256 * 1024
DATA = 8 * MIB  # the part of the array the test writes

pytestmark = pytest.mark.skipif(shutil.which("sg_ses") is None, reason="sg3-utils is missing")


def _config(port: int, spares: list[str], admin_port: int = 0) -> str:
    spare_list = ", ".join(f'"{s}"' for s in spares)
    admin = f'[admin]\nsocket_enabled = false\nlisten = "127.0.0.1:{admin_port}"\n' if admin_port else ""
    return f"""{admin}
[[targets]]
name = "{IQN}"
portals = ["127.0.0.1:{port}"]
open = true

[[targets.luns]]
lun = 0
backend = "raid"

[targets.luns.raid]
level = 6
members = ["m0.img", "m1.img", "m2.img", "m3.img", "m4.img"]
spares = [{spare_list}]
member_size = "9M"
chunk = "64K"
bitmap_region = "1M"
journal = "journal.img"
journal_size = "8M"
member_timeout = 5
rebuild_speed_min = "2M"
rebuild_speed_max = "2M"
scrub_interval = 1.5

[[targets.luns]]
lun = 1
backend = "ses"
"""


class Ses:
    """RECEIVE DIAGNOSTIC RESULTS through cistern's initiator, decoded by sg_ses."""

    def __init__(self, sess, tmp: Path) -> None:  # type: ignore[no-untyped-def]
        self.sess = sess
        self.hex = tmp / "ses.hex"

    async def page(self, code: int) -> bytes:
        cdb = struct.pack(">BBBHB", 0x1C, 0x01, code, 0xFFFF, 0)
        res = await self.sess.execute(1, cdb, read_length=0xFFFF)
        return bytes(res.data)

    async def snapshot(self) -> dict[str, bytes]:
        # pages read one by one can straddle a configuration change (a spare taking a member's place): then
        # their generation codes differ and sg_ses says "state of enclosure changed, please try again" --
        # so does a management application: read them all again (SES-3 6.1.3)
        for _ in range(20):
            pages = {c: await self.page(c) for c in (0x00, 0x01, 0x02, 0x05, 0x07, 0x0A)}
            if len({struct.unpack_from(">I", p, 4)[0] for c, p in pages.items() if c != 0x00}) == 1:
                break
        self.hex.write_text(" ".join(f"{b:02x}" for b in b"".join(pages.values())) + "\n")
        r = subprocess.run(["sg_ses", f"--inhex={self.hex}", "--status", "--join", "--warn"],
                           capture_output=True, text=True, timeout=20)
        assert r.returncode == 0 and not r.stderr.strip(), r.stderr
        return {"join": r.stdout.encode(), **{f"{c:02x}": p for c, p in pages.items()}}

    def get(self, field: str, slot: int) -> int:
        r = subprocess.run(["sg_ses", f"--inhex={self.hex}", "--status", f"--get={field}", f"--index=arr,{slot}"],
                           capture_output=True, text=True, timeout=20)
        assert r.returncode == 0, r.stderr
        return int(r.stdout.strip())

    async def slots(self) -> dict[str, dict[str, int]]:
        """Per slot descriptor text: the ledmon fields."""
        await self.snapshot()
        desc = await self.page(0x07)
        texts, pos = [], 8
        while pos + 4 <= len(desc):
            (n,) = struct.unpack_from(">H", desc, pos + 2)
            texts.append(desc[pos + 4:pos + 4 + n].decode())
            pos += 4 + n
        slot_texts = [t for t in texts[1:] if t.startswith("lun0 ")]
        fields = ("ok", "incritarray", "infailedarray", "rebuildremap", "hotspare", "conscheck", "ident", "3:6:1")
        return {Path(t.split(" ", 1)[1]).name if "/" in t else t: {f: self.get(f, i) for f in fields}
                for i, t in enumerate(slot_texts)}

    async def wait_for(self, cond, timeout: float = 30.0) -> dict[str, dict[str, int]]:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while True:
            s = await self.slots()
            if cond(s):
                return s
            if time.monotonic() > deadline:
                raise AssertionError(f"SES never reached the state; last: {s}")
            await asyncio.sleep(0.3)


UAS: list[tuple[int, int]] = []


async def _ie(sess) -> tuple[tuple[int, int], int]:  # type: ignore[no-untyped-def]
    """(informational exception ASC/ASCQ from log page 0x2F, array state code from page 0x30)."""
    for _ in range(3):
        try:
            ie = bytes((await sess.execute(0, struct.pack(">BBBBBHHB", 0x4D, 0, 0x40 | 0x2F, 0, 0, 0, 512, 0),
                                           read_length=512)).data)
            rs = bytes((await sess.execute(0, struct.pack(">BBBBBHHB", 0x4D, 0, 0x40 | 0x30, 0, 0, 0, 512, 0),
                                           read_length=512)).data)
            assert ie[0] == 0x2F and ie[4:6] == b"\0\0" and rs[0] == 0x30
            return (ie[8], ie[9]), rs[8]
        except UnitAttention as exc:
            UAS.append((exc.sense.asc, exc.sense.ascq))
    raise AssertionError("LOG SENSE kept failing with unit attentions")


async def _write(sess, model: bytearray, off: int, data: bytes) -> None:  # type: ignore[no-untyped-def]
    for _ in range(5):
        try:
            await sess.write(0, off // 512, data)
            model[off:off + len(data)] = data
            return
        except UnitAttention as exc:  # 3F/06 or 3F/08: the array changed; the write was not done
            UAS.append((exc.sense.asc, exc.sense.ascq))
    raise AssertionError("write kept failing with unit attentions")


async def _writes_while(sess, model: bytearray, rng: random.Random, action, n: int = 40) -> None:  # type: ignore[no-untyped-def]
    for i in range(n):
        off = rng.randrange(0, DATA // 4096) * 4096
        await _write(sess, model, off, rng.randbytes(4096 * rng.choice([1, 4, 16])) [: min(65536, DATA - off)])
        if i == n // 3:
            action()


async def _verify(url: str, model: bytearray) -> None:
    sess = await connect(url)
    try:
        got = bytearray()
        for off in range(0, DATA, MIB):
            for _ in range(3):
                try:
                    got += bytes(await sess.read(0, off // 512, MIB // 512))
                    break
                except UnitAttention:
                    continue
        for r in range(0, DATA, REGION):
            assert hashlib.sha256(got[r:r + REGION]).digest() == hashlib.sha256(model[r:r + REGION]).digest(), \
                f"region at {r} differs"
    finally:
        await sess.close()


def _qemu_compare(url: str, model: bytearray, tmp: Path) -> None:
    out = tmp / "qemu.raw"
    peers.qemu_img("convert", "-f", "raw", "-O", "raw", url, str(out))
    data = out.read_bytes()[:DATA]
    assert hashlib.sha256(data).digest() == hashlib.sha256(bytes(model)).digest()
    out.unlink()


def _metrics(admin_port: int) -> str:
    """GET /metrics from the admin listener, checked by ``promtool check metrics``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=10) as resp:
        body = resp.read().decode()
    promtool = shutil.which("promtool")
    if promtool is not None:
        r = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
    return body


def _raid_metric(body: str, name: str, member: str | None = None, **labels: str) -> float:
    """A RAID sample of LUN 0; ``member`` is a member file's name (the label holds its full path)."""
    if member is None:
        return metric_value(body, name, target=IQN, lun="0", **labels)
    lines = [ln for ln in body.splitlines() if ln.startswith(name + "{") and f'/{member}"' in ln]
    return metric_value("\n".join(lines), name, target=IQN, lun="0", **labels)


def test_raid6_faults_and_ses_through_iscsi(tmp_path: Path, artifacts_dir: Path) -> None:
    port = peers.free_port()
    admin_port = peers.free_port()
    work = tmp_path / "enc"
    target = CisternTarget(_config(port, ["s0.img"], admin_port), work, artifacts_dir / "raid-ses.log", port)
    url = f"iscsi://127.0.0.1:{port}/{IQN}/0"
    model = bytearray(DATA)
    rng = random.Random(10)

    async def phases() -> int:
        sess = await connect(url, retry_unit_attention=0)  # the test sees every unit attention
        ses = Ses(sess, tmp_path)
        try:
            await sess.execute(1, bytes(6), check=False)  # clear the SES LU's power-on unit attention
            for off in range(0, DATA, MIB):
                await _write(sess, model, off, rng.randbytes(MIB))
            # checking: the background scrub marks every member
            s = await ses.wait_for(lambda s: s["m0.img"]["conscheck"] == 1)
            assert s["s0.img"]["hotspare"] == 1 and s["m2.img"]["ok"] == 1
            # healthy: OK everywhere, the spare is a hot spare, locate (ident) through SEND DIAGNOSTIC
            s = await ses.wait_for(lambda s: all(v["conscheck"] == 0 for v in s.values()))
            assert all(v["ok"] == 1 and v["3:6:1"] == 0 for k, v in s.items()), s
            assert await _ie(sess) == ((0, 0), 0)  # LOG SENSE 0x2F: no informational exception; state clean
            body = _metrics(admin_port)  # the same state in Prometheus metrics
            assert _raid_metric(body, "cistern_raid_state", state="clean") == 1, body
            assert _raid_metric(body, "cistern_raid_degraded") == 0
            assert _raid_metric(body, "cistern_raid_member_state", member="s0.img", state="spare") == 1
            gen0 = struct.unpack_from(">I", await ses.page(0x02), 4)[0]
            status = bytearray(await ses.page(0x02))
            ctrl = bytearray(status)
            ctrl[1] = 0
            for i in range(8, len(ctrl), 4):
                ctrl[i:i + 4] = bytes(4)
            ctrl[8 + 4 * 3:8 + 4 * 4] = bytes([0x80, 0, 0x02, 0])  # slot 2: SELECT + RQST IDENT
            await sess.execute(1, struct.pack(">BBBHB", 0x1D, 0x10, 0, len(ctrl), 0), data_out=bytes(ctrl))
            s = await ses.slots()
            assert s["m2.img"]["ident"] == 1 and s["m1.img"]["ident"] == 0
            # member 1 vanishes mid-write: the spare takes over and is rebuilt
            await _writes_while(sess, model, rng, lambda: (work / "m1.img").unlink())
            s = await ses.wait_for(lambda s: s["s0.img"]["rebuildremap"] == 1, 15)
            assert s["m1.img"]["3:6:1"] == 1 and s["m0.img"]["incritarray"] == 1
            gen1 = struct.unpack_from(">I", await ses.page(0x02), 4)[0]
            assert gen1 > gen0  # the spare took a member's place: a configuration change
            page2 = await ses.page(0x02)
            assert page2[1] & 0x02  # CRIT: the failed member's slot is critical
            s = await ses.wait_for(lambda s: s["s0.img"]["ok"] == 1 and s["s0.img"]["rebuildremap"] == 0, 30)
            assert s["m0.img"]["incritarray"] == 0 and s["m1.img"]["3:6:1"] == 1
            # member 3 vanishes mid-write, no spare left: degraded
            await _writes_while(sess, model, rng, lambda: (work / "m3.img").unlink())
            s = await ses.wait_for(lambda s: s["m3.img"]["3:6:1"] == 1, 15)
            assert s["m0.img"]["incritarray"] == 1 and s["m0.img"]["infailedarray"] == 0
            assert await _ie(sess) == ((0x5D, 0x00), 1)  # FAILURE PREDICTION THRESHOLD EXCEEDED; degraded
            body = _metrics(admin_port)
            assert _raid_metric(body, "cistern_raid_degraded") == 1, body
            assert _raid_metric(body, "cistern_raid_state", state="degraded") == 1
            assert _raid_metric(body, "cistern_raid_member_state", member="m0.img", state="in_sync") == 1
            for _ in range(4):
                try:
                    await sess.test_unit_ready(0)
                except UnitAttention as exc:
                    UAS.append((exc.sense.asc, exc.sense.ascq))
            assert (0x3F, 0x06) in UAS and (0x3F, 0x08) in UAS, UAS  # degraded / spare took over
            return len(UAS)
        finally:
            await sess.close()

    with target:
        asyncio.run(phases())
        asyncio.run(_verify(url, model))
        _qemu_compare(url, model, tmp_path)
    # a new spare: the missing role is rebuilt; then the scrub finds parity right everywhere
    target.config_text = _config(port, ["s0.img", "s1.img"]).replace('"m1.img", ', '"m1-new.img", ').replace(
        '"m3.img", ', '"m3-new.img", ')
    with target:
        async def rebuilt() -> None:
            sess = await connect(url)
            try:
                ses = Ses(sess, tmp_path)
                await ses.wait_for(lambda s: s["s1.img"]["ok"] == 1 and all(
                    v["incritarray"] == 0 and v["rebuildremap"] == 0 for v in s.values()), 40)
            finally:
                await sess.close()

        asyncio.run(rebuilt())
        asyncio.run(_verify(url, model))
    r = subprocess.run([sys.executable, "-m", "cistern", "raid", "check", "--config", str(work / "cistern.toml")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "0 mismatched stripe(s)" in r.stdout, r.stdout + r.stderr
