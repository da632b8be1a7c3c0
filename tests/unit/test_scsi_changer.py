"""The SMC medium changer (scsi/changer.py): element status, moves into and out of the tape drives,
illegal moves, mode pages, persistence of the library state."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from tape_helpers import REWIND, TUR, B, Harness, read6, wfm, write6

from cistern.scsi.changer import DRIVE_BASE, IE_BASE, SLOT_BASE, ChangerUnit
from cistern.scsi.tape import TapeUnit
from cistern.storage.tape import Library, default_barcodes, ensure_cartridges

ILLEGAL, NOT_READY, UA = 5, 2, 6


def build(lib: Path, slots: int = 4, ie: int = 1, cartridges: int = 3) -> Harness:
    ensure_cartridges(str(lib), default_barcodes("CIS", cartridges), 4 << 20)
    library = Library(str(lib), slots=slots, ie=ie, drives=2)
    drives = [TapeUnit(lun=1, serial="drive-1"), TapeUnit(lun=2, serial="drive-2")]
    changer = ChangerUnit(library, drives, lun=0, serial="changer-0")
    h = Harness({0: changer, 1: drives[0], 2: drives[1]})
    for lun in (0, 1, 2):
        h.clear_ua(lun)
    return h


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = build(tmp_path / "lib")
    yield harness
    harness.close()


def changer(h: Harness) -> ChangerUnit:
    lu = h.srv.luns[0]
    assert isinstance(lu, ChangerUnit)
    return lu


def move(src: int, dst: int) -> bytes:
    return bytes((0xA5, 0, 0, 0)) + struct.pack(">HH", src, dst) + bytes(4)


def res(
    etype: int = 0, start: int = 0, count: int = 0xFFFF, voltag: bool = True, dvcid: bool = False
) -> bytes:
    return (
        bytes((0xB8, (0x10 if voltag else 0) | etype))
        + struct.pack(">HH", start, count)
        + bytes((0x01 if dvcid else 0,))
        + (0xFFFF).to_bytes(3, "big")
        + bytes(2)
    )


def parse_status(data: bytes) -> dict[int, tuple[int, int, bytes, bytes]]:
    """address -> (element type, flags byte, volume tag, descriptor)"""
    out = {}
    first, count = struct.unpack_from(">HH", data)
    total = int.from_bytes(data[5:8], "big")
    pos = 8
    while pos < 8 + total:
        etype, tags, dlen = struct.unpack_from(">BBH", data, pos)
        nbytes = int.from_bytes(data[pos + 5 : pos + 8], "big")
        body = data[pos + 8 : pos + 8 + nbytes]
        for off in range(0, nbytes, dlen):
            d = body[off : off + dlen]
            addr = struct.unpack_from(">H", d)[0]
            tag = d[12:44].rstrip(b" \0") if tags & 0x80 else b""
            out[addr] = (etype, d[2], tag, d)
        pos += 8 + nbytes
    assert len(out) == count and (not out or min(out) == first)
    return out


def test_inquiry_and_mode_pages(h: Harness) -> None:
    inq = h.ok(0, [0x12, 0, 0, 0, 96, 0])
    assert inq[0] == 0x08 and struct.unpack_from(">H", inq, 64)[0] == 0x0480  # SMC-3
    page = h.ok(0, [0x1A, 0x08, 0x1D, 0, 255, 0])
    assert page[4:6] == bytes((0x1D, 18))
    assert struct.unpack_from(">8H", page, 6) == (0, 1, SLOT_BASE, 4, IE_BASE, 1, DRIVE_BASE, 2)
    assert h.ok(0, [0x1A, 0x08, 0x1E, 0, 255, 0])[4:] == bytes((0x1E, 2, 0, 0))
    caps = h.ok(0, [0x1A, 0x08, 0x1F, 0, 255, 0])
    assert caps[4:6] == bytes((0x1F, 18)) and caps[6] == 0x0E
    # Linux ch puts the LUN in bits 7..5 of byte 1; accepted on the changer
    assert h.ok(0, [0x1A, 0x08 | 0x20, 0x1D, 0, 255, 0]) == page
    h.ok(0, TUR)
    h.ok(0, [0x07, 0, 0, 0, 0, 0])  # INITIALIZE ELEMENT STATUS


def test_read_element_status_barcodes(h: Harness) -> None:
    st = parse_status(h.ok(0, res()))
    assert st[0][0] == 1 and st[0][1] == 0  # transport, empty
    slots = {a: st[a] for a in range(SLOT_BASE, SLOT_BASE + 4)}
    assert [v[2] for v in slots.values()] == [b"CIS001L6", b"CIS002L6", b"CIS003L6", b""]
    assert [v[1] & 0x01 for v in slots.values()] == [1, 1, 1, 0]
    assert st[IE_BASE][0] == 3 and st[IE_BASE][1] & 0x02  # IMPEXP
    assert st[DRIVE_BASE][0] == 4 and st[DRIVE_BASE][3][6] == 0x10 | 1  # LU VALID, LUN 1
    only_drives = parse_status(h.ok(0, res(etype=4)))
    assert sorted(only_drives) == [DRIVE_BASE, DRIVE_BASE + 1]
    two = parse_status(h.ok(0, res(etype=2, start=SLOT_BASE + 1, count=2)))
    assert sorted(two) == [SLOT_BASE + 1, SLOT_BASE + 2]
    no_tags = h.ok(0, res(etype=2, voltag=False))
    assert no_tags[9] == 0 and struct.unpack_from(">H", no_tags, 10)[0] == 12  # descriptor length 12
    with_id = parse_status(h.ok(0, res(etype=4, dvcid=True)))
    d = with_id[DRIVE_BASE][3]
    assert d[48:52] == bytes((0x02, 0x01, 0, 7)) and d[52:59] == b"drive-1"
    short = h.ok(0, res()[:7] + (16).to_bytes(3, "big") + bytes(2))
    assert len(short) == 16  # allocation length honoured


def test_move_into_drive_loads_and_back_unloads(h: Harness) -> None:
    h.ok(0, move(SLOT_BASE + 1, DRIVE_BASE))
    assert h.check(1, TUR)[0].asc == 0x28  # NOT READY TO READY CHANGE on the drive
    h.ok(1, TUR)
    h.ok(1, write6(100), b"x" * 100)
    h.ok(1, wfm(1))
    st = parse_status(h.ok(0, res()))
    assert st[DRIVE_BASE][2] == b"CIS002L6" and st[DRIVE_BASE][1] & 0x01
    assert st[DRIVE_BASE][3][9] & 0x80 and struct.unpack_from(">H", st[DRIVE_BASE][3], 10)[0] == SLOT_BASE + 1
    assert st[SLOT_BASE + 1][1] & 0x01 == 0
    h.ok(0, move(DRIVE_BASE, SLOT_BASE + 3))  # out of the drive (not prevented): ejected
    s, _ = h.check(1, TUR)
    assert (s.key, s.asc) == (NOT_READY, 0x3A)
    h.ok(0, move(SLOT_BASE + 3, DRIVE_BASE + 1))
    h.clear_ua(2)
    h.ok(2, REWIND)
    assert h.ok(2, read6(100)) == b"x" * 100  # the cartridge's data travelled with it
    state = json.loads((Path(changer(h).library.path) / "library.json").read_text())
    assert state["drive"] == [None, "CIS002L6"] and state["slot"][3] is None


def test_illegal_moves(h: Harness) -> None:
    def sense(cdb: bytes) -> tuple[int, int, int]:
        s, _ = h.check(0, cdb)
        return (s.key, s.asc, s.ascq)

    assert sense(move(SLOT_BASE + 3, DRIVE_BASE)) == (ILLEGAL, 0x3B, 0x0E)  # source empty
    assert sense(move(SLOT_BASE, SLOT_BASE + 1)) == (ILLEGAL, 0x3B, 0x0D)  # destination full
    assert sense(move(0x7777, DRIVE_BASE)) == (ILLEGAL, 0x21, 0x01)  # no such element
    assert sense(move(SLOT_BASE, 0x0000)) == (ILLEGAL, 0x21, 0x01)  # into the transport
    assert sense(bytes((0xA5, 0, 0x12, 0x34)) + struct.pack(">HH", SLOT_BASE, DRIVE_BASE) + bytes(4)) == (
        ILLEGAL, 0x21, 0x01,
    )  # fmt: skip
    h.ok(0, move(SLOT_BASE, DRIVE_BASE))
    h.clear_ua(1)
    h.ok(1, [0x1E, 0, 0, 0, 1, 0])  # the drive's host prevents removal
    assert sense(move(DRIVE_BASE, SLOT_BASE)) == (ILLEGAL, 0x53, 0x02)
    h.ok(1, [0x1E, 0, 0, 0, 0, 0])
    h.ok(1, [0x1B, 0, 0, 0, 0, 0])  # unload on the drive
    h.ok(0, move(DRIVE_BASE, SLOT_BASE))
    s, _ = h.check(
        0, bytes((0xA5, 0, 0, 0)) + struct.pack(">HH", SLOT_BASE, DRIVE_BASE) + bytes((0, 0, 1, 0))
    )
    assert (s.key, s.asc) == (ILLEGAL, 0x24)  # INVERT is not supported


def test_exchange_and_position(h: Harness) -> None:
    h.ok(0, move(SLOT_BASE, DRIVE_BASE))
    # drive cartridge -> empty slot 3, slot 1's cartridge -> the drive... expressed as EXCHANGE:
    # source slot 1 -> first destination drive 0, whose cartridge -> second destination slot 3
    h.ok(0, bytes((0xA6, 0, 0, 0)) + struct.pack(">HHH", SLOT_BASE + 1, DRIVE_BASE, SLOT_BASE + 3) + bytes(2))
    lib = changer(h).library
    assert (
        lib.where["drive"][0] == "CIS002L6"
        and lib.where["slot"][3] == "CIS001L6"
        and lib.where["slot"][1] is None
    )
    assert changer(h).drives[0].barcode == "CIS002L6"
    s, _ = h.check(
        0, bytes((0xA6, 0, 0, 0)) + struct.pack(">HHH", SLOT_BASE + 1, DRIVE_BASE, SLOT_BASE) + bytes(2)
    )
    assert (s.asc, s.ascq) == (0x3B, 0x0E)
    s, _ = h.check(
        0, bytes((0xA6, 0, 0, 0)) + struct.pack(">HHH", SLOT_BASE, SLOT_BASE, SLOT_BASE + 1) + bytes(2)
    )
    assert (s.key, s.asc) == (ILLEGAL, 0x24)  # source and first destination the same element
    lib_state = {k: list(v) for k, v in lib.where.items()}
    h.ok(0, bytes((0xA6, 0, 0, 0)) + struct.pack(">HHH", SLOT_BASE + 3, DRIVE_BASE, SLOT_BASE + 3) + bytes(2))
    assert (
        lib.where["slot"][3] == lib_state["drive"][0] and lib.where["drive"][0] == lib_state["slot"][3]
    )  # swap
    h.ok(0, bytes((0x2B, 0, 0, 0)) + struct.pack(">H", SLOT_BASE) + bytes(4))  # POSITION TO ELEMENT
    s, _ = h.check(0, bytes((0x2B, 0, 0, 0)) + struct.pack(">H", 0x5555) + bytes(4))
    assert (s.asc, s.ascq) == (0x21, 0x01)
    h.ok(0, bytes((0x37, 0x01)) + struct.pack(">H", SLOT_BASE) + bytes(2) + struct.pack(">H", 2) + bytes(2))
    s, _ = h.check(
        0, bytes((0x37, 0x01)) + struct.pack(">H", 0x4444) + bytes(2) + struct.pack(">H", 2) + bytes(2)
    )
    assert (s.asc, s.ascq) == (0x21, 0x01)


def test_prevent_allow_locks_the_mailslot(h: Harness) -> None:
    h.ok(0, [0x1E, 0, 0, 0, 1, 0])
    st = parse_status(h.ok(0, res(etype=3)))
    assert st[IE_BASE][1] & 0x30 == 0  # INENAB/EXENAB cleared while prevented
    h.ok(0, [0x1E, 0, 0, 0, 0, 0])
    assert parse_status(h.ok(0, res(etype=3)))[IE_BASE][1] & 0x30 == 0x30


def test_library_state_survives_restart(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    h = build(lib)
    h.ok(0, move(SLOT_BASE + 2, DRIVE_BASE + 1))
    h.ok(0, move(SLOT_BASE, IE_BASE))
    h.close()
    library = Library(str(lib), slots=4, ie=1, drives=2)
    assert library.where == {
        "slot": [None, "CIS002L6", None, None],
        "ie": ["CIS001L6"],
        "drive": [None, "CIS003L6"],
    }
    assert library.origin == {"CIS003L6": 2}


def test_hostile_changer_cdbs_answer_with_sense(h: Harness) -> None:
    for cdb in (
        bytes((0xB8, 0x1F)) + bytes(10),  # element type 15
        bytes((0xA5,)),  # truncated
        bytes((0xA6, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0)),
        bytes((0x08, 0, 0, 0, 1, 0)),  # READ(6) is a tape command
    ):
        res_ = h.cmd(0, cdb)
        assert res_.status == 2 and res_.sense is not None and res_.sense[2] & 0x0F == ILLEGAL
    other = h.cmd(0, TUR, nexus=B)  # a second nexus gets its own unit attention first
    assert other.status in (0, 2)
