"""The SES LU through the device server: INQUIRY type 0x0D, RECEIVE DIAGNOSTIC RESULTS pages that follow
the array, SEND DIAGNOSTIC control (ident/fault request), and hostile CDBs/parameter lists answered with
the right sense (never an exception)."""

from __future__ import annotations

import asyncio
import struct

import pytest

from cistern.scsi import DeviceServer, ITNexus, ScsiResult, ScsiTask, Status
from cistern.scsi import ses_pages as sp
from cistern.scsi.ses import EnclosureUnit
from cistern.storage.memory import MemoryStore
from cistern.storage.raid import RaidStore
from cistern.storage.raid.superblock import DATA_OFFSET

TARGET = "iqn.2026-11.org.cistern:ses"
A = ITNexus("iqn.2026-11.org.cistern:init-a", b"\x80\x00\x00\x00\x00\x01", TARGET, tpgt=1, relative_port=1)


@pytest.fixture()
def env():  # type: ignore[no-untyped-def]
    loop = asyncio.new_event_loop()
    members = [(f"m{i}", MemoryStore(DATA_OFFSET + (1 << 20))) for i in range(4)]
    arr = loop.run_until_complete(RaidStore.assemble(members, [("s0", MemoryStore(DATA_OFFSET + (1 << 20)))],
                                                     level=5, chunk=65536, assume_clean=True))
    arr.auto_rebuild = False
    ses = EnclosureUnit([("lun0", arr)], lun=1, sensors=lambda: ([], []))
    srv = DeviceServer({1: ses}, target_name=TARGET)
    yield loop, srv, arr, ses
    loop.run_until_complete(arr.close())
    loop.close()


def run(env, cdb: bytes, data: bytes | None = None) -> ScsiResult:  # type: ignore[no-untyped-def]
    loop, srv, _, _ = env
    task = ScsiTask(nexus=A, lun=1, cdb=cdb.ljust(16, b"\0"), data_out=data, expected_length=len(data) if data else 0)
    return loop.run_until_complete(srv.execute(task))


def sense(res: ScsiResult) -> tuple[int, int, int]:
    s = res.sense
    assert s is not None
    return s[2] & 0x0F, s[12], s[13]


def rdr(code: int, alloc: int = 4096, pcv: int = 1) -> bytes:
    return struct.pack(">BBBHB", 0x1C, pcv, code, alloc, 0)


def page(env, code: int) -> bytes:  # type: ignore[no-untyped-def]
    res = run(env, rdr(code))
    assert res.status == Status.GOOD, res.sense
    return bytes(res.data_in or b"")


def test_inquiry_and_pages_follow_the_array(env) -> None:  # type: ignore[no-untyped-def]
    run(env, bytes(6))  # power-on unit attention
    inq = run(env, struct.pack(">BBBHB", 0x12, 0, 0, 96, 0))
    assert bytes(inq.data_in or b"")[0] == 0x0D
    assert page(env, 0x00)[4:] == bytes(sp.SUPPORTED_PAGES)
    st = page(env, 0x02)
    assert st[1] == 0x08  # INFO (a hot spare), nothing critical
    slot1 = st[8 + 4 * 2:8 + 4 * 3]
    assert slot1[1] & sp.SLOT_OK and slot1[0] == sp.OK
    gen = struct.unpack_from(">I", st, 4)[0]
    loop, _, arr, _ = env
    arr._mark_failed(arr.slots[1], "test")
    st = page(env, 0x02)
    assert st[1] & 0x02  # CRIT
    assert st[8 + 4 * 2 + 3] & 0x40  # m1: FAULT SENSED
    assert st[8 + 4 * 1 + 1] & sp.SLOT_INCRIT  # m0: in critical array
    assert struct.unpack_from(">I", st, 4)[0] == gen  # same devices: no configuration change
    loop.run_until_complete(arr.recover(1))
    st = page(env, 0x02)
    assert struct.unpack_from(">I", st, 4)[0] == gen + 1  # the spare took m1's place


def _control(env, select_slot: int, ident: bool, fault: bool, gen: int | None = None) -> bytes:  # type: ignore[no-untyped-def]
    st = bytearray(page(env, 0x02))
    ctrl = bytearray(st)
    ctrl[1] = 0
    if gen is not None:
        struct.pack_into(">I", ctrl, 4, gen)
    for i in range(8, len(ctrl), 4):
        ctrl[i:i + 4] = bytes(4)
    pos = 8 + 4 * (select_slot + 1)
    ctrl[pos:pos + 4] = bytes([0x80, 0, 0x02 if ident else 0, 0x20 if fault else 0])
    return bytes(ctrl)


def test_send_diagnostic_ident_and_fault(env) -> None:  # type: ignore[no-untyped-def]
    run(env, bytes(6))
    ctrl = _control(env, 2, True, True)
    res = run(env, struct.pack(">BBBHB", 0x1D, 0x10, 0, len(ctrl), 0), ctrl)
    assert res.status == Status.GOOD
    st = page(env, 0x02)
    el = st[8 + 4 * 3:8 + 4 * 4]
    assert el[2] & 0x02 and el[3] & 0x20  # IDENT, FAULT REQUESTED
    assert not st[8 + 4 * 2 + 2] & 0x02  # only the selected slot


@pytest.mark.parametrize(
    ("cdb", "data", "expect"),
    [
        (rdr(0x03), None, (5, 0x24, 0)),  # unsupported page
        (struct.pack(">BBBHB", 0x1C, 0x02, 0, 64, 0), None, (5, 0x24, 0)),  # reserved bit
        (struct.pack(">BBBHB", 0x1D, 0x00, 0, 8, 0), bytes(8), (5, 0x24, 0)),  # PF=0 with a page
        (struct.pack(">BBBHB", 0x1D, 0x10, 0, 8, 0), bytes([2, 0, 0, 4, 0, 0, 0, 0]), (5, 0x26, 0)),  # too short
        (struct.pack(">BBBHB", 0x1D, 0x10, 0, 8, 0), bytes([5, 0, 0, 4, 0, 0, 0, 0]), (5, 0x26, 0)),  # page 5
        (struct.pack(">BBBHB", 0x1D, 0x10, 0, 64, 0), bytes(10), (5, 0x1A, 0)),  # list shorter than said
        (struct.pack(">BBBHB", 0x1D, 0x02, 0, 0, 0), None, (5, 0x24, 0)),  # DEVOFFL reserved here
        (struct.pack(">BBBHB", 0x1D, 0x24, 0, 0, 0), None, (5, 0x24, 0)),  # self-test code with SELFTEST
    ],
)
def test_hostile_diagnostics(env, cdb: bytes, data: bytes | None, expect: tuple[int, int, int]) -> None:  # type: ignore[no-untyped-def]
    run(env, bytes(6))
    res = run(env, cdb, data)
    assert res.status == Status.CHECK_CONDITION and sense(res) == expect


def test_generation_mismatch_refused_and_selftest_passes(env) -> None:  # type: ignore[no-untyped-def]
    run(env, bytes(6))
    ctrl = _control(env, 0, True, False, gen=99)
    res = run(env, struct.pack(">BBBHB", 0x1D, 0x10, 0, len(ctrl), 0), ctrl)
    assert res.status == Status.CHECK_CONDITION and sense(res) == (5, 0x26, 0)
    assert run(env, struct.pack(">BBBHB", 0x1D, 0x04, 0, 0, 0)).status == Status.GOOD
    assert run(env, rdr(0x02, alloc=3)).data_in == page(env, 0x02)[:3]
    assert bytes(run(env, rdr(0x02, pcv=0)).data_in or b"")[0] == 0x00
