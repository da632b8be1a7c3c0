"""Device server, block commands: READ/WRITE 6/10/12/16, VERIFY, WRITE AND VERIFY, PRE-FETCH,
SYNCHRONIZE CACHE, READ CAPACITY, START STOP UNIT (no medium), WRITE SAME, UNMAP, GET LBA STATUS."""

from __future__ import annotations

import asyncio
import struct

import pytest

from cistern.scsi import DeviceServer, ITNexus, LogicalUnit, ScsiResult, ScsiTask, Status
from cistern.storage import BackingStore, MemoryStore

TARGET = "iqn.2026-11.org.cistern:t1"
A = ITNexus("iqn.2026-11.org.cistern:init-a", b"\x80\x00\x00\x00\x00\x01", TARGET)
BS = 512
NB = 2048  # 1 MiB


class CountingStore(MemoryStore):
    def __init__(self, size: int, **kw: object) -> None:
        super().__init__(size, **kw)  # type: ignore[arg-type]
        self.flushes = 0

    async def flush(self) -> None:
        self.flushes += 1


def make(
    thin: bool = False, removable: bool = False, read_only: bool = False, bs: int = BS
) -> tuple[DeviceServer, BackingStore]:
    store = CountingStore(NB * bs, block_size=bs)
    lu = LogicalUnit(store, lun=0, thin=thin, removable=removable, read_only=read_only)
    return DeviceServer({0: lu}, target_name=TARGET), store


def run(srv: DeviceServer, cdb: bytes, data: bytes | None = None) -> ScsiResult:
    task = ScsiTask(nexus=A, lun=0, cdb=cdb.ljust(16, b"\0"), data_out=data, expected_length=len(data or b""))
    return asyncio.run(srv.execute(task))


def key_asc(res: ScsiResult) -> tuple[int, int, int]:
    assert res.status == Status.CHECK_CONDITION and res.sense is not None
    s = res.sense
    return (s[1] & 0xF, s[2], s[3]) if s[0] & 0x7F == 0x72 else (s[2] & 0xF, s[12], s[13])


def r10(lba: int, n: int, flags: int = 0) -> bytes:
    return struct.pack(">BBIBHB", 0x28, flags, lba, 0, n, 0)


def w10(lba: int, n: int, flags: int = 0, op: int = 0x2A) -> bytes:
    return struct.pack(">BBIBHB", op, flags, lba, 0, n, 0)


def r16(lba: int, n: int, op: int = 0x88, flags: int = 0) -> bytes:
    return struct.pack(">BBQIBB", op, flags, lba, n, 0, 0)


def r12(lba: int, n: int, op: int = 0xA8, flags: int = 0) -> bytes:
    return struct.pack(">BBIIBB", op, flags, lba, n, 0, 0)


LBA_OOB = (0x5, 0x21, 0x00)
INVALID_CDB = (0x5, 0x24, 0x00)


def test_write_then_read_all_sizes() -> None:
    srv, _ = make()
    payload = bytes(range(256)) * 8  # 4 blocks
    assert run(srv, w10(10, 4), payload).status == Status.GOOD
    res = run(srv, r10(10, 4))
    assert res.status == Status.GOOD and bytes(res.data_in or b"") == payload and res.transfer_length == 2048
    assert type(res.data_in) is bytes  # one copy out of the store into a fresh buffer, not zeroed first
    assert bytes(run(srv, r12(11, 1)).data_in or b"") == payload[512:1024]
    assert bytes(run(srv, r16(12, 2)).data_in or b"") == payload[1024:]
    assert run(srv, r16(20, 1, op=0x8A), payload[:512]).status == Status.GOOD
    assert run(srv, r12(21, 1, op=0xAA), payload[512:1024]).status == Status.GOOD
    assert bytes(run(srv, r10(20, 2)).data_in or b"") == payload[:1024]


def test_read6_write6_zero_means_256() -> None:
    srv, _ = make()
    assert run(srv, bytes((0x0A, 0, 0, 5, 1, 0)), b"\xaa" * 512).status == Status.GOOD
    res = run(srv, bytes((0x08, 0, 0, 0, 0, 0)))
    assert res.status == Status.GOOD and len(res.data_in or b"") == 256 * 512
    assert bytes(res.data_in or b"")[5 * 512 : 6 * 512] == b"\xaa" * 512
    assert key_asc(run(srv, bytes((0x08, 0x1F, 0xFF, 0xFF, 1, 0)))) == LBA_OOB


