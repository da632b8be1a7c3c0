"""Device server, primary commands: INQUIRY/VPD, REPORT LUNS, REQUEST SENSE, unit attentions,
MODE SENSE/SELECT, REPORT SUPPORTED OPERATION CODES, unknown LUNs.  Raw CDBs in, bytes out."""

from __future__ import annotations

import asyncio
import struct

from cistern.scsi import DeviceServer, ITNexus, LogicalUnit, ScsiResult, ScsiTask, Status
from cistern.storage import MemoryStore

TARGET = "iqn.2026-11.org.cistern:t1"
A = ITNexus("iqn.2026-11.org.cistern:init-a", b"\x80\x00\x00\x00\x00\x01", TARGET, tpgt=1, relative_port=1)
B = ITNexus("iqn.2026-11.org.cistern:init-b", b"\x80\x00\x00\x00\x00\x02", TARGET, tpgt=1, relative_port=1)


def make_server(thin: bool = False, removable: bool = False, luns: int = 1) -> DeviceServer:
    lus = {
        i: LogicalUnit(MemoryStore(1 << 20), lun=i, serial=f"SER{i}", thin=thin, removable=removable)
        for i in range(luns)
    }
    return DeviceServer(lus, target_name=TARGET)


def run(
    srv: DeviceServer, cdb: bytes, *, lun: int = 0, nexus: ITNexus = A, data: bytes | None = None
) -> ScsiResult:
    task = ScsiTask(
        nexus=nexus,
        lun=lun,
        cdb=cdb.ljust(16, b"\0") if len(cdb) < 16 else cdb,
        data_out=data,
        expected_length=len(data) if data else 0,
    )
    return asyncio.run(srv.execute(task))


def key_asc(res: ScsiResult) -> tuple[int, int, int]:
    s = res.sense
    assert s is not None
    if s[0] & 0x7F == 0x72:
        return s[1] & 0x0F, s[2], s[3]
    return s[2] & 0x0F, s[12], s[13]


def data(res: ScsiResult) -> bytes:
    return bytes(res.data_in or b"")


def inquiry(evpd: int = 0, page: int = 0, alloc: int = 255) -> bytes:
    return struct.pack(">BBBHB", 0x12, evpd, page, alloc, 0)


def test_standard_inquiry() -> None:
    srv = make_server()
    res = run(srv, inquiry(alloc=255))
    assert res.status == Status.GOOD
    d = data(res)
    assert len(d) == 96 and res.transfer_length == 255
    assert d[0] == 0x00 and d[2] == 0x06 and d[3] == 0x12 and d[4] == 91 and d[7] & 0x02
    assert d[8:16] == b"CISTERN " and d[16:32] == b"cistern disk    "
    descs = struct.unpack_from(">8H", d, 58)
    assert 0x0460 in descs and 0x04C0 in descs


def test_inquiry_truncated_to_allocation_length() -> None:
    res = run(make_server(), inquiry(alloc=5))
    assert res.status == Status.GOOD and len(data(res)) == 5 and res.transfer_length == 5
    assert data(run(make_server(), inquiry(alloc=511))) == data(run(make_server(), inquiry(alloc=512)))


def test_inquiry_page_without_evpd_is_invalid_field_with_pointer() -> None:
    res = run(make_server(), inquiry(evpd=0, page=0x80))
    assert res.status == Status.CHECK_CONDITION
    assert key_asc(res) == (0x5, 0x24, 0x00)
    assert res.sense is not None and res.sense[15] == 0xC0 and res.sense[16:18] == b"\x00\x02"


def test_vpd_supported_pages_sorted_and_each_readable() -> None:
    srv = make_server(thin=True)
    d = data(run(srv, inquiry(1, 0x00)))
    pages = list(d[4 : 4 + d[3]])
    assert pages == sorted(pages) == [0x00, 0x80, 0x83, 0x8F, 0xB0, 0xB1, 0xB2]
    for p in pages:
        res = run(srv, inquiry(1, p))
        assert res.status == Status.GOOD and data(res)[1] == p
    assert key_asc(run(srv, inquiry(1, 0xC7))) == (0x5, 0x24, 0x00)
    assert 0xB2 not in data(run(make_server(thin=False), inquiry(1, 0)))[4:]


