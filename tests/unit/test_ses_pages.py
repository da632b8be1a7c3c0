"""SES pages decoded by the real peer: ``sg_ses --inhex=FILE --status --join --warn`` (sg3-utils).

Every state of issue 10's table is built as an enclosure model, encoded, and read back by sg_ses: no
warning, and the ``--get`` values are the ledmon mapping (OK, in critical array, in failed array,
rebuild/remap, hot spare, consistency check, fault sensed, ident).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from cistern.scsi import ses_pages as sp

SG_SES = shutil.which("sg_ses")
pytestmark = pytest.mark.skipif(SG_SES is None, reason="sg3-utils (scripts/install-test-deps.sh) is missing")


def write_hex(path: Path, pages: bytes) -> Path:
    path.write_text(" ".join(f"{b:02x}" for b in pages) + "\n")
    return path


def sg_ses(*args: str) -> subprocess.CompletedProcess[str]:
    assert SG_SES is not None
    return subprocess.run([SG_SES, *args], capture_output=True, text=True, timeout=20)


def get(hexfile: Path, field: str, index: str) -> int:
    r = sg_ses(f"--inhex={hexfile}", "--status", f"--get={field}", f"--index={index}")
    assert r.returncode == 0, r.stderr
    return int(r.stdout.strip())


def all_pages(enc: sp.Enclosure) -> bytes:
    return b"".join(sp.page(enc, c) for c in sp.SUPPORTED_PAGES)


def _enc(slots: list[sp.Slot], gen: int = 1) -> sp.Enclosure:
    for i, s in enumerate(slots):
        s.sas_address = bytes.fromhex(f"50000000000000{i:02x}")
    return sp.Enclosure(bytes.fromhex("3a00000000000001"), generation=gen, slots=slots)


STATES = {
    "healthy": ([sp.Slot("m0", sp.OK, sp.SLOT_OK), sp.Slot("m1", sp.OK, sp.SLOT_OK)], 0),
    "degraded": ([sp.Slot("m0", sp.OK, sp.SLOT_OK | sp.SLOT_INCRIT),
                  sp.Slot("m1", sp.CRITICAL, sp.SLOT_INCRIT, fault_sensed=True)], sp.CRITICAL),
    "failed": ([sp.Slot("m0", sp.CRITICAL, sp.SLOT_INFAILED),
                sp.Slot("m1", sp.UNRECOVERABLE, sp.SLOT_INFAILED, fault_sensed=True)], sp.UNRECOVERABLE),
    "rebuilding": ([sp.Slot("m0", sp.OK, sp.SLOT_OK | sp.SLOT_INCRIT),
                    sp.Slot("s0", sp.NONCRITICAL, sp.SLOT_REBUILD)], sp.NONCRITICAL),
    "checking": ([sp.Slot("m0", sp.OK, sp.SLOT_OK | sp.SLOT_CONSCHECK),
                  sp.Slot("m1", sp.OK, sp.SLOT_OK | sp.SLOT_CONSCHECK, ident=True)], 0),
}


@pytest.mark.parametrize("state", list(STATES))
def test_sg_ses_decodes_without_warning(state: str, tmp_path: Path) -> None:
    slots, _ = STATES[state]
    hexfile = write_hex(tmp_path / "p.hex", all_pages(_enc(slots)))
    r = sg_ses(f"--inhex={hexfile}", "--status", "--join", "--warn")
    assert r.returncode == 0, r.stderr
    assert "warn" not in (r.stdout + r.stderr).lower() or "Warning indication" in r.stdout
    assert not r.stderr.strip(), r.stderr
    assert "Array device slot" in r.stdout and "Temperature sensor" in r.stdout
    assert "Not available" in r.stdout  # host sensors the machine does not have: no invented value


def test_get_values_follow_the_state(tmp_path: Path) -> None:
    h = write_hex(tmp_path / "p.hex", all_pages(_enc(STATES["degraded"][0])))
    assert get(h, "incritarray", "arr,0") == 1
    assert get(h, "ok", "arr,0") == 1
    assert get(h, "3:6:1", "arr,1") == 1  # FAULT SENSED
    assert get(h, "infailedarray", "arr,1") == 0
    h = write_hex(tmp_path / "p.hex", all_pages(_enc(STATES["failed"][0])))
    assert get(h, "infailedarray", "arr,0") == 1
    h = write_hex(tmp_path / "p.hex", all_pages(_enc(STATES["rebuilding"][0])))
    assert get(h, "rebuildremap", "arr,1") == 1
    h = write_hex(tmp_path / "p.hex", all_pages(_enc(STATES["checking"][0])))
    assert get(h, "conscheck", "arr,0") == 1 and get(h, "ident", "arr,1") == 1
    spare = _enc([sp.Slot("m0", sp.OK, sp.SLOT_OK), sp.Slot("s0", sp.OK, sp.SLOT_OK | sp.SLOT_HOTSPARE)])
    h = write_hex(tmp_path / "p.hex", all_pages(spare))
    assert get(h, "hotspare", "arr,1") == 1 and get(h, "hotspare", "arr,0") == 0


@pytest.mark.parametrize("state", list(STATES))
def test_page2_summary_bits_follow_the_worst_element(state: str, tmp_path: Path) -> None:
    slots, worst = STATES[state]
    enc = _enc(slots, gen=7)
    pages = sp.configuration_page(enc) + sp.status_page(enc)
    r = sg_ses(f"--inhex={write_hex(tmp_path / 'p.hex', pages)}", "--status", "--page=2")
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if "UNRECOV" in ln)
    flags = dict(part.strip().split("=") for part in line.split(","))
    assert flags["UNRECOV"] == str(int(worst == sp.UNRECOVERABLE)), line
    assert flags["CRIT"] == str(int(worst == sp.CRITICAL)), line
    assert flags["NON-CRIT"] == str(int(worst == sp.NONCRITICAL)), line
    assert "generation code: 0x7" in r.stdout


def test_control_page_parse() -> None:
    enc = _enc([sp.Slot("m0"), sp.Slot("m1")], gen=5)
    ctrl = bytearray(sp.status_page(enc))
    ctrl[1] = 0
    for i in range(8, len(ctrl), 4):
        ctrl[i:i + 4] = bytes(4)
    ctrl[8 + 4 * 2:8 + 4 * 3] = bytes([0x80, 0, 0x02, 0x20])  # slot 1: SELECT, RQST IDENT, RQST FAULT
    slots, ident = sp.parse_control(enc, bytes(ctrl))
    assert slots == [sp.SlotControl(1, True, True)] and ident is None
    bad = bytearray(ctrl)
    bad[7] = 4
    with pytest.raises(sp.ControlError) as exc:
        sp.parse_control(enc, bytes(bad))
    assert exc.value.generation_mismatch


def test_hwmon_sensors_reach_the_pages(tmp_path: Path) -> None:
    """A (fake) hwmon tree: its temperature and fan become real SES elements with their values."""
    from cistern.storage.raid.hwmon import read_sensors

    chip = tmp_path / "hwmon0"
    chip.mkdir()
    (chip / "name").write_text("coretemp\n")
    (chip / "temp1_input").write_text("45000\n")
    (chip / "temp1_label").write_text("Package id 0\n")
    (chip / "temp1_crit").write_text("100000\n")
    (chip / "temp1_max").write_text("80000\n")
    (chip / "fan1_input").write_text("1200\n")
    (chip / "temp2_input").write_text("garbage\n")  # unreadable values are skipped, never guessed
    temps, fans = read_sensors(str(tmp_path))
    assert [(t.label, t.value, t.crit, t.warn) for t in temps] == [("coretemp Package id 0", 45.0, 100.0, 80.0)]
    assert [(f.label, f.value) for f in fans] == [("coretemp fan1", 1200.0)]
    assert read_sensors(str(tmp_path / "none")) == ([], [])
    enc = _enc([sp.Slot("m0", sp.OK, sp.SLOT_OK)])
    enc.temperatures = [sp.Sensor(t.label, t.value, t.crit, t.warn) for t in temps]
    enc.fans = [sp.Sensor(f.label, f.value) for f in fans]
    h = write_hex(tmp_path / "p.hex", all_pages(enc))
    r = sg_ses(f"--inhex={h}", "--status", "--join", "--warn")
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    assert "Temperature=45 C" in r.stdout and "Actual speed=1200 rpm" in r.stdout, r.stdout
    assert "Not available" in r.stdout  # the power supply: no sensor for it