@pytest.mark.parametrize("make_cdb", [r10, r16, r12])
def test_range_checks(make_cdb) -> None:  # type: ignore[no-untyped-def]
    srv, _ = make()
    assert run(srv, make_cdb(0, 0)).status == Status.GOOD
    assert run(srv, make_cdb(NB, 0)).status == Status.GOOD
    assert key_asc(run(srv, make_cdb(NB + 1, 0))) == LBA_OOB
    assert key_asc(run(srv, make_cdb(NB - 1, 2))) == LBA_OOB
    assert key_asc(run(srv, make_cdb(0xFFFFFFFF, 1))) == LBA_OOB
    assert run(srv, make_cdb(NB - 1, 1)).status == Status.GOOD


def test_read16_huge_lba_and_d_sense_fixed_default() -> None:
    srv, _ = make()
    res = run(srv, r16(0xFFFFFFFFFFFFFFFF, 1))
    assert key_asc(res) == LBA_OOB and res.sense is not None and res.sense[0] == 0x70


def test_protect_fields_rejected_and_dpo_fua_accepted() -> None:
    srv, store = make()
    for prot in range(1, 8):
        res = run(srv, r10(0, 1, flags=prot << 5))
        assert key_asc(res) == INVALID_CDB
        assert (
            res.sense is not None and res.sense[15] & 0x08 and res.sense[15] & 7 >= 5 and res.sense[17] == 1
        )
        assert key_asc(run(srv, w10(0, 1, flags=prot << 5), bytes(512))) == INVALID_CDB
    for flags in (0x10, 0x08, 0x18, 0x02, 0x1A):
        assert run(srv, r10(0, 1, flags=flags)).status == Status.GOOD
        assert run(srv, w10(0, 1, flags=flags), bytes(512)).status == Status.GOOD
    before = store.flushes  # type: ignore[attr-defined]
    run(srv, w10(0, 1, flags=0x08), bytes(512))
    assert store.flushes == before + 1  # type: ignore[attr-defined]
    run(srv, w10(0, 1), bytes(512))
    assert store.flushes == before + 1  # type: ignore[attr-defined]


def test_write_with_less_data_out_than_cdb_writes_what_arrived() -> None:
    srv, _ = make()
    run(srv, w10(0, 2), b"a" * 1024)
    res = run(srv, w10(0, 2), b"b" * 512)  # EDTL one block, CDB two: residual overflow
    assert res.status == Status.GOOD and res.transfer_length == 1024
    assert bytes(run(srv, r10(0, 2)).data_in or b"") == b"b" * 512 + b"a" * 512
    assert run(srv, w10(0, 1)).status == Status.GOOD  # no data-out at all
    assert run(srv, w10(0, 1), b"c" * 10000).status == Status.GOOD  # more data than needed: first block
    assert bytes(run(srv, r10(0, 2)).data_in or b"") == b"c" * 512 + b"a" * 512


def test_verify_bytchk() -> None:
    srv, _ = make()
    blob = bytes(range(256)) * 4
    run(srv, w10(100, 2), blob)
    assert run(srv, w10(100, 2, flags=0x02, op=0x2F), blob).status == Status.GOOD
    bad = bytearray(blob)
    bad[700] ^= 0x58
    res = run(srv, w10(100, 2, flags=0x02, op=0x2F), bytes(bad))
    assert key_asc(res) == (0xE, 0x1D, 0x00)
    assert res.sense is not None and res.sense[0] == 0xF0 and struct.unpack_from(">I", res.sense, 3)[0] == 700
    assert run(srv, w10(100, 2, flags=0x00, op=0x2F), bytes(bad)).status == Status.GOOD  # BYTCHK=0
    assert key_asc(run(srv, w10(100, 1, flags=0x04, op=0x2F), blob)) == INVALID_CDB  # BYTCHK=10b
    assert key_asc(run(srv, w10(NB, 1, op=0x2F))) == LBA_OOB
    assert run(srv, r12(100, 2, op=0xAF, flags=0x02), blob).status == Status.GOOD
    assert run(srv, r16(100, 2, op=0x8F, flags=0x12), blob).status == Status.GOOD
    assert key_asc(run(srv, r16(100, 1, op=0x8F, flags=0x20), blob)) == INVALID_CDB  # VRPROTECT
    run(srv, w10(200, 2), b"\x11" * 1024)
    assert run(srv, w10(200, 2, flags=0x06, op=0x2F), b"\x11" * 512).status == Status.GOOD