def test_vpd_unit_serial_and_block_pages() -> None:
    srv = make_server()
    assert data(run(srv, inquiry(1, 0x80))) == b"\x00\x80\x00\x04SER0"
    bl = data(run(srv, inquiry(1, 0xB0)))
    assert bl[3] == 0x3C and len(bl) == 64
    assert struct.unpack_from(">I", bl, 20)[0] == 0  # no UNMAP on a thick LU
    bdc = data(run(srv, inquiry(1, 0xB1)))
    assert struct.unpack_from(">H", bdc, 4)[0] == 1


def test_vpd_device_identification_designators() -> None:
    d = data(run(make_server(), inquiry(1, 0x83)))
    assert struct.unpack_from(">H", d, 2)[0] == len(d) - 4
    found = {}
    pos = 4
    while pos < len(d):
        assoc_type = d[pos + 1]
        ln = d[pos + 3]
        found[assoc_type & 0x3F] = d[pos + 4 : pos + 4 + ln]
        pos += 4 + ln
    assert pos == len(d)
    assert found[0x03][0] >> 4 == 3 and len(found[0x03]) == 8  # NAA, logical unit
    assert found[0x14] == b"\x00\x00\x00\x01"  # relative target port 1
    assert found[0x15] == b"\x00\x00\x00\x01"  # target port group
    assert found[0x18].rstrip(b"\0") == f"{TARGET},t,0x0001".encode()
    assert len(found[0x18]) % 4 == 0
    assert found[0x28].rstrip(b"\0") == TARGET.encode()


def test_unknown_lun() -> None:
    srv = make_server()
    res = run(srv, inquiry(), lun=5)
    assert res.status == Status.GOOD and data(res)[0] == 0x7F
    res = run(srv, b"\x00" * 6, lun=5)  # TEST UNIT READY
    assert res.status == Status.CHECK_CONDITION and key_asc(res) == (0x5, 0x25, 0x00)
    res = run(srv, struct.pack(">BBBBIBB", 0xA0, 0, 0, 0, 64, 0, 0) + b"\0", lun=5)
    assert res.status == Status.GOOD
    res = run(srv, bytes((0x03, 0, 0, 0, 252, 0)), lun=5)
    assert res.status == Status.GOOD and data(res)[12] == 0x25


def test_report_luns() -> None:
    srv = DeviceServer(
        {0: LogicalUnit(MemoryStore(4096), lun=0), 300: LogicalUnit(MemoryStore(4096), lun=300)},
        target_name=TARGET,
    )
    cdb = bytes((0xA0, 0, 0, 0, 0, 0)) + struct.pack(">I", 4096) + b"\0\0"
    d = data(run(srv, cdb))
    assert d[:8] == struct.pack(">I4x", 16)
    assert d[8:16] == bytes(8) and d[16:24] == bytes((0x41, 0x2C)) + bytes(6)
    assert data(run(srv, cdb[:2] + b"\x01" + cdb[3:]))[:4] == bytes(4)
    assert key_asc(run(srv, cdb[:2] + b"\x07" + cdb[3:])) == (0x5, 0x24, 0x00)
    small = bytes((0xA0, 0, 0, 0, 0, 0)) + struct.pack(">I", 8) + b"\0\0"
    assert key_asc(run(srv, small)) == (0x5, 0x24, 0x00)


def test_power_on_unit_attention_consumed_once_and_exemptions() -> None:
    srv = make_server()
    srv.nexus_added(A)
    assert run(srv, inquiry()).status == Status.GOOD  # INQUIRY does not consume the UA
    res = run(srv, bytes(6))
    assert res.status == Status.CHECK_CONDITION and key_asc(res) == (0x6, 0x29, 0x00)
    assert run(srv, bytes(6)).status == Status.GOOD
    run(srv, bytes(6), nexus=B)  # B never logged in: no UA
    srv.nexus_added(B)
    rs = run(srv, bytes((0x03, 0, 0, 0, 252, 0)), nexus=B)  # REQUEST SENSE reports and clears it
    assert rs.status == Status.GOOD and data(rs)[2] == 0x06 and data(rs)[12] == 0x29
    assert run(srv, bytes(6), nexus=B).status == Status.GOOD
    rs = run(srv, bytes((0x03, 1, 0, 0, 252, 0)), nexus=B)  # DESC=1, nothing pending
    assert data(rs)[:4] == bytes((0x72, 0, 0, 0))


