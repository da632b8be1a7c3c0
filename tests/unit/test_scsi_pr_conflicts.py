"""The reservation conflict matrix (SPC-4 5.13.1 / SBC-3 4.17) applied before every command, SPC-2
RESERVE/RELEASE (6)/(10) with their release events, their interplay with persistent reservations, and
APTPL state surviving a restart (a new LogicalUnit on the same state file)."""

from __future__ import annotations

import asyncio
import json
import struct
from pathlib import Path

import pytest

from cistern.scsi import DeviceServer, ITNexus, LogicalUnit, ScsiResult, ScsiTask, Status
from cistern.scsi.pr import PersistentReservations, PrType
from cistern.scsi.reservations import Access, classify, pr_conflicts
from cistern.storage import MemoryStore

TARGET = "iqn.2026-11.org.cistern:t1"
A = ITNexus("iqn.2026-11.org.cistern:init-a", b"\x80\x00\x00\x00\x00\x01", TARGET, 1, 1)
B = ITNexus("iqn.2026-11.org.cistern:init-b", b"\x80\x00\x00\x00\x00\x02", TARGET, 1, 1)
C = ITNexus("iqn.2026-11.org.cistern:init-c", b"\x80\x00\x00\x00\x00\x03", TARGET, 1, 1)

READ10 = struct.pack(">BBIBHB", 0x28, 0, 1, 0, 1, 0)
WRITE10 = struct.pack(">BBIBHB", 0x2A, 0, 1, 0, 1, 0)
TUR = bytes(6)
INQUIRY = bytes((0x12, 0, 0, 0, 96, 0))
MODE_SENSE6 = bytes((0x1A, 0, 0x3F, 0, 255, 0))
SYNC_CACHE10 = bytes((0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0))
READ_CAPACITY10 = bytes((0x25,)) + bytes(9)
RESERVE6, RELEASE6 = bytes((0x16, 0, 0, 0, 0, 0)), bytes((0x17, 0, 0, 0, 0, 0))
RESERVE10, RELEASE10 = bytes((0x56,)) + bytes(9), bytes((0x57,)) + bytes(9)
READ_KEYS = struct.pack(">BB5xHx", 0x5E, 0, 1024)


def make_server(state: Path | None = None) -> DeviceServer:
    lu = LogicalUnit(MemoryStore(1 << 20), lun=0, pr_state_path=str(state) if state else None)
    return DeviceServer({0: lu}, target_name=TARGET)


def run(srv: DeviceServer, cdb: bytes, nexus: ITNexus = A, data: bytes | None = None) -> ScsiResult:
    task = ScsiTask(nexus=nexus, lun=0, cdb=cdb, data_out=data, expected_length=len(data or b""))
    return asyncio.run(srv.execute(task))


def prout(
    srv: DeviceServer, sa: int, key: int, sark: int, nexus: ITNexus = A, type_: int = 0, flags: int = 0
):
    params = struct.pack(">QQ4xB3x", key, sark, flags)
    return run(srv, struct.pack(">BBB2xIx", 0x5F, sa, type_, 24), nexus, params)


def status(srv: DeviceServer, cdb: bytes, nexus: ITNexus, data: bytes | None = None) -> Status:
    return run(srv, cdb, nexus, data).status


G, X = Status.GOOD, Status.RESERVATION_CONFLICT

# (type, registered non-holder read, write, unregistered read, write) -- libiscsi ProutReserve.Access*
ACCESS = [
    (PrType.WRITE_EXCLUSIVE, G, X, G, X),
    (PrType.EXCLUSIVE_ACCESS, X, X, X, X),
    (PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY, G, G, G, X),
    (PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY, G, G, X, X),
    (PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS, G, G, G, X),
    (PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS, G, G, X, X),
]