def test_write_and_verify() -> None:
    srv, store = make()
    before = store.flushes  # type: ignore[attr-defined]
    assert run(srv, w10(3, 1, flags=0x12, op=0x2E), b"\x42" * 512).status == Status.GOOD
    assert store.flushes == before + 1  # type: ignore[attr-defined]
    assert bytes(run(srv, r10(3, 1)).data_in or b"") == b"\x42" * 512
    assert run(srv, r12(4, 1, op=0xAE), b"\x43" * 512).status == Status.GOOD
    assert run(srv, r16(5, 1, op=0x8E), b"\x44" * 512).status == Status.GOOD
    assert key_asc(run(srv, r16(NB, 1, op=0x8E), b"\x44" * 512)) == LBA_OOB


def test_prefetch_and_sync_cache() -> None:
    srv, store = make()
    assert run(srv, w10(0, 1, flags=0x02, op=0x34)).status == Status.GOOD
    assert run(srv, struct.pack(">BBIBHB", 0x34, 0, 0, 3, 1, 0)).status == Status.GOOD  # group 3
    assert key_asc(run(srv, w10(NB - 1, 2, op=0x34))) == LBA_OOB
    assert key_asc(run(srv, r16(NB + 1, 0, op=0x90))) == LBA_OOB
    assert run(srv, r16(NB - 256, 256, op=0x90)).status == Status.GOOD
    before = store.flushes  # type: ignore[attr-defined]
    assert run(srv, w10(0, 0, op=0x35)).status == Status.GOOD
    assert run(srv, r16(1, 1, op=0x91)).status == Status.GOOD
    assert store.flushes == before + 2  # type: ignore[attr-defined]
    assert key_asc(run(srv, r16(NB, 1, op=0x91))) == LBA_OOB


def test_read_capacity() -> None:
    srv, _ = make(bs=4096)
    res = run(srv, bytes((0x25,)) + bytes(9))
    assert bytes(res.data_in or b"") == struct.pack(">II", NB - 1, 4096)
    assert key_asc(run(srv, struct.pack(">BBIHBB", 0x25, 0, 5, 0, 0, 0))) == INVALID_CDB
    rc16 = struct.pack(">BBQIBB", 0x9E, 0x10, 0, 32, 0, 0)
    d = bytes(run(srv, rc16).data_in or b"")
    assert len(d) == 32 and struct.unpack_from(">QI", d, 0) == (NB - 1, 4096) and d[12] == 0 and d[14] == 0
    assert len(run(srv, rc16[:10] + struct.pack(">I", 0) + b"\0\0").data_in or b"") == 0
    thin, _ = make(thin=True)
    assert bytes(run(thin, rc16).data_in or b"")[14] == 0xC0


def test_read_capacity10_saturates() -> None:
    class Huge(MemoryStore):
        def __init__(self) -> None:
            super().__init__(0)
            self.size = 1 << 42

    srv = DeviceServer({0: LogicalUnit(Huge(), lun=0)}, target_name=TARGET)
    assert bytes(run(srv, bytes((0x25,)) + bytes(9)).data_in or b"")[:4] == b"\xff\xff\xff\xff"
    d = bytes(run(srv, struct.pack(">BBQIBB", 0x9E, 0x10, 0, 32, 0, 0)).data_in or b"")
    assert struct.unpack_from(">Q", d, 0)[0] == (1 << 33) - 1


def test_read_only_lu() -> None:
    srv, _ = make(read_only=True)
    assert key_asc(run(srv, w10(0, 1), bytes(512))) == (0x7, 0x27, 0x00)
    assert run(srv, r10(0, 1)).status == Status.GOOD


def test_no_medium_on_removable_lu() -> None:
    srv, _ = make(removable=True)
    eject = bytes((0x1B, 1, 0, 0, 0x02, 0))
    load = bytes((0x1B, 1, 0, 0, 0x03, 0))
    assert run(srv, eject).status == Status.GOOD
    no_medium = (0x2, 0x3A, 0x00)
    assert key_asc(run(srv, bytes(6))) == no_medium
    for cdb in (r10(0, 1), r16(0, 1), w10(0, 1, op=0x35), bytes((0x25,)) + bytes(9), r16(0, 1, op=0x90)):
        assert key_asc(run(srv, cdb)) == no_medium
    assert key_asc(run(srv, w10(0, 1), bytes(512))) == no_medium
    assert run(srv, bytes((0x12, 0, 0, 0, 96, 0))).status == Status.GOOD
    assert run(srv, load).status == Status.GOOD
    assert run(srv, bytes(6)).status == Status.GOOD
    assert run(srv, bytes((0x1E, 0, 0, 0, 1, 0))).status == Status.GOOD  # PREVENT
    assert key_asc(run(srv, eject)) == (0x5, 0x53, 0x02)
    assert run(srv, bytes((0x1E, 0, 0, 0, 0, 0))).status == Status.GOOD
    assert run(srv, eject).status == Status.GOOD
    run(srv, bytes((0x1E, 0, 0, 0, 1, 0)))
    assert key_asc(run(srv, load)) == (0x5, 0x53, 0x02)  # loading is prevented too
    run(srv, bytes((0x1E, 0, 0, 0, 0, 0)))
    assert run(srv, bytes((0x1B, 0, 0, 0, 0x32, 0))).status == Status.GOOD  # power condition: LOEJ ignored
    assert key_asc(run(srv, bytes(6))) == no_medium
    assert run(srv, load).status == Status.GOOD