def test_lun_reset_and_target_reset_unit_attentions() -> None:
    srv = make_server(luns=2)
    srv.nexus_added(A)
    srv.nexus_added(B)
    for nx in (A, B):
        for lun in (0, 1):
            run(srv, bytes(6), nexus=nx, lun=lun)
    srv.task_management("LUN_RESET", A, 0)
    assert key_asc(run(srv, bytes(6), nexus=B)) == (0x6, 0x29, 0x03)
    assert key_asc(run(srv, bytes(6), nexus=A)) == (0x6, 0x29, 0x03)
    assert run(srv, bytes(6), nexus=B, lun=1).status == Status.GOOD
    srv.task_management("TARGET_WARM_RESET", A, None)
    assert key_asc(run(srv, bytes(6), nexus=B, lun=1)) == (0x6, 0x29, 0x00)
    srv.task_management("ABORT_TASK_SET", A, 0)
    srv.nexus_lost(B)
    assert run(srv, bytes(6), nexus=B).status == Status.GOOD


def mode_sense6(page: int, pc: int = 0, dbd: int = 0, alloc: int = 255, subpage: int = 0) -> bytes:
    return bytes((0x1A, dbd << 3, pc << 6 | page, subpage, alloc, 0))


def find_page(ms: bytes, code: int, ten: bool = False) -> bytes:
    pos = 8 + struct.unpack_from(">H", ms, 6)[0] if ten else 4 + ms[3]
    while pos < len(ms):
        if ms[pos] & 0x3F == code:
            return ms[pos : pos + ms[pos + 1] + 2]
        pos += ms[pos + 1] + 2
    raise AssertionError(f"page {code:#x} not found")


def test_mode_sense6_all_pages_and_header() -> None:
    srv = make_server()
    d = data(run(srv, mode_sense6(0x3F)))
    assert d[0] == len(d) - 1 and d[2] & 0x10 and d[3] == 8
    assert struct.unpack_from(">I", d, 4)[0] == (1 << 20) // 512 and d[9:12] == b"\x00\x02\x00"
    ctl = find_page(d, 0x0A)
    assert ctl == find_page(data(run(srv, mode_sense6(0x0A))), 0x0A)
    assert ctl[2] >> 5 == 1 and ctl[2] & 0x04 == 0
    assert find_page(d, 0x08)[2] & 0x04  # WCE
    res = run(srv, mode_sense6(0x3F, alloc=4))
    assert len(data(res)) == 4 and res.transfer_length == 4
    assert key_asc(run(srv, mode_sense6(0x0A, pc=3))) == (0x5, 0x39, 0x00)
    assert key_asc(run(srv, mode_sense6(0x15))) == (0x5, 0x24, 0x00)
    assert key_asc(run(srv, mode_sense6(0x0A, subpage=1))) == (0x5, 0x24, 0x00)
    ch = find_page(data(run(srv, mode_sense6(0x0A, pc=1, dbd=1))), 0x0A)
    assert ch[2] == 0x04 and ch[4] == 0x08


def test_mode_sense10_long_lba() -> None:
    d = data(run(make_server(), bytes((0x5A, 0x10, 0x3F, 0, 0, 0, 0, 0x10, 0, 0))))
    assert (
        struct.unpack_from(">H", d, 0)[0] == len(d) - 2
        and d[4] & 1
        and struct.unpack_from(">H", d, 6)[0] == 16
    )
    assert struct.unpack_from(">Q", d, 8)[0] == 2048 and struct.unpack_from(">I", d, 20)[0] == 512


def mode_select6(page: bytes, pf: int = 1) -> tuple[bytes, bytes]:
    param = bytes(4) + page
    return bytes((0x15, pf << 4, 0, 0, len(param), 0)), param


def test_mode_select_sets_swp_and_d_sense_and_signals_others() -> None:
    srv = make_server()
    srv.nexus_added(A)
    srv.nexus_added(B)
    run(srv, bytes(6), nexus=A)
    run(srv, bytes(6), nexus=B)
    ctl = bytearray(find_page(data(run(srv, mode_sense6(0x0A, dbd=1))), 0x0A))
    ctl[4] |= 0x08  # SWP
    ctl[2] |= 0x04  # D_SENSE
    cdb, param = mode_select6(bytes(ctl))
    assert run(srv, cdb, data=param).status == Status.GOOD
    assert find_page(data(run(srv, mode_sense6(0x0A))), 0x0A)[4] & 0x08
    ua = run(srv, bytes(6), nexus=B)
    assert ua.sense is not None and ua.sense[0] == 0x72 and key_asc(ua) == (0x6, 0x2A, 0x01)
    assert run(srv, bytes(6), nexus=A).status == Status.GOOD
    write = bytes((0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0))
    res = run(srv, write, data=bytes(512))
    assert key_asc(res) == (0x7, 0x27, 0x02)
    assert res.sense is not None and res.sense[0] == 0x72  # descriptor format now


