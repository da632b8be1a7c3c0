"""Every LUN kind added, removed and resized live on a running ``cistern serve`` (issue 11: "nothing that
can be applied live needs a restart"), checked by real peers while our initiator stays logged in:

- a medium changer with two tape drives, a RAID 1 LUN and an SES LUN arrive in one ``apply``: libiscsi's
  ``iscsi-ls -s`` lists them with their peripheral device types, ``sg_ses`` decodes the SES pages naming
  the array's members, our session gets REPORTED LUNS DATA HAS CHANGED (3F/0E);
- removing one drive of the changer is refused naming the drive and the changer; removing the library and
  the array together is applied, and their library lock and member files are closed once drained;
- a memory LUN grows, a block LUN over a loop device is rescanned after ``losetup -c``: CAPACITY DATA HAS
  CHANGED (2A/09) and ``iscsi-readcapacity16`` sees the new size;
- a portal is added (libiscsi logs in through it) and removed (it refuses connections) with ``cistern admin
  portal``; the session's portal is in ``/api/sessions``, the sessions table and the per-portal gauges.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import peers
import pytest
from admin_proc import AdminServer, metric_value, one_target_server

from cistern.initiator.client import connect
from cistern.initiator.errors import ScsiCheckCondition

pytestmark = [pytest.mark.peers, pytest.mark.timeout(240)]

IQN = "iqn.2026-11.org.cistern.test:admin-units"
OURS = "iqn.2026-11.org.cistern.test:units-ours"
MiB = 1 << 20
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "test_admin_units"


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[AdminServer, int]]:
    with one_target_server(ARTIFACTS, IQN, 'lun = 0\nbackend = "memory"\nsize = "8M"\n') as srv:
        yield srv, srv.iscsi_port


LIBRARY = f"""
[[targets.luns]]
lun = 1
backend = "changer"
library = "{ARTIFACTS / "library"}"
slots = 4
cartridges = 2
cartridge_size = "4M"

[[targets.luns]]
lun = 2
backend = "tape"

[[targets.luns]]
lun = 3
backend = "tape"

[[targets.luns]]
lun = 4
backend = "raid"

[targets.luns.raid]
level = 1
members = ["{ARTIFACTS / "m0.img"}", "{ARTIFACTS / "m1.img"}"]
member_size = "8M"
bitmap = false