def test_write_same_unmap_get_lba_status_on_thin_lu() -> None:
    srv, _ = make(thin=True)
    ws10 = struct.pack(">BBIBHB", 0x41, 0, 8, 0, 4, 0)
    assert run(srv, ws10, b"\x5a" * 512).status == Status.GOOD
    assert bytes(run(srv, r10(8, 4)).data_in or b"") == b"\x5a" * 2048
    # zero blocks (WSNZ=0): from the LBA to the end of the medium
    assert run(srv, struct.pack(">BBIBHB", 0x41, 0, NB - 2, 0, 0, 0), b"\x5a" * 512).status == Status.GOOD
    unmap_param = struct.pack(">HH4x", 22, 16) + struct.pack(">QI4x", 9, 2)
    unmap = struct.pack(">BBIBHB", 0x42, 0, 0, 0, len(unmap_param), 0)
    assert run(srv, unmap, unmap_param).status == Status.GOOD
    assert bytes(run(srv, r10(8, 4)).data_in or b"") == b"\x5a" * 512 + bytes(1024) + b"\x5a" * 512
    bad = struct.pack(">HH4x", 22, 16) + struct.pack(">QI4x", NB - 1, 2)
    assert key_asc(run(srv, struct.pack(">BBIBHB", 0x42, 0, 0, 0, len(bad), 0), bad)) == LBA_OOB
    ws16_unmap_ndob = struct.pack(">BBQIBB", 0x93, 0x09, 8, 1, 0, 0)
    assert run(srv, ws16_unmap_ndob).status == Status.GOOD
    assert bytes(run(srv, r10(8, 1)).data_in or b"") == bytes(512)
    gls = struct.pack(">BBQIBB", 0x9E, 0x12, 5, 24, 0, 0)
    d = bytes(run(srv, gls).data_in or b"")
    # LBAs 0-7 share a never-written RAM page: deallocated (real status now, see test_scsi_thin.py)
    assert struct.unpack_from(">IIQIB", d, 0) == (20, 0, 5, 3, 1)
    thick, _ = make()
    assert key_asc(run(thick, struct.pack(">BBIBHB", 0x41, 0x08, 8, 0, 4, 0), bytes(512))) == INVALID_CDB
    assert key_asc(run(thick, unmap, unmap_param)) == (0x5, 0x20, 0x00)
    assert key_asc(run(thick, gls)) == INVALID_CDB


def test_storage_error_becomes_medium_error() -> None:
    class Broken(MemoryStore):
        async def read_into(self, offset: int, buf: memoryview) -> None:
            raise OSError(5, "EIO")

        async def read(self, offset: int, length: int) -> bytes:
            raise OSError(5, "EIO")

        async def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
            raise OSError(5, "EIO")

    srv = DeviceServer({0: LogicalUnit(Broken(1 << 20), lun=0)}, target_name=TARGET)
    assert key_asc(run(srv, r10(7, 1))) == (0x3, 0x11, 0x00)
    assert key_asc(run(srv, w10(7, 1), bytes(512))) == (0x3, 0x0C, 0x00)


def test_internal_bug_is_hardware_error_not_exception() -> None:
    class Buggy(MemoryStore):
        async def read_into(self, offset: int, buf: memoryview) -> None:
            raise ZeroDivisionError

        async def read(self, offset: int, length: int) -> bytes:
            raise ZeroDivisionError

    srv = DeviceServer({0: LogicalUnit(Buggy(1 << 20), lun=0)}, target_name=TARGET)
    assert key_asc(run(srv, r10(0, 1))) == (0x4, 0x44, 0x00)


def test_capacity_change_unit_attention() -> None:
    srv, store = make()
    srv.nexus_added(A)
    run(srv, bytes(6))
    store.size = NB * BS * 2
    srv.capacity_changed(0)
    assert key_asc(run(srv, bytes(6))) == (0x6, 0x2A, 0x09)
    d = bytes(run(srv, bytes((0x25,)) + bytes(9)).data_in or b"")
    assert struct.unpack_from(">I", d, 0)[0] == 2 * NB - 1