def test_mode_select_rejects_unchangeable_bits_and_bad_cdb() -> None:
    srv = make_server()
    ctl = bytearray(find_page(data(run(srv, mode_sense6(0x0A, dbd=1))), 0x0A))
    ctl[3] ^= 0x02  # QERR is not changeable
    cdb, param = mode_select6(bytes(ctl))
    res = run(srv, cdb, data=param)
    assert key_asc(res) == (0x5, 0x26, 0x00)
    cdb, param = mode_select6(bytes((0x0A, 10)) + bytes(10), pf=0)
    assert key_asc(run(srv, cdb, data=param)) == (0x5, 0x24, 0x00)
    cdb, param = mode_select6(bytes((0x33, 2, 0, 0)))
    assert key_asc(run(srv, cdb, data=param)) == (0x5, 0x26, 0x00)
    assert key_asc(run(srv, bytes((0x15, 0x10, 0, 0, 20, 0)), data=bytes(4))) == (0x5, 0x1A, 0x00)


def rsoc(option: int, opcode: int = 0, sa: int = 0, rctd: int = 0, alloc: int = 65535) -> bytes:
    return struct.pack(">BBBBHIBB", 0xA3, 0x0C, rctd << 7 | option, opcode, sa, alloc, 0, 0)


def parse_all(d: bytes) -> list[tuple[int, int, int, int]]:
    out = []
    pos = 4
    end = 4 + struct.unpack_from(">I", d, 0)[0]
    while pos < end:
        op, sa, flags, ln = struct.unpack_from(">BxHxBH", d, pos)
        out.append((op, sa, flags, ln))
        pos += 8 + (12 if flags & 0x02 else 0)
    return out


def test_report_supported_opcodes_all_and_one() -> None:
    srv = make_server()
    descs = parse_all(data(run(srv, rsoc(0))))
    ops = {(op, sa if flags & 1 else None) for op, sa, flags, _ in descs}
    assert (0x28, None) in ops and (0x9E, 0x10) in ops and (0xA3, 0x0C) in ops
    assert (0x42, None) not in ops  # UNMAP only on thin LUs
    for op, sa, flags, ln in descs:
        assert flags & 1 or sa == 0
        one = data(run(srv, rsoc(2 if flags & 1 else 1, op, sa)))
        assert one[1] & 0x07 == 0x03 and struct.unpack_from(">H", one, 2)[0] == ln and one[4] == op
        wrong = run(srv, rsoc(1 if flags & 1 else 2, op, sa))
        assert key_asc(wrong) == (0x5, 0x24, 0x00)
    timed = data(run(srv, rsoc(0, rctd=1)))
    assert all(f & 0x02 for _, _, f, _ in parse_all(timed))
    assert struct.unpack_from(">H", timed, 12)[0] == 0x0A
    one = data(run(srv, rsoc(1, 0x28)))
    assert one[5] & 0x18 == 0x18  # DPO and FUA examined (DPOFUA=1 in MODE SENSE)
    assert one[5] & 0xE0 == 0  # RDPROTECT not supported
    assert data(run(srv, rsoc(1, 0xFF)))[1] & 0x07 == 0x01  # not supported
    assert key_asc(run(srv, rsoc(5))) == (0x5, 0x24, 0x00)


def test_bad_opcodes_and_reserved_bits() -> None:
    srv = make_server()
    assert key_asc(run(srv, bytes((0xC5,)) + bytes(15))) == (0x5, 0x20, 0x00)
    res = run(srv, bytes((0x9E, 0x1F)) + bytes(14))  # unknown service action
    assert key_asc(res) == (0x5, 0x24, 0x00) and res.sense is not None and res.sense[16:18] == b"\x00\x01"
    res = run(srv, bytes((0x00, 0, 0, 0, 0, 0x04)))  # NACA=1 in the CONTROL byte
    assert key_asc(res) == (0x5, 0x24, 0x00)
    assert res.sense is not None and res.sense[15] == 0xCA and res.sense[16:18] == b"\x00\x05"
    assert key_asc(asyncio.run(srv.execute(ScsiTask(nexus=A, lun=0, cdb=b"")))) == (0x5, 0x20, 0x00)
    assert key_asc(asyncio.run(srv.execute(ScsiTask(nexus=A, lun=0, cdb=b"\x28\0\0")))) == (0x5, 0x24, 0x00)
