"""The changer against an independent encoder/decoder: pyscsi's SMC CDB builders drive it, and pyscsi's
READ ELEMENT STATUS parser decodes what it answers (pyscsi is in the [test] extra)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pyscsi.pyscsi.scsi_cdb_exchangemedium import ExchangeMedium
from pyscsi.pyscsi.scsi_cdb_initelementstatus import InitializeElementStatus
from pyscsi.pyscsi.scsi_cdb_initelementstatuswithrange import InitializeElementStatusWithRange
from pyscsi.pyscsi.scsi_cdb_movemedium import MoveMedium
from pyscsi.pyscsi.scsi_cdb_positiontoelement import PositionToElement
from pyscsi.pyscsi.scsi_cdb_preventallow_mediumremoval import PreventAllowMediumRemoval
from pyscsi.pyscsi.scsi_cdb_readelementstatus import ReadElementStatus
from pyscsi.pyscsi.scsi_enum_command import smc
from tape_helpers import Harness

from cistern.scsi.changer import DRIVE_BASE, IE_BASE, SLOT_BASE, ChangerUnit
from cistern.scsi.tape import TapeUnit
from cistern.storage.tape import Library, default_barcodes, ensure_cartridges


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    ensure_cartridges(str(tmp_path), default_barcodes("PY", 3), 2 << 20)
    library = Library(str(tmp_path), slots=4, ie=1, drives=1)
    drive = TapeUnit(lun=1)
    harness = Harness({0: ChangerUnit(library, [drive], lun=0), 1: drive})
    harness.clear_ua(0)
    yield harness
    harness.close()


def status(h: Harness) -> dict[int, dict[str, object]]:
    cdb = ReadElementStatus(smc.READ_ELEMENT_STATUS, 0, 0xFFFF, voltag=1, curdata=1, alloclen=4096).cdb
    decoded = ReadElementStatus.unmarshall_datain(h.ok(0, bytes(cdb)))
    out: dict[int, dict[str, object]] = {}
    for page in decoded["element_status_pages"]:
        for d in page["element_descriptors"]:
            d["type"] = page["element_type"]
            out[d["element_address"]] = d
    assert decoded["num_elements"] == len(out) == 1 + 4 + 1 + 1
    return out


def tag(d: dict[str, object]) -> bytes:
    return bytes(d.get("primary_volume_tag", b""))[:32].rstrip(b" \0")  # type: ignore[call-overload]


def test_pyscsi_cdbs_and_decoder_agree(h: Harness) -> None:
    st = status(h)
    assert [tag(st[SLOT_BASE + i]) for i in range(4)] == [b"PY0001L6", b"PY0002L6", b"PY0003L6", b""]
    assert st[SLOT_BASE]["full"] == 1 and st[SLOT_BASE + 3]["full"] == 0 and st[SLOT_BASE]["access"] == 1
    assert st[IE_BASE]["impexp"] == 1 and st[IE_BASE]["inenab"] == 1
    h.ok(0, bytes(InitializeElementStatus(smc.INITIALIZE_ELEMENT_STATUS).cdb))
    h.ok(
        0,
        bytes(
            InitializeElementStatusWithRange(
                smc.INITIALIZE_ELEMENT_STATUS_WITH_RANGE, SLOT_BASE, 4, rng=1
            ).cdb
        ),
    )
    h.ok(0, bytes(MoveMedium(smc.MOVE_MEDIUM, 0, SLOT_BASE + 1, DRIVE_BASE).cdb))
    st = status(h)
    assert tag(st[DRIVE_BASE]) == b"PY0002L6" and st[DRIVE_BASE]["full"] == 1
    assert st[DRIVE_BASE]["svalid"] == 1 and st[DRIVE_BASE]["source_storage_element_address"] == SLOT_BASE + 1
    h.ok(0, bytes(ExchangeMedium(smc.EXCHANGE_MEDIUM, 0, SLOT_BASE, DRIVE_BASE, SLOT_BASE + 3).cdb))
    st = status(h)
    assert tag(st[DRIVE_BASE]) == b"PY0001L6" and tag(st[SLOT_BASE + 3]) == b"PY0002L6"
    h.ok(0, bytes(PositionToElement(smc.POSITION_TO_ELEMENT, 0, IE_BASE).cdb))
    h.ok(0, bytes(PreventAllowMediumRemoval(smc.PREVENT_ALLOW_MEDIUM_REMOVAL, prevent=1).cdb))
    assert status(h)[IE_BASE]["inenab"] == 0
    h.ok(0, bytes(PreventAllowMediumRemoval(smc.PREVENT_ALLOW_MEDIUM_REMOVAL, prevent=0).cdb))
    s, _ = h.check(0, bytes(MoveMedium(smc.MOVE_MEDIUM, 0, SLOT_BASE + 1, DRIVE_BASE).cdb))
    assert (s.key, s.asc, s.ascq) == (5, 0x3B, 0x0E)  # slot 2 is empty now
