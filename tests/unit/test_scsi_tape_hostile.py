"""Hostile CDBs and data against a tape library (changer + two drives, one loaded): every answer is
GOOD or CHECK CONDITION with valid sense, never an exception, HARDWARE ERROR or unbounded work."""

from __future__ import annotations

import atexit
import shutil
import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st
from tape_helpers import Harness

from cistern.scsi import Status
from cistern.scsi.changer import CHANGER_COMMANDS, SLOT_BASE, ChangerUnit
from cistern.scsi.ssc import TAPE_COMMANDS
from cistern.scsi.tape import TapeUnit
from cistern.storage.tape import Library, default_barcodes, ensure_cartridges

OPCODES = sorted({s.opcode for s in (*TAPE_COMMANDS.specs, *CHANGER_COMMANDS.specs)})
_h: Harness | None = None


def harness() -> Harness:
    global _h
    if _h is None:
        root = tempfile.mkdtemp(prefix="cistern-tape-fuzz-")
        atexit.register(shutil.rmtree, root, True)
        ensure_cartridges(root, default_barcodes("FZ", 3), 2 << 20)
        library = Library(root, slots=3, ie=1, drives=2)
        drives = [TapeUnit(lun=1), TapeUnit(lun=2)]
        _h = Harness({0: ChangerUnit(library, drives, lun=0), 1: drives[0], 2: drives[1]})
        _h.run(drives[0].insert(library.cartridge_path("FZ0001L6")))
        library.move(("slot", 0), ("drive", 0))
    return _h


def check(cdb: bytes, lun: int, data: bytes | None) -> None:
    h = harness()
    res = h.cmd(lun, cdb, data)
    assert res.status in (Status.GOOD, Status.CHECK_CONDITION), cdb.hex()
    if res.status == Status.CHECK_CONDITION:
        s = bytes(res.sense or b"")
        assert s and s[0] & 0x7F in (0x70, 0x72)
        key = s[2] & 0x0F if s[0] & 0x7F == 0x70 else s[1] & 0x0F
        assert key != 0x4, f"internal failure for CDB {cdb.hex()} on LUN {lun}"
    if res.data_in is not None:
        assert len(res.data_in) <= 32 << 20


cdbs = st.builds(
    lambda op, rest: bytes([op]) + rest, st.sampled_from(OPCODES), st.binary(min_size=0, max_size=15)
)


@settings(max_examples=600, deadline=None)
@given(cdb=cdbs, lun=st.integers(0, 3), data=st.one_of(st.none(), st.binary(max_size=3000)))
def test_tape_library_never_raises(cdb: bytes, lun: int, data: bytes | None) -> None:
    check(cdb, lun, data)


@settings(max_examples=300, deadline=None)
@given(
    op=st.sampled_from(
        [0x08, 0x0A, 0x10, 0x11, 0x2B, 0x34, 0x91, 0x92, 0x19, 0x1B, 0xA5, 0xA6, 0xB8, 0x8C, 0x8D]
    ),
    body=st.lists(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF]), min_size=15, max_size=15),
    lun=st.integers(0, 2),
)
def test_extreme_field_values(op: int, body: list[int], lun: int) -> None:
    check(bytes([op, *body]), lun, bytes(4096))


def test_library_still_consistent_after_fuzzing() -> None:
    h = harness()
    changer = h.srv.luns[0]
    assert isinstance(changer, ChangerUnit)
    placed = [b for kind in ("slot", "ie", "drive") for b in changer.library.where[kind] if b]
    assert sorted(placed + changer.library.unplaced) == ["FZ0001L6", "FZ0002L6", "FZ0003L6"]
    for i, drive in enumerate(changer.drives):
        assert drive.barcode == changer.library.where["drive"][i]
    assert SLOT_BASE == 0x1000