[[targets.luns]]
lun = 5
backend = "ses"
"""


async def _clear_ua(session: object, lun: int) -> list[tuple[int, int]]:
    """TEST UNIT READY until GOOD (or a sense that is not a unit attention); the (ASC, ASCQ) seen."""
    seen = []
    for _ in range(10):
        try:
            await session.test_unit_ready(lun)  # type: ignore[attr-defined]
            return seen
        except ScsiCheckCondition as exc:
            if exc.sense_key != 0x06:
                return seen  # a tape drive without a cartridge: NOT READY
            seen.append((exc.asc, exc.ascq))
    raise AssertionError(f"LUN {lun} keeps reporting unit attentions: {seen}")


def _open_paths(pid: int) -> set[str]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.add(os.path.realpath(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return out


def _run(*args: str) -> str:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{args}: {done.stdout}{done.stderr}"
    return done.stdout


def _dashboard_shows_library_and_array(srv: AdminServer) -> None:
    """The dashboard in headless Chromium shows the changer's elements, the drives and the array's state,
    with no console error; a screenshot is kept."""
    from playwright.sync_api import sync_playwright

    chromium = peers.require_tool("chromium")
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium, headless=True, args=["--no-sandbox", "--disable-gpu", "--no-first-run"]
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"http://127.0.0.1:{srv.admin_port}/", wait_until="load")
            row = page.locator(f'#luns tr[data-lun="{IQN}/4"]')
            row.wait_for(timeout=15000)
            text = {n: page.locator(f'#luns tr[data-lun="{IQN}/{n}"]').inner_text() for n in (1, 2, 4, 5)}
            page.screenshot(path=str(ARTIFACTS / "dashboard-library.png"), full_page=True)
        finally:
            browser.close()
    assert not errors, errors
    assert "medium changer" in text[1] and "slots 2/4 full" in text[1], text
    assert "tape drive" in text[2] and "empty" in text[2], text
    assert re.search(r"raid1 \w+, 2/2 in sync", text[4]), text
    assert "reports 1 array(s)" in text[5], text


async def _ses_text(session: object, tmp: Path) -> str:
    """The SES pages (RECEIVE DIAGNOSTIC RESULTS through our initiator) decoded by sg_ses."""
    pages = b""
    for code in (0x00, 0x01, 0x02, 0x05, 0x07, 0x0A):
        cdb = struct.pack(">BBBHB", 0x1C, 0x01, code, 0xFFFF, 0)
        res = await session.execute(5, cdb, read_length=0xFFFF)  # type: ignore[attr-defined]
        pages += bytes(res.data)
    hexfile = tmp / "ses.hex"
    hexfile.write_text(" ".join(f"{b:02x}" for b in pages) + "\n")
    return _run("sg_ses", f"--inhex={hexfile}", "--status", "--join")


def test_every_lun_kind_live(server: tuple[AdminServer, int], tmp_path: Path) -> None:
    peers.require_tool("sg_ses")
    srv, port = server
    loop_file = ARTIFACTS / "loop.img"
    loop_file.write_bytes(bytes(8 * MiB))
    dev = _run("losetup", "-f", "--show", str(loop_file)).strip()
    try:
        asyncio.run(_scenario(srv, port, dev, tmp_path))
    finally:
        subprocess.run(["losetup", "-d", dev], check=False, timeout=30)


async def _scenario(srv: AdminServer, port: int, dev: str, tmp: Path) -> None:
    call = asyncio.to_thread
    url = f"iscsi://127.0.0.1:{port}/{IQN}"
    ours = await connect(f"{url}/0", initiator_name=OURS, retry_unit_attention=0)
    try:
        await _clear_ua(ours, 0)
        await ours.write(0, 0, b"\xa5" * 4096)
        tsih = next(s["tsih"] for s in srv.api("GET", "/api/sessions")["sessions"] if s["initiator"] == OURS)
        before = srv.api("GET", "/api/config?format=toml")

        # a changer with its two drives, a RAID 1 array and an SES LU, in one apply
        report = await call(srv.api, "POST", "/api/config/apply", {"toml": before + LIBRARY})
        assert sorted(c["object"] for c in report["applied"]) == [f"target {IQN} LUN {n}" for n in range(1, 6)]
        assert (0x3F, 0x0E) in await _clear_ua(ours, 0)
        assert await ours.report_luns() == [0, 1, 2, 3, 4, 5]
        types = {}
        for lun in range(6):
            await _clear_ua(ours, lun)
            types[lun] = (await ours.inquiry(lun)).device_type  # type: ignore[union-attr]
        assert types == {0: 0x00, 1: 0x08, 2: 0x01, 3: 0x01, 4: 0x00, 5: 0x0D}
        listing = await call(_run, "iscsi-ls", "-s", f"iscsi://127.0.0.1:{port}")
        (ARTIFACTS / "iscsi-ls.txt").write_text(listing)
        for lun, kind in ((1, "MEDIA_CHANGER"), (2, "SEQUENTIAL_ACCESS"), (3, "SEQUENTIAL_ACCESS"),
                          (4, "DIRECT_ACCESS"), (5, "ENCLOSURE_SERVICES")):
            assert re.search(rf"Lun:{lun}\s+Type:{kind}", listing), listing
        inq = await call(_run, "iscsi-inq", f"{url}/1")
        assert "Peripheral Device Type:MEDIA_CHANGER" in inq, inq
        ses = await _ses_text(ours, tmp)
        (ARTIFACTS / "sg_ses-with-array.txt").write_text(ses)
        assert ses.count("lun4 ") >= 2, ses  # one array device slot per member of LUN 4's array
        kinds = {lun["lun"]: lun["kind"] for lun in srv.api("GET", f"/api/targets/{IQN}")["luns"]}
        assert kinds == {
            0: "memory", 1: "medium changer", 2: "tape drive", 3: "tape drive", 4: "raid", 5: "enclosure services"
        }

        await call(_dashboard_shows_library_and_array, srv)

        # one drive of a changer that stays: refused, naming the drive and the changer
        status, answer = await call(srv.api, "DELETE", f"/api/targets/{IQN}/luns/3", expect=None)
        assert status == 409, answer
        assert answer["error"]["object"] == f"target {IQN} LUN 3", answer
        assert "medium changer LUN 1" in answer["error"]["cause"], answer
        assert await ours.report_luns() == [0, 1, 2, 3, 4, 5]

        # the library and the array go together: their lock and member files close once drained
        report = await call(srv.api, "POST", "/api/config/apply", {"toml": before})
        assert len(report["applied"]) == 5
        assert (0x3F, 0x0E) in await _clear_ua(ours, 0)
        assert await ours.report_luns() == [0]
        held = {str(ARTIFACTS / "m0.img"), str(ARTIFACTS / "m1.img")}
        deadline = time.monotonic() + 15
        while (paths := _open_paths(srv.pid)) & held or any(p.startswith(str(ARTIFACTS / "library")) for p in paths):
            assert time.monotonic() < deadline, sorted(paths)
            await asyncio.sleep(0.1)

        # a memory LUN grows; the data stays; shrinking is refused
        await call(srv.api, "POST", f"/api/targets/{IQN}/luns/0/resize", {"size": "16M"})
        assert (0x2A, 0x09) in await _clear_ua(ours, 0)
        capacity = await ours.read_capacity(0)
        assert capacity.blocks * capacity.block_size == 16 * MiB
        assert bytes(await ours.read(0, 0, 8)) == b"\xa5" * 4096
        status, answer = await call(srv.api, "POST", f"/api/targets/{IQN}/luns/0/resize", {"size": "4M"}, expect=None)
        assert status == 409 and "shrinking" in answer["error"]["cause"], answer
        rc16 = await call(_run, "iscsi-readcapacity16", f"{url}/0")
        assert "Total size:16777216" in rc16, rc16

        # a block LUN over a loop device: the device grows (losetup -c), a rescan serves it
        await call(srv.api, "POST", f"/api/targets/{IQN}/luns", {"lun": 6, "backend": "block", "path": dev}, expect=201)
        await _clear_ua(ours, 6)
        capacity = await ours.read_capacity(6)
        assert capacity.blocks * capacity.block_size == 8 * MiB
        with open(ARTIFACTS / "loop.img", "r+b") as handle:
            handle.truncate(24 * MiB)
        await call(_run, "losetup", "-c", dev)
        report = await call(srv.api, "POST", f"/api/targets/{IQN}/luns/6/rescan")
        assert report["applied"][0]["detail"] == f"rescanned: size {8 * MiB} -> {24 * MiB} bytes", report
        assert (0x2A, 0x09) in await _clear_ua(ours, 6)
        capacity = await ours.read_capacity(6)
        assert capacity.blocks * capacity.block_size == 24 * MiB
        rc16 = await call(_run, "iscsi-readcapacity16", f"{url}/6")
        assert "Total size:25165824" in rc16, rc16
        assert (await call(srv.api, "POST", f"/api/targets/{IQN}/luns/6/rescan"))["applied"] == []
        await call(srv.api, "DELETE", f"/api/targets/{IQN}/luns/6")

        # one more portal, live: libiscsi logs in through it; removed again, it refuses connections
        port2 = peers.free_port()
        admin = [sys.executable, "-m", "cistern", "admin", "--socket", str(srv.socket)]
        added = await call(_run, *admin, "portal", "add", IQN, f"127.0.0.1:{port2}")
        assert f"target {IQN} portal group 1: portals 127.0.0.1:{port}, 127.0.0.1:{port2}" in added, added
        listing = await call(_run, "iscsi-ls", "-s", f"iscsi://127.0.0.1:{port2}")
        assert f"Portal:127.0.0.1:{port2},1" in listing and re.search(r"Lun:0\s+Type:DIRECT_ACCESS", listing), listing
        portal2 = f"127.0.0.1:{port2}"
        assert metric_value(srv.metrics(), "cistern_logins_total", target=IQN, portal=portal2, result="ok") >= 1
        await call(_run, *admin, "portal", "remove", IQN, portal2)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port2), timeout=5).close()

        # the same session all along, on its portal
        mine = next(s for s in srv.api("GET", "/api/sessions")["sessions"] if s["initiator"] == OURS)
        assert mine["tsih"] == tsih and mine["portals"] == [f"127.0.0.1:{port}"], mine
        table = await call(_run, sys.executable, "-m", "cistern", "admin", "--socket", str(srv.socket), "sessions")
        assert "Portal" in table and f"127.0.0.1:{port}" in table, table
        text = srv.metrics()
        portal = f"127.0.0.1:{port}"
        assert metric_value(text, "cistern_portal_sessions", target=IQN, portal=portal) >= 1
        assert metric_value(text, "cistern_portal_connections", target=IQN, portal=portal) >= 1
        assert metric_value(text, "cistern_logins_total", target=IQN, portal=portal, result="ok") >= 1
    finally:
        await ours.logout()
    assert "Traceback" not in srv.log_path.read_text(errors="replace")