@pytest.mark.parametrize(("type_", "reg_r", "reg_w", "unreg_r", "unreg_w"), ACCESS)
def test_access_matrix(type_: PrType, reg_r: Status, reg_w: Status, unreg_r: Status, unreg_w: Status) -> None:
    srv = make_server()
    assert prout(srv, 6, 0, 0xAA).good and prout(srv, 6, 0, 0xBB, B).good
    assert prout(srv, 1, 0xAA, 0, A, int(type_)).good
    block = bytes(512)
    assert status(srv, READ10, A) == G and status(srv, WRITE10, A, block) == G  # the holder
    assert status(srv, READ10, B) == reg_r and status(srv, WRITE10, B, block) == reg_w
    assert status(srv, READ10, C) == unreg_r and status(srv, WRITE10, C, block) == unreg_w
    # always allowed, for everyone
    for cdb in (TUR, INQUIRY, READ_CAPACITY10, READ_KEYS):
        assert status(srv, cdb, C) == G, cdb.hex()
    # reads of LU state follow reads; SYNCHRONIZE CACHE follows writes
    assert status(srv, MODE_SENSE6, C) == unreg_r
    assert status(srv, SYNC_CACHE10, C) == unreg_w


def test_classify() -> None:
    assert classify(READ10) is Access.READ
    assert classify(WRITE10) is Access.WRITE
    assert classify(INQUIRY) is Access.ALLOWED
    assert classify(bytes((0x9E, 0x10)) + bytes(14)) is Access.ALLOWED  # READ CAPACITY(16)
    assert classify(bytes((0x9E, 0x12)) + bytes(14)) is Access.READ  # GET LBA STATUS
    assert classify(bytes((0xA3, 0x0C)) + bytes(10)) is Access.READ  # REPORT SUPPORTED OPCODES
    assert classify(bytes((0x1B, 0, 0, 0, 0x01, 0))) is Access.ALLOWED  # START
    assert classify(bytes((0x1B, 0, 0, 0, 0x00, 0))) is Access.WRITE  # STOP
    assert classify(bytes((0x1B, 0, 0, 0, 0x02, 0))) is Access.WRITE  # eject
    assert classify(bytes((0x1E, 0, 0, 0, 0x01, 0))) is Access.WRITE  # PREVENT
    assert classify(bytes((0x1E, 0, 0, 0, 0x00, 0))) is Access.ALLOWED
    assert classify(bytes((0x48,)) + bytes(9)) is Access.WRITE  # SANITIZE, and anything unknown
    assert classify(bytes((0x89,)) + bytes(15)) is Access.WRITE  # COMPARE AND WRITE


def test_pr_conflicts_without_reservation() -> None:
    pr = PersistentReservations()
    assert not pr_conflicts(pr, A, Access.WRITE)


# ---------------------------------------------------------------------------------------- SPC-2


@pytest.mark.parametrize(("reserve", "release"), [(RESERVE6, RELEASE6), (RESERVE10, RELEASE10)])
def test_spc2_reserve_release(reserve: bytes, release: bytes) -> None:
    srv = make_server()
    assert status(srv, reserve, A) == G
    assert status(srv, reserve, A) == G  # again by the holder
    assert status(srv, reserve, B) == X
    assert status(srv, release, B) == G  # a non-holder's RELEASE is a no-op
    assert status(srv, MODE_SENSE6, A) == G
    assert status(srv, MODE_SENSE6, B) == X
    assert status(srv, TUR, B) == X
    assert status(srv, READ10, B) == X
    assert status(srv, INQUIRY, B) == G
    assert status(srv, READ_KEYS, A) == X  # PR IN/OUT conflict for everyone under an SPC-2 reservation
    assert status(srv, release, A) == G
    assert status(srv, reserve, B) == G
    assert status(srv, WRITE10, B, bytes(512)) == G
    assert status(srv, WRITE10, A, bytes(512)) == X


def test_spc2_reserve6_rejects_obsolete_bits() -> None:
    res = run(make_server(), bytes((0x16, 0x01, 0, 0, 0, 0)))
    assert res.status == Status.CHECK_CONDITION


