"""Thin provisioning and read-only LUs in the device server: GET LBA STATUS reporting the store's real
mapped/deallocated extents (RAM page map, file holes), UNMAP parameter-list validation, the VPD 0xB0/0xB2
and READ CAPACITY(16) provisioning fields, the soft-threshold unit attention, and DATA PROTECT for every
medium-changing command on a write-protected LU."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

import pytest

from cistern.scsi import DeviceServer, ITNexus, LogicalUnit, ScsiResult, ScsiTask, Status
from cistern.scsi.commands import COMMANDS
from cistern.scsi.lu import MAX_UNMAP_BLOCKS, MAX_UNMAP_DESCRIPTORS
from cistern.storage import BackingStore, FileStore, MemoryStore

TARGET = "iqn.2026-11.org.cistern:thin"
A = ITNexus("iqn.2026-11.org.cistern:init-a", b"\x80\x00\x00\x00\x00\x01", TARGET)
B = ITNexus("iqn.2026-11.org.cistern:init-b", b"\x80\x00\x00\x00\x00\x02", TARGET)
BS = 512
NB = 2048  # 1 MiB
PER_PAGE = 4096 // BS

LBA_OOB = (0x5, 0x21, 0x00)
INVALID_CDB = (0x5, 0x24, 0x00)
INVALID_PARAM = (0x5, 0x26, 0x00)
PARAM_LIST_LENGTH = (0x5, 0x1A, 0x00)
WRITE_PROTECTED = (0x7, 0x27, 0x00)
SOFT_THRESHOLD = (0x6, 0x38, 0x07)
MAPPED, DEALLOCATED = 0, 1


def server(store: BackingStore | None = None, **kw: object) -> DeviceServer:
    lu = LogicalUnit(store or MemoryStore(NB * BS), lun=0, **kw)  # type: ignore[arg-type]
    return DeviceServer({0: lu}, target_name=TARGET)


def run(srv: DeviceServer, cdb: bytes, data: bytes | None = None, nexus: ITNexus = A) -> ScsiResult:
    task = ScsiTask(
        nexus=nexus, lun=0, cdb=cdb.ljust(16, b"\0"), data_out=data, expected_length=len(data or b"")
    )
    return asyncio.run(srv.execute(task))


def key_asc(res: ScsiResult) -> tuple[int, int, int]:
    assert res.status == Status.CHECK_CONDITION and res.sense is not None
    s = res.sense
    return (s[2] & 0xF, s[12], s[13])


def sks(res: ScsiResult) -> bytes:
    assert res.sense is not None
    return bytes(res.sense[15:18])


def w10(lba: int, n: int, fill: int = 0xA5) -> tuple[bytes, bytes]:
    return struct.pack(">BBIBHB", 0x2A, 0, lba, 0, n, 0), bytes([fill]) * (n * BS)


def r10(lba: int, n: int) -> bytes:
    return struct.pack(">BBIBHB", 0x28, 0, lba, 0, n, 0)


def unmap_cdb(param_len: int, anchor: bool = False) -> bytes:
    return struct.pack(">BBIBHB", 0x42, 0x01 if anchor else 0, 0, 0, param_len, 0)


def unmap_list(*ranges: tuple[int, int], bd_len: int | None = None) -> bytes:
    body = b"".join(struct.pack(">QI4x", lba, n) for lba, n in ranges)
    bd = len(body) if bd_len is None else bd_len
    return struct.pack(">HH4x", 6 + bd, bd) + body


def do_unmap(srv: DeviceServer, *ranges: tuple[int, int]) -> ScsiResult:
    data = unmap_list(*ranges)
    return run(srv, unmap_cdb(len(data)), data)


def lba_status(srv: DeviceServer, lba: int, alloc: int = 4096) -> list[tuple[int, int, int]]:
    res = run(srv, struct.pack(">BBQIBB", 0x9E, 0x12, lba, alloc, 0, 0))
    assert res.status == Status.GOOD, res.sense
    data = bytes(res.data_in or b"")
    (length,) = struct.unpack_from(">I", data, 0)
    assert length == len(data) - 4 and (length - 4) % 16 == 0
    return [struct.unpack_from(">QIB", data, off) for off in range(8, len(data), 16)]


def settle(srv: DeviceServer, *nexuses: ITNexus) -> None:
    """Log the nexuses in and consume their POWER ON unit attention."""
    for n in nexuses:
        srv.nexus_added(n)
        run(srv, bytes(6), nexus=n)


# -- GET LBA STATUS ------------------------------------------------------------------------------


def test_get_lba_status_reports_real_extents_on_ram_lu() -> None:
    srv = server(thin=True)
    assert lba_status(srv, 0) == [(0, NB, DEALLOCATED)]
    cdb, data = w10(16, 8)
    assert run(srv, cdb, data).status == Status.GOOD
    assert lba_status(srv, 0) == [(0, 16, DEALLOCATED), (16, 8, MAPPED), (24, NB - 24, DEALLOCATED)]
    # The first descriptor starts at the STARTING LOGICAL BLOCK ADDRESS, even inside a run.
    assert lba_status(srv, 20)[0] == (20, 4, MAPPED)
    assert lba_status(srv, 3)[0] == (3, 13, DEALLOCATED)
    # One block inside a page: zeroed, but the page (allocation unit) stays mapped.
    assert do_unmap(srv, (17, 1)).status == Status.GOOD
    assert bytes(run(srv, r10(16, 2)).data_in or b"") == b"\xa5" * BS + bytes(BS)
    assert lba_status(srv, 16)[0] == (16, 8, MAPPED)
    assert do_unmap(srv, (16, 8)).status == Status.GOOD
    assert lba_status(srv, 0) == [(0, NB, DEALLOCATED)]
    assert bytes(run(srv, r10(16, 8)).data_in or b"") == bytes(8 * BS)


def test_get_lba_status_allocation_length_and_beyond_end() -> None:
    srv = server(thin=True)
    for lba in (40, 80):
        cdb, data = w10(lba, 8)
        run(srv, cdb, data)
    assert len(lba_status(srv, 0)) == 5
    assert lba_status(srv, 0, alloc=24) == [(0, 40, DEALLOCATED)]  # room for one descriptor
    res = run(srv, struct.pack(">BBQIBB", 0x9E, 0x12, 0, 8, 0, 0))
    assert res.status == Status.GOOD and len(bytes(res.data_in or b"")) == 8
    assert struct.unpack_from(">I", bytes(res.data_in or b""))[0] == 20
    assert lba_status(srv, NB - 1) == [(NB - 1, 1, DEALLOCATED)]
    for lba in (NB, NB + 1, 1 << 63, (1 << 64) - 1):  # libiscsi GetLBAStatus.BeyondEol
        assert key_asc(run(srv, struct.pack(">BBQIBB", 0x9E, 0x12, lba, 24, 0, 0))) == LBA_OOB


def test_get_lba_status_follows_file_holes(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "thin.img", NB * BS)
    srv = server(store, thin=True)
    assert lba_status(srv, 0) == [(0, NB, DEALLOCATED)]
    cdb, data = w10(64, 16)
    run(srv, cdb, data)
    asyncio.run(store.flush())
    unit = store.allocation_unit // BS
    first = 64 // unit * unit
    last = -(-(64 + 16) // unit) * unit
    assert lba_status(srv, 0) == [
        (0, first, DEALLOCATED),
        (first, last - first, MAPPED),
        (last, NB - last, DEALLOCATED),
    ]
    assert do_unmap(srv, (first, last - first)).status == Status.GOOD
    assert lba_status(srv, 0) == [(0, NB, DEALLOCATED)]
    asyncio.run(store.close())


def test_thick_lu_has_no_provisioning() -> None:
    srv = server()
    assert key_asc(run(srv, struct.pack(">BBQIBB", 0x9E, 0x12, 0, 24, 0, 0))) == INVALID_CDB
    rc16 = bytes(run(srv, struct.pack(">BBQIBB", 0x9E, 0x10, 0, 32, 0, 0)).data_in or b"")
    assert rc16[14] & 0xC0 == 0  # LBPME 0, LBPRZ 0
    b0 = bytes(run(srv, bytes((0x12, 1, 0xB0, 0, 64, 0))).data_in or b"")
    assert struct.unpack_from(">IIII", b0, 20) == (0, 0, 0, 0)
    assert key_asc(run(srv, bytes((0x12, 1, 0xB2, 0, 64, 0)))) == INVALID_CDB


def test_thin_lu_provisioning_fields() -> None:
    srv = server(thin=True)
    rc16 = bytes(run(srv, struct.pack(">BBQIBB", 0x9E, 0x10, 0, 32, 0, 0)).data_in or b"")
    assert rc16[14] & 0xC0 == 0xC0 and rc16[13] & 0x0F == 0  # LBPME, LBPRZ; LBPPBE 0
    b0 = bytes(run(srv, bytes((0x12, 1, 0xB0, 0, 64, 0))).data_in or b"")
    assert b0[3] == 0x3C
    max_lba, max_desc, gran, align = struct.unpack_from(">IIII", b0, 20)
    assert (max_lba, max_desc, gran) == (MAX_UNMAP_BLOCKS, MAX_UNMAP_DESCRIPTORS, PER_PAGE)
    assert align == 0x80000000  # UGAVALID, alignment 0
    b2 = bytes(run(srv, bytes((0x12, 1, 0xB2, 0, 64, 0))).data_in or b"")
    assert b2[:4] == bytes((0, 0xB2, 0, 4))
    assert b2[5] == 0x80 | 0x40 | 0x20 | 0x04  # LBPU LBPWS LBPWS10 LBPRZ, no ANC_SUP
    assert b2[6] & 0x07 == 2  # PROVISIONING TYPE: thin


# -- UNMAP ---------------------------------------------------------------------------------------


def test_unmap_parameter_list_validation() -> None:
    srv = server(thin=True)
    cdb, data = w10(0, 64)
    run(srv, cdb, data)
    assert run(srv, unmap_cdb(0)).status == Status.GOOD  # nothing to do
    for n in range(1, 8):
        assert key_asc(run(srv, unmap_cdb(n), bytes(n))) == PARAM_LIST_LENGTH
    short = unmap_list((0, 8))
    assert key_asc(run(srv, unmap_cdb(len(short)), short[:6])) == PARAM_LIST_LENGTH  # data-out too short
    too_many = unmap_list(*[(i, 1) for i in range(MAX_UNMAP_DESCRIPTORS + 1)])
    res = run(srv, unmap_cdb(len(too_many)), too_many)
    assert key_asc(res) == INVALID_PARAM and sks(res) == bytes((0x80, 0, 2))  # pointer into the list
    res = do_unmap(srv, (0, 8), (100, MAX_UNMAP_BLOCKS))  # total above MAXIMUM UNMAP LBA COUNT
    assert key_asc(res) == INVALID_PARAM and sks(res) == bytes((0x80, 0, 24 + 8))
    # Beyond the end: LBA OUT OF RANGE, and the valid descriptor before it was not applied.
    for bad in ((NB - 1, 2), (NB + 1, 0), ((1 << 64) - 1, 1)):
        assert key_asc(do_unmap(srv, (0, 8), bad)) == LBA_OOB
    assert bytes(run(srv, r10(0, 1)).data_in or b"") == b"\xa5" * BS
    assert key_asc(run(srv, unmap_cdb(24, anchor=True), unmap_list((0, 8)))) == INVALID_CDB  # ANC_SUP 0
    # A descriptor length that is not a multiple of 16 ignores the incomplete tail.
    odd = unmap_list((0, 8), (8, 8), bd_len=24)
    assert run(srv, unmap_cdb(len(odd)), odd).status == Status.GOOD
    assert bytes(run(srv, r10(0, 16)).data_in or b"") == bytes(8 * BS) + b"\xa5" * (8 * BS)
    assert do_unmap(srv, (NB - 8, 8), (8, 0)).status == Status.GOOD  # up to the last block; empty


def test_unmap_data_out_garbage_never_raises() -> None:
    srv = server(thin=True)
    import random

    rnd = random.Random(3)
    for _ in range(300):
        data = bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(0, 64)))
        res = run(srv, unmap_cdb(rnd.randrange(0, 80)), data)
        assert res.status in (Status.GOOD, Status.CHECK_CONDITION)
        if res.status == Status.CHECK_CONDITION:
            assert key_asc(res)[0] == 0x5


# -- soft threshold ------------------------------------------------------------------------------


def test_soft_threshold_unit_attention_once_per_crossing() -> None:
    srv = server(thin=True, soft_threshold=50)
    settle(srv, A, B)
    half = NB // 2
    cdb, data = w10(0, half - PER_PAGE)
    assert run(srv, cdb, data).status == Status.GOOD
    assert run(srv, bytes(6), nexus=B).status == Status.GOOD  # 49 %: nothing yet
    cdb, data = w10(half - PER_PAGE, PER_PAGE)
    assert run(srv, cdb, data).status == Status.GOOD  # 50 %: reached
    for n in (A, B):
        assert key_asc(run(srv, bytes(6), nexus=n)) == SOFT_THRESHOLD
        assert run(srv, bytes(6), nexus=n).status == Status.GOOD
    cdb, data = w10(half, 8)
    run(srv, cdb, data)
    assert run(srv, bytes(6), nexus=B).status == Status.GOOD  # once, not on every write
    assert do_unmap(srv, (0, NB)).status == Status.GOOD  # below again: re-armed
    cdb, data = w10(0, half)
    run(srv, cdb, data)
    assert key_asc(run(srv, bytes(6), nexus=B)) == SOFT_THRESHOLD


def test_soft_threshold_validation_and_thick_lu() -> None:
    from cistern.config.lun import LunConfig

    assert LunConfig(lun=0, backend="memory", size=1 << 20, thin=True, soft_threshold=80).soft_threshold == 80
    for bad in (
        {"soft_threshold": 80},
        {"thin": True, "soft_threshold": 0},
        {"thin": True, "soft_threshold": 101},
    ):
        with pytest.raises(ValueError):
            LunConfig(lun=0, backend="memory", size=1 << 20, **bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        LogicalUnit(MemoryStore(NB * BS), lun=0, thin=True, soft_threshold=0)
    thick = LogicalUnit(MemoryStore(NB * BS), lun=0, soft_threshold=10)
    assert thick.soft_threshold is None


# -- read-only LUs -------------------------------------------------------------------------------


@pytest.mark.parametrize("thin", [False, True])
def test_read_only_lu_refuses_every_medium_changing_command(thin: bool) -> None:
    srv = server(read_only=True, thin=thin)
    lu = srv.luns[0]
    checked = 0
    for spec in COMMANDS:
        if not spec.writes or not spec.available(lu) or spec.opcode == 0x83:  # XCOPY: destination checks
            continue
        cdb = bytearray(len(spec.usage))
        cdb[0] = spec.opcode
        if spec.service_action is not None:
            cdb[1] = spec.service_action
        res = run(srv, bytes(cdb), bytes(BS))
        assert key_asc(res) == WRITE_PROTECTED, spec.name
        checked += 1
    assert checked >= 10
    # Real CDBs too: WRITE(10), WRITE SAME(16) with UNMAP, UNMAP of one block.
    cdb, data = w10(0, 1)
    assert key_asc(run(srv, cdb, data)) == WRITE_PROTECTED
    assert key_asc(run(srv, struct.pack(">BBQIBB", 0x93, 0x08, 0, 1, 0, 0), bytes(BS))) == WRITE_PROTECTED
    if thin:
        assert key_asc(do_unmap(srv, (0, 1))) == WRITE_PROTECTED
    ms6 = bytes(run(srv, bytes((0x1A, 0, 0x3F, 0, 255, 0))).data_in or b"")
    assert ms6[2] & 0x80  # MODE SENSE device-specific parameter: WP
    assert run(srv, r10(0, 1)).status == Status.GOOD