@pytest.mark.parametrize("event", ["nexus_lost", "LUN_RESET", "TARGET_WARM_RESET", "TARGET_COLD_RESET"])
def test_spc2_released_by(event: str) -> None:
    srv = make_server()
    for n in (A, B):
        srv.nexus_added(n)
        srv.luns[0].ua.clear()
    assert status(srv, RESERVE6, A) == G
    assert status(srv, RESERVE6, B) == X
    if event == "nexus_lost":
        srv.nexus_lost(A)
    else:
        srv.task_management(event, A, 0)
    srv.luns[0].ua.clear()
    assert status(srv, RESERVE6, B) == G


def test_pr_registrations_survive_nexus_loss_and_reset() -> None:
    srv = make_server()
    srv.nexus_added(A)
    srv.luns[0].ua.clear()
    assert prout(srv, 6, 0, 0xAA).good
    assert prout(srv, 1, 0xAA, 0, A, 3).good
    srv.nexus_lost(A)
    srv.task_management("LUN_RESET", B, 0)
    srv.luns[0].ua.clear()
    assert status(srv, READ10, B) == X
    assert status(srv, READ10, A) == G


def test_crh_reserve_release_with_persistent_reservations() -> None:
    srv = make_server()
    assert prout(srv, 6, 0, 0xAA).good
    assert status(srv, RESERVE6, C) == X  # registrations exist, C is not registered
    assert status(srv, RESERVE6, A) == X  # registered, but no reservation held
    assert prout(srv, 1, 0xAA, 0, A, int(PrType.WRITE_EXCLUSIVE)).good
    assert status(srv, RESERVE6, A) == G  # the holder: GOOD, nothing changes
    assert status(srv, RELEASE6, A) == G
    assert srv.luns[0].reservations.spc2_holder is None
    assert srv.luns[0].reservations.pr.reservation is not None
    assert prout(srv, 6, 0, 0xBB, B).good
    assert status(srv, RESERVE6, B) == X  # registered non-holder under Write Exclusive
    assert prout(srv, 4, 0xAA, 0xAA, A, int(PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY)).good
    assert status(srv, RESERVE6, B) == G  # registered under a registrants-only reservation


# ---------------------------------------------------------------------------------------- APTPL


def test_aptpl_state_survives_restart(tmp_path: Path) -> None:
    path = tmp_path / "disk.img.pr.json"
    srv = make_server(path)
    assert prout(srv, 0, 0, 0xAA, A, flags=0x01).good  # REGISTER, APTPL=1
    assert prout(srv, 0, 0, 0xBB, B).good  # APTPL=0 on this one: the last one wins ...
    assert not path.exists()
    assert prout(srv, 0, 0xBB, 0xBC, B, flags=0x01).good  # ... and back on
    assert prout(srv, 1, 0xAA, 0, A, int(PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY)).good
    state = json.loads(path.read_text())
    assert state["aptpl"] is True and len(state["registrations"]) == 2
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file was renamed away

    again = make_server(path)  # a target restart: a new LU on the same state file
    pr = again.luns[0].reservations.pr
    assert [r.key for r in pr.registrations] == [0xAA, 0xBC]
    assert pr.reservation is not None and pr.reservation.type == PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY
    assert pr.is_holder(A) and not pr.is_holder(B) and pr.generation == 3
    assert status(again, READ10, C) == X and status(again, READ10, B) == G

    assert prout(again, 0, 0xAA, 0xAA, A).good  # APTPL=0: the state file goes away
    assert not path.exists()
    assert make_server(path).luns[0].reservations.pr.registrations == []


def test_aptpl_zero_state_is_lost(tmp_path: Path) -> None:
    path = tmp_path / "disk.img.pr.json"
    srv = make_server(path)
    assert prout(srv, 0, 0, 0xAA).good
    assert prout(srv, 1, 0xAA, 0, A, 1).good
    assert make_server(path).luns[0].reservations.pr.registrations == []


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"[]",
        b'{"version": 1}',
        b'{"version": 1, "generation": -1, "aptpl": true, "registrations": [], "reservation": null}',
    ],
)
def test_corrupt_state_file_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.pr.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="persistent reservation state"):
        make_server(path)
