"""The SSC tape drive (scsi/tape.py, ssc.py): every command and sense edge, byte-exact."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from tape_helpers import (
    REWIND,
    TUR,
    Harness,
    locate10,
    locate16,
    read6,
    read_position,
    space6,
    space16,
    wfm,
    write6,
)

from cistern.scsi import Status
from cistern.scsi.tape import DENSITY_CODE, MAX_BLOCK_LENGTH, TapeUnit
from cistern.storage.tape import Cartridge, create_cartridge

NO_SENSE, NOT_READY, MEDIUM_ERROR, ILLEGAL, UA, DATA_PROTECT, BLANK, OVERFLOW = 0, 2, 3, 5, 6, 7, 8, 0xD


@pytest.fixture
def lib(tmp_path: Path) -> Path:
    return tmp_path / "lib"


@pytest.fixture
def h(lib: Path) -> Iterator[Harness]:
    path = create_cartridge(str(lib), "CIS001L6", 8 << 20)
    drive = TapeUnit(lun=0, serial="drive-0")
    harness = Harness({0: drive})
    harness.run(drive.insert(path))
    harness.clear_ua(0)
    yield harness
    harness.close()


def drive(h: Harness) -> TapeUnit:
    lu = h.srv.luns[0]
    assert isinstance(lu, TapeUnit)
    return lu


def blk(i: int, n: int) -> bytes:
    return bytes([i & 0xFF]) * n


def tell(h: Harness) -> int:
    return struct.unpack_from(">I", h.ok(0, read_position(1)), 4)[0]


def write_blocks(h: Harness, sizes: list[int], start: int = 0) -> None:
    for i, n in enumerate(sizes):
        h.ok(0, write6(n), blk(start + i, n))


# -- no cartridge ---------------------------------------------------------------------------------


def test_empty_drive_is_not_ready_but_answers_inquiry(tmp_path: Path) -> None:
    h = Harness({0: TapeUnit(lun=0)})
    try:
        assert h.check(0, TUR)[0].key == UA  # power on
        s, _ = h.check(0, TUR)
        assert (s.key, s.asc, s.ascq) == (NOT_READY, 0x3A, 0x00)
        s, _ = h.check(0, read6(512))
        assert (s.key, s.asc) == (NOT_READY, 0x3A)
        inq = h.ok(0, [0x12, 0, 0, 0, 96, 0])
        assert inq[0] == 0x01 and inq[1] == 0x80  # sequential access, RMB
        assert struct.unpack_from(">H", inq, 64)[0] == 0x0400  # SSC-3
        rs = h.ok(0, [0x03, 0, 0, 0, 18, 0])
        assert (rs[2] & 0x0F, rs[12]) == (NOT_READY, 0x3A)
        assert (
            h.ok(0, [0x05, 0, 0, 0, 0, 0]) == bytes((0,)) + MAX_BLOCK_LENGTH.to_bytes(3, "big") + b"\x00\x01"
        )
        s, _ = h.check(0, [0x1B, 0, 0, 0, 0x01, 0])  # LOAD with nothing in the drive
        assert (s.key, s.asc) == (NOT_READY, 0x3A)
    finally:
        h.close()


def test_insert_reports_not_ready_to_ready_change(lib: Path) -> None:
    path = create_cartridge(str(lib), "CIS001L6", 8 << 20)
    d = TapeUnit(lun=0)
    h = Harness({0: d})
    try:
        assert h.check(0, TUR)[0].asc == 0x29
        h.run(d.insert(path))
        s, _ = h.check(0, TUR)
        assert (s.key, s.asc, s.ascq) == (UA, 0x28, 0x00)
        h.ok(0, TUR)
    finally:
        h.close()


# -- variable-block READ / WRITE ---------------------------------------------------------------------


def test_variable_write_read_filemark_and_eod(h: Harness) -> None:
    write_blocks(h, [10240, 10240, 700])
    h.ok(0, wfm(1))
    assert tell(h) == 4
    h.ok(0, REWIND)
    assert h.ok(0, read6(10240)) == blk(0, 10240)
    assert h.ok(0, read6(10240)) == blk(1, 10240)
    # asking 10240 for a 700-byte block: ILI, residue +9540, the 700 bytes
    s, data = h.check(0, read6(10240))
    assert (s.key, s.asc, s.ascq, s.ili, s.information) == (NO_SENSE, 0, 0, True, 9540) and data == blk(
        2, 700
    )
    s, data = h.check(0, read6(10240))  # the filemark
    assert (s.key, s.asc, s.ascq, s.filemark, s.information, data) == (NO_SENSE, 0, 1, True, 10240, b"")
    assert tell(h) == 4
    s, _ = h.check(0, read6(10240))  # end of data at once
    assert (s.key, s.asc, s.ascq, s.information) == (BLANK, 0x00, 0x05, 10240)
    s, _ = h.check(0, read6(10240))
    assert s.key == BLANK and tell(h) == 4


def test_overlength_block_reports_negative_residue_and_sili(h: Harness) -> None:
    write_blocks(h, [4096, 100])
    h.ok(0, REWIND)
    s, data = h.check(0, read6(1000))
    assert s.ili and s.information == 1000 - 4096 and data == blk(0, 1000)
    assert tell(h) == 1  # past the block
    assert h.ok(0, read6(200, sili=True)) == blk(1, 100)  # SILI: shorter block is not an error


def test_blank_cartridge_read_is_blank_check(h: Harness) -> None:
    s, _ = h.check(0, read6(65536))
    assert (s.key, s.asc, s.ascq) == (BLANK, 0x00, 0x05)


def test_zero_length_read_write_are_noops(h: Harness) -> None:
    h.ok(0, write6(0))
    h.ok(0, read6(0))
    assert tell(h) == 0


# -- fixed-block mode -------------------------------------------------------------------------------------


def set_block_length(h: Harness, n: int) -> None:
    h.ok(0, [0x15, 0x10, 0, 0, 12, 0], bytes((0, 0, 0x10, 8, 0, 0, 0, 0, 0)) + n.to_bytes(3, "big"))


def test_fixed_mode_read_write(h: Harness) -> None:
    s, _ = h.check(0, write6(2, fixed=True), bytes(1024))  # block length 0: fixed mode refused
    assert (s.key, s.asc) == (ILLEGAL, 0x24)
    set_block_length(h, 512)
    bd = h.ok(0, [0x1A, 0, 0, 0, 255, 0])
    assert bd[3] == 8 and bd[4] == DENSITY_CODE and bd[9:12] == (512).to_bytes(3, "big")
    data = b"".join(blk(i, 512) for i in range(4))
    h.ok(0, write6(4, fixed=True), data)
    h.ok(0, wfm(1))
    h.ok(0, write6(1, fixed=True), blk(9, 512))
    assert tell(h) == 6
    h.ok(0, REWIND)
    assert h.ok(0, read6(2, fixed=True)) == data[:1024]
    s, got = h.check(0, read6(8, fixed=True))  # 2 blocks then the filemark
    assert (s.filemark, s.asc, s.ascq, s.information, got) == (True, 0, 1, 6, data[1024:])
    s, got = h.check(0, read6(3, fixed=True))  # 1 block then end of data
    assert (s.key, s.ascq, s.information, got) == (BLANK, 0x05, 2, blk(9, 512))
    s, _ = h.check(0, read6(1, fixed=True, sili=True))
    assert (s.key, s.asc) == (ILLEGAL, 0x24)


def test_fixed_mode_incorrect_length_block(h: Harness) -> None:
    write_blocks(h, [512, 300, 512])
    set_block_length(h, 512)
    h.ok(0, REWIND)
    s, got = h.check(0, read6(3, fixed=True))
    assert s.ili and s.information == 2 and got == blk(0, 512)
    assert tell(h) == 2
    assert h.ok(0, read6(1, fixed=True)) == blk(2, 512)


# -- positioning ------------------------------------------------------------------------------------------


def layout(h: Harness) -> None:
    """objects: 0,1,2 blocks | 3 FM | 4,5 blocks | 6 FM | 7 block | 8 FM ; EOD at 9"""
    write_blocks(h, [100, 100, 100])
    h.ok(0, wfm(1))
    write_blocks(h, [100, 100], 3)
    h.ok(0, wfm(1))
    write_blocks(h, [100], 5)
    h.ok(0, wfm(1))


def test_space_blocks_forward_and_back(h: Harness) -> None:
    layout(h)
    h.ok(0, REWIND)
    h.ok(0, space6(0, 2))
    assert tell(h) == 2
    s, _ = h.check(0, space6(0, 5))  # 1 block then the filemark
    assert (s.filemark, s.asc, s.ascq, s.information) == (True, 0, 1, 4) and tell(h) == 4
    h.ok(0, space6(0, 1))
    s, _ = h.check(0, space6(0, -3))  # back 1 block, then the filemark at 3
    assert s.filemark and s.information == 2 and tell(h) == 3
    h.ok(0, space6(0, -1))
    assert tell(h) == 2
    s, _ = h.check(0, space6(0, -5))
    assert (s.key, s.eom, s.asc, s.ascq, s.information) == (NO_SENSE, True, 0, 4, 3) and tell(h) == 0
    h.ok(0, locate10(7))
    s, _ = h.check(0, space16(0, 10))  # to the filemark at 8, past it
    assert s.filemark and tell(h) == 9
    s, _ = h.check(0, space16(0, 1))  # end of data
    assert (s.key, s.ascq, s.information) == (BLANK, 5, 1)


def test_space_filemarks_and_eod(h: Harness) -> None:
    layout(h)
    h.ok(0, REWIND)
    h.ok(0, space6(1, 2))
    assert tell(h) == 7
    h.ok(0, space6(1, -1))  # BOP side of the filemark at 6
    assert tell(h) == 6
    h.ok(0, space6(1, -1))
    assert tell(h) == 3
    s, _ = h.check(0, space6(1, -2))
    assert (s.eom, s.ascq, s.information) == (True, 4, 2) and tell(h) == 0
    s, _ = h.check(0, space6(1, 5))
    assert (s.key, s.ascq, s.information) == (BLANK, 5, 2) and tell(h) == 9
    h.ok(0, REWIND)
    h.ok(0, space6(3, 0))
    assert tell(h) == 9
    h.ok(0, REWIND)
    h.ok(0, space16(1, 3))
    assert tell(h) == 9
    s, _ = h.check(0, space6(2, 1))  # sequential filemarks: not supported
    assert (s.key, s.asc) == (ILLEGAL, 0x24)


def test_locate_and_read_position_forms(h: Harness) -> None:
    layout(h)
    h.ok(0, REWIND)
    short = h.ok(0, read_position(1))
    assert short == bytes((0x80, 0, 0, 0)) + bytes(16)  # BOP only: no BPU (what Linux st checks)
    h.ok(0, locate10(5))
    short = h.ok(0, read_position(0))
    assert short[0] == 0 and struct.unpack_from(">II", short, 4) == (5, 5) and len(short) == 20
    assert h.ok(0, read6(100)) == blk(4, 100)
    long = h.ok(0, read_position(6))
    assert len(long) == 32 and struct.unpack_from(">QQ", long, 8) == (6, 1)  # object 6, file 1
    ext = h.ok(0, read_position(8, 32))
    assert ext[0] == 0 and struct.unpack_from(">H", ext, 2)[0] == 0x1C
    assert struct.unpack_from(">QQ", ext, 8) == (6, 6)
    assert len(h.ok(0, read_position(8, 10))) == 10  # allocation length honoured
    h.ok(0, locate16(2, dest_type=1))  # file 2 starts after the filemark at 6
    assert tell(h) == 7
    h.ok(0, locate16(0, dest_type=3))
    assert tell(h) == 9
    s, _ = h.check(0, locate10(10))
    assert (s.key, s.asc, s.ascq) == (BLANK, 0, 5) and tell(h) == 9
    s, _ = h.check(0, locate16(2**64 - 1))
    assert s.key == BLANK and tell(h) == 9
    s, _ = h.check(0, locate10(0, cp=True, partition=1))
    assert (s.key, s.asc, s.sks) == (ILLEGAL, 0x24, bytes((0xC0, 0, 8)))  # field pointer: CDB byte 8
    h.ok(0, locate10(0, cp=True, partition=0))
    s, _ = h.check(0, read_position(2))
    assert (s.key, s.asc) == (ILLEGAL, 0x24)


# -- writes: filemarks, overwrite, erase, protection, end of medium ------------------------------------------


def test_write_filemarks_sync_unless_immediate(h: Harness) -> None:
    cart = drive(h).cartridge
    assert cart is not None
    write_blocks(h, [1000])
    assert cart.dirty
    h.ok(0, wfm(1, immed=True))
    assert cart.dirty and tell(h) == 2
    h.ok(0, wfm(0))  # count 0, IMMED 0: flush only
    assert not cart.dirty and tell(h) == 2
    h.ok(0, wfm(2))
    assert not cart.dirty and tell(h) == 4 and cart.filemarks == [1, 2, 3]


def test_writing_in_the_middle_truncates(h: Harness) -> None:
    layout(h)
    h.ok(0, locate10(4))
    h.ok(0, write6(50), blk(77, 50))
    assert tell(h) == 5
    h.ok(0, REWIND)
    h.ok(0, space6(3, 0))
    assert tell(h) == 5  # everything after the new block is gone
    h.ok(0, locate10(4))
    assert h.ok(0, read6(50)) == blk(77, 50)


def test_erase_then_read_is_eod_at_once(h: Harness) -> None:
    layout(h)
    h.ok(0, REWIND)
    h.ok(0, [0x19, 0x01, 0, 0, 0, 0])  # long erase from BOP
    s, _ = h.check(0, read6(100))
    assert (s.key, s.ascq) == (BLANK, 5)
    assert drive(h).cartridge.records == 0  # type: ignore[union-attr]


def test_write_protected_cartridge(lib: Path) -> None:
    path = create_cartridge(str(lib), "WP0001L6", 8 << 20, write_protect=True)
    d = TapeUnit(lun=0)
    h = Harness({0: d})
    try:
        h.run(d.insert(path))
        h.clear_ua(0)
        s, _ = h.check(0, write6(10), bytes(10))
        assert (s.key, s.asc, s.ascq) == (DATA_PROTECT, 0x27, 0x00)
        s, _ = h.check(0, wfm(1))
        assert s.key == DATA_PROTECT
        assert h.ok(0, [0x1A, 0, 0, 0, 255, 0])[2] & 0x80  # WP in the mode header
        s, _ = h.check(0, read6(10))
        assert s.key == BLANK
    finally:
        h.close()


def test_worm_appends_but_never_overwrites(lib: Path) -> None:
    path = create_cartridge(str(lib), "WORM01L6", 8 << 20, worm=True)
    d = TapeUnit(lun=0)
    h = Harness({0: d})
    try:
        h.run(d.insert(path))
        h.clear_ua(0)
        write_blocks(h, [100, 100])
        h.ok(0, wfm(1))
        h.ok(0, REWIND)
        s, _ = h.check(0, write6(10), bytes(10))
        assert (s.key, s.asc, s.ascq) == (DATA_PROTECT, 0x30, 0x0C)
        s, _ = h.check(0, [0x19, 0, 0, 0, 0, 0])
        assert (s.key, s.asc, s.ascq) == (DATA_PROTECT, 0x30, 0x0C)
        h.ok(0, space6(3, 0))
        write_blocks(h, [100])  # appending at end of data is allowed
        attrs = h.ok(0, [0x8C, 0, 0, 0, 0, 0, 0, 0, 0x04, 0x08, 0, 0, 1, 0, 0, 0])
        assert attrs[4:9] == bytes((0x04, 0x08, 0x80, 0, 1)) and attrs[9] == 0x80  # MEDIUM TYPE: WORM
    finally:
        h.close()


def test_early_warning_and_volume_overflow(lib: Path) -> None:
    path = create_cartridge(str(lib), "SMALL1L6", 1 << 20)
    d = TapeUnit(lun=0)
    h = Harness({0: d})
    try:
        h.run(d.insert(path))
        h.clear_ua(0)
        ew = TapeUnit.early_warning(1 << 20)
        chunk = 64 * 1024
        written = 0
        while written + chunk <= ew:
            h.ok(0, write6(chunk), bytes(chunk))
            written += chunk
        s, _ = h.check(0, write6(chunk), bytes(chunk))  # crosses early warning: written, EOM
        assert (s.key, s.eom, s.asc, s.ascq, s.information) == (NO_SENSE, True, 0, 2, 0)
        written += chunk
        pos = h.ok(0, read_position(1))
        assert pos[0] & 0x40 and not pos[0] & 0x04  # EOP region, position known
        s, _ = h.check(0, write6(2 * chunk), bytes(2 * chunk))  # does not fit: nothing written
        assert (s.key, s.eom, s.asc, s.ascq, s.information) == (OVERFLOW, True, 0, 2, 2 * chunk)
        assert d.cartridge is not None and d.cartridge.data_end == written
    finally:
        h.close()


# -- medium control ----------------------------------------------------------------------------------------


def test_unload_load_and_prevent(h: Harness) -> None:
    write_blocks(h, [100])
    h.ok(0, [0x1E, 0, 0, 0, 1, 0])  # PREVENT
    s, _ = h.check(0, [0x1B, 0, 0, 0, 0, 0])
    assert (s.key, s.asc, s.ascq) == (ILLEGAL, 0x53, 0x02)
    h.ok(0, [0x1E, 0, 0, 0, 0, 0])  # ALLOW
    h.ok(0, [0x1B, 0, 0, 0, 0, 0])  # UNLOAD: synced, unthreaded
    assert drive(h).cartridge is not None and not drive(h).cartridge.dirty  # type: ignore[union-attr]
    s, _ = h.check(0, TUR)
    assert (s.key, s.asc) == (NOT_READY, 0x3A)
    h.ok(0, [0x1B, 0, 0, 0, 0x05, 0])  # LOAD + EOT: at end of data
    assert tell(h) == 1
    h.ok(0, [0x1B, 0, 0, 0, 0x03, 0])  # LOAD + RETEN on a loaded cartridge: back at BOP
    assert tell(h) == 0
    s, _ = h.check(0, [0x1B, 0, 0, 0, 0x08, 0])  # HOLD
    assert (s.key, s.asc) == (ILLEGAL, 0x24)
    h.ok(0, REWIND)
    assert tell(h) == 0


# -- mode, log, density, attributes, supported opcodes ----------------------------------------------------------


def test_mode_pages_and_compression(h: Harness) -> None:
    data = h.ok(0, [0x1A, 0x08, 0x0F, 0, 255, 0])  # DBD, data compression page
    assert data[3] == 0 and data[4:6] == bytes((0x0F, 14)) and data[6] & 0x40 and not data[6] & 0x80
    page = bytearray(data[4:])
    page[2] |= 0x80  # DCE
    h.ok(0, [0x15, 0x10, 0, 0, 4 + len(page), 0], bytes((0, 0, 0x10, 0)) + bytes(page))
    assert h.ok(0, [0x1A, 0x08, 0x0F, 0, 255, 0])[6] & 0x80
    assert drive(h).dce
    allpages = h.ok(0, [0x1A, 0x08, 0x3F, 0, 255, 0])
    codes = []
    pos = 4
    while pos < len(allpages):
        codes.append(allpages[pos] & 0x3F)
        pos += allpages[pos + 1] + 2
    assert codes == [0x0A, 0x0F, 0x10, 0x11]
    part = h.ok(0, [0x1A, 0x08, 0x11, 0, 255, 0])
    assert struct.unpack_from(">H", part, 4 + 8)[0] == 8  # 8 MiB partition
    s, _ = h.check(0, [0x15, 0x10, 0, 0, 12, 0], bytes((0, 0, 0x10, 8, 0x42, 0, 0, 0, 0, 0, 2, 0)))
    assert (s.key, s.asc) == (ILLEGAL, 0x26)  # unknown density
    set_block_length(h, 0)


def test_log_pages(h: Harness) -> None:
    write_blocks(h, [4096])
    sup = h.ok(0, [0x4D, 0, 0x00, 0, 0, 0, 0, 0, 255, 0])
    assert sup == bytes((0, 0, 0, 4, 0x00, 0x0C, 0x2E, 0x31))
    alert = h.ok(0, [0x4D, 0, 0x2E, 0, 0, 0, 0, 0x04, 0, 0])
    assert struct.unpack_from(">H", alert, 2)[0] == 64 * 5 and alert[4:9] == bytes((0, 1, 0x03, 1, 0))
    cap = h.ok(0, [0x4D, 0, 0x31, 0, 0, 0, 0, 0, 255, 0])
    params = {
        struct.unpack_from(">H", cap, p)[0]: struct.unpack_from(">I", cap, p + 4)[0]
        for p in range(4, len(cap), 8)
    }
    assert params[3] == 8 and params[1] == 7  # 8 MiB max, 4 KiB used: 7 MiB remaining (floor)
    seq = h.ok(0, [0x4D, 0, 0x0C, 0, 0, 0, 0, 0, 255, 0])
    assert struct.unpack_from(">HBBQ", seq, 4) == (0, 0, 8, 4096)  # data bytes received from the host
    after = h.ok(0, [0x4D, 0, 0x0C, 0, 0, 0x01, 0x00, 0, 255, 0])  # PARAMETER POINTER 0100h
    assert struct.unpack_from(">H", after, 4)[0] == 0x0100 and len(after) == 4 + 12
    s, _ = h.check(0, [0x4D, 0x01, 0x0C, 0, 0, 0, 0, 0, 255, 0])  # SP
    assert (s.key, s.asc) == (ILLEGAL, 0x24)
    s, _ = h.check(0, [0x4D, 0, 0x17, 0, 0, 0, 0, 0, 255, 0])
    assert (s.key, s.asc) == (ILLEGAL, 0x24)


def test_report_density_support(h: Harness) -> None:
    data = h.ok(0, [0x44, 0, 0, 0, 0, 0, 0, 0, 255, 0])
    assert struct.unpack_from(">H", data)[0] == 54 and len(data) == 56
    assert data[4] == data[5] == DENSITY_CODE and data[6] == 0xA0
    assert data[36:56] == b"cistern virtual tape"


def test_mam_attributes_read_and_write(h: Harness) -> None:
    def read_attrs(first: int = 0) -> dict[int, bytes]:
        data = h.ok(0, [0x8C, 0, 0, 0, 0, 0, 0, 0, first >> 8, first & 0xFF, 0, 0, 4, 0, 0, 0])
        out = {}
        pos = 4
        while pos < 4 + struct.unpack_from(">I", data)[0]:
            ident, _, n = struct.unpack_from(">HBH", data, pos)
            out[ident] = data[pos + 5 : pos + 5 + n]
            pos += 5 + n
        return out

    attrs = read_attrs()
    assert attrs[0x0401].rstrip() == b"CIS001L6" and attrs[0x0806].rstrip() == b"CIS001L6"
    assert struct.unpack(">Q", attrs[0x0003])[0] == 1  # load count
    assert struct.unpack(">Q", attrs[0x0001])[0] == 8
    vendor = struct.pack(">HBH", 0x0800, 0x01, 8) + b"BACULA  "
    h.ok(
        0,
        [0x8D, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4 + len(vendor), 0, 0],
        struct.pack(">I", len(vendor)) + vendor,
    )
    assert read_attrs(0x0800)[0x0800] == b"BACULA  "
    meta = Cartridge(str(Path(drive(h).cartridge.path)))  # type: ignore[union-attr]
    assert meta.meta["attributes"] == {"0800": b"BACULA  ".hex()}
    meta.close()
    ro = struct.pack(">HBH", 0x0003, 0x00, 8) + bytes(8)  # LOAD COUNT is read only
    s, _ = h.check(
        0, [0x8D, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4 + len(ro), 0, 0], struct.pack(">I", len(ro)) + ro
    )
    assert (s.key, s.asc) == (ILLEGAL, 0x26)
    ids = h.ok(0, [0x8C, 0x05, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0])
    assert 0x0806 in struct.unpack_from(f">{(len(ids) - 4) // 2}H", ids, 4)
    assert h.ok(0, [0x8C, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]) == bytes((0, 2, 0, 1))
    s, _ = h.check(0, [0x8C, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0])  # partition 1
    assert (s.key, s.asc) == (ILLEGAL, 0x24)


def test_report_supported_opcodes_is_the_tape_table(h: Harness) -> None:
    data = h.ok(0, [0xA3, 0x0C, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0])
    n = struct.unpack_from(">I", data)[0] // 8
    ops = {data[4 + 8 * i] for i in range(n)}
    assert {0x01, 0x05, 0x08, 0x0A, 0x10, 0x11, 0x19, 0x1B, 0x2B, 0x34, 0x44, 0x4D, 0x8C, 0x91, 0x92} <= ops
    assert 0x28 not in ops and 0x25 not in ops  # no block commands on a tape


# -- hostile CDBs ------------------------------------------------------------------------------------------------


def test_hostile_lengths_get_sense(h: Harness) -> None:
    s, _ = h.check(0, read6(0xFFFFFF))  # 16 MiB variable block: beyond the limit
    assert (s.key, s.asc) == (ILLEGAL, 0x24)
    set_block_length(h, 512)
    s, _ = h.check(0, read6(0xFFFFFF, fixed=True))
    assert (s.key, s.asc) == (ILLEGAL, 0x24)
    s, _ = h.check(0, write6(0xFFFFFF, fixed=True), bytes(512))
    assert (s.key, s.asc) == (ILLEGAL, 0x24)
    set_block_length(h, 0)
    s, _ = h.check(0, write6(4096), bytes(100))  # less data than the CDB says
    assert s.key == ILLEGAL
    s, _ = h.check(0, space16(0, 2**63 - 1))
    assert s.key == BLANK
    s, _ = h.check(0, space16(0, -(2**63)))
    assert s.eom and tell(h) == 0
    s, _ = h.check(0, space6(1, -(2**23)))
    assert s.eom
    s, _ = h.check(0, wfm(0xFFFFFF))
    assert (s.key, s.asc) == (ILLEGAL, 0x24)
    s, _ = h.check(0, [0x08, 0x04, 0, 0, 1, 0])  # reserved bit
    assert (s.key, s.asc, s.sks[0] & 0x80) == (ILLEGAL, 0x24, 0x80)
    s, _ = h.check(0, [0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0])  # READ(10) is a disk command
    assert (s.key, s.asc) == (ILLEGAL, 0x20)
    s, _ = h.check(0, [0x34, 0x06])  # truncated CDB
    assert s.key == ILLEGAL


def test_corrupted_block_is_medium_error(h: Harness) -> None:
    write_blocks(h, [1000, 1000])
    h.ok(0, wfm(1))
    cart = drive(h).cartridge
    assert cart is not None
    with open(os.path.join(cart.path, "data"), "r+b") as f:
        f.seek(10)
        f.write(b"\xff\xfe")
    h.ok(0, REWIND)
    s, _ = h.check(0, read6(1000))
    assert (s.key, s.asc) == (MEDIUM_ERROR, 0x11)
    assert h.ok(0, read6(1000)) == blk(1, 1000)


def test_descriptor_sense_carries_stream_bits(h: Harness) -> None:
    h.ok(0, wfm(1))
    control = bytearray(h.ok(0, [0x1A, 0x08, 0x0A, 0, 255, 0])[4:])
    control[2] |= 0x04  # D_SENSE
    h.ok(0, [0x15, 0x10, 0, 0, 4 + len(control), 0], bytes(4) + bytes(control))
    h.ok(0, REWIND)
    res = h.cmd(0, read6(100))
    assert res.status == Status.CHECK_CONDITION and res.sense is not None
    sense = bytes(res.sense)
    assert sense[0] == 0x72 and sense[2:4] == b"\x00\x01"
    assert bytes((0x04, 0x02, 0x00, 0x80)) in sense  # stream commands descriptor with FILEMARK


def test_compression_stores_fewer_bytes_and_reads_back(h: Harness) -> None:
    page = bytearray(h.ok(0, [0x1A, 0x08, 0x0F, 0, 255, 0])[4:])
    page[2] |= 0x80  # DCE
    h.ok(0, [0x15, 0x10, 0, 0, 4 + len(page), 0], bytes((0, 0, 0x10, 0)) + bytes(page))
    text = b"cistern tape " * 5000  # 65000 bytes
    h.ok(0, write6(len(text)), text)
    h.ok(0, wfm(1))
    cart = drive(h).cartridge
    assert cart is not None and cart.data_end < len(text) // 10
    seq = h.ok(0, [0x4D, 0, 0x0C, 0, 0, 0, 0, 0, 255, 0])
    from_host, written = struct.unpack_from(">Q", seq, 8)[0], struct.unpack_from(">Q", seq, 20)[0]
    assert from_host == len(text) and written == cart.data_end
    h.ok(0, REWIND)
    s, data = h.check(0, read6(1000))  # overlength compressed block: truncated, negative residue
    assert s.ili and s.information == 1000 - len(text) and data == text[:1000]
    h.ok(0, REWIND)
    assert h.ok(0, read6(len(text))) == text


def test_load_reports_a_recovered_cartridge(lib: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = create_cartridge(str(lib), "TORN01L6", 8 << 20)
    cart = Cartridge(path)
    for i in range(3):
        cart.append_block(blk(i, 500))
    cart.close()
    os.truncate(os.path.join(path, "data"), 1200)  # the last block lost its end
    d = TapeUnit(lun=0)
    h = Harness({0: d})
    try:
        h.run(d.insert(path))
        assert "TORN01L6: 1 trailing object(s)" in caplog.text
        h.clear_ua(0)
        h.ok(0, space6(3, 0))
        assert tell(h) == 2
    finally:
        h.close()


# -- server start: the cartridge is back in the drive, unloaded --------------------------------------------

#: NOT READY, MEDIUM NOT PRESENT (02/3A/00), fixed format, no INFORMATION: what an unloaded drive answers.
NOT_LOADED_SENSE = bytes((0x70, 0, 0x02, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x3A, 0x00, 0, 0, 0, 0))


def _acked_then_buffered(path: str) -> TapeUnit:
    """A drive that wrote file 0 (3 blocks + an acknowledged filemark) and 2 blocks of file 1 (buffered,
    never synced), left open as a killed process leaves it."""
    d = TapeUnit(lun=0)
    h = Harness({0: d})
    h.run(d.insert(path))
    h.clear_ua(0)
    write_blocks(h, [1000, 1001, 1002])
    h.ok(0, wfm(1))
    write_blocks(h, [2000, 2001], start=10)
    h.loop.close()
    return d


def test_restart_comes_back_unloaded_until_load(lib: Path) -> None:
    """After a restart (kill -9 here) the drive holds the cartridge but is not READY: every medium
    access command (TUR, READ, WRITE, WRITE FILEMARKS, REWIND, SPACE, LOCATE, READ POSITION, ERASE)
    answers NOT READY 02/3A/00 and changes nothing, so a host that still believes it is in the middle
    of the tape cannot write at BOP.  LOAD threads it at BOP; the cartridge ends at the acknowledged
    filemark (the buffered blocks after it went with the "drive's buffer") and READ there reports
    END-OF-DATA; a host that rewinds explicitly may then overwrite from BOP."""
    path = create_cartridge(str(lib), "CIS001L6", 8 << 20)
    crashed = _acked_then_buffered(path)
    d = TapeUnit(lun=0)
    d.insert_now(path)  # what build_tape_luns does at server start
    h = Harness({0: d})
    try:
        assert d.cartridge is not None and d.cartridge.records == 4 and d.cartridge.recovered == 2
        load_count = d.cartridge.load_count
        s, _ = h.check(0, TUR)  # the power-on unit attention first
        assert (s.key, s.asc, s.ascq) == (UA, 0x29, 0x00)
        for cdb, data in (
            (TUR, None), (read6(65536), None), (write6(512), bytes(512)), (wfm(1), None), (wfm(0), None),
            (REWIND, None), (space6(3, 0), None), (space6(1, 1), None), (locate10(0), None),
            (read_position(0), None), (read_position(6), None), ([0x19, 1, 0, 0, 0, 0], None),
        ):  # fmt: skip
            res = h.cmd(0, cdb, data)
            assert res.status == Status.CHECK_CONDITION and bytes(res.sense or b"") == NOT_LOADED_SENSE, (
                bytes(cdb).hex(),
                (res.sense or b"").hex(),
            )
        assert d.cartridge.records == 4 and not d.cartridge.dirty  # nothing written, nothing truncated
        rs = h.ok(0, [0x03, 0, 0, 0, 18, 0])  # REQUEST SENSE reports the same, as data
        assert rs == NOT_LOADED_SENSE
        h.ok(0, [0x12, 0, 0, 0, 96, 0])  # INQUIRY, READ BLOCK LIMITS, MODE SENSE still answer
        h.ok(0, [0x05, 0, 0, 0, 0, 0])
        h.ok(0, [0x1A, 0, 0, 0, 12, 0])
        h.ok(0, [0x1B, 0, 0, 0, 0x01, 0])  # LOAD
        assert d.cartridge.load_count == load_count + 1
        assert h.ok(0, read_position(0))[0] & 0x80 and tell(h) == 0  # BOP
        assert [h.ok(0, read6(n)) for n in (1000, 1001, 1002)] == [blk(i, 1000 + i) for i in range(3)]
        s, _ = h.check(0, read6(4096))
        assert s.filemark and tell(h) == 4
        res = h.cmd(0, read6(4096))  # then END-OF-DATA at once: BLANK CHECK 00/05, INFORMATION 4096
        assert bytes(res.sense or b"") == bytes(
            (0xF0, 0, 0x08, 0, 0, 0x10, 0, 10, 0, 0, 0, 0, 0x00, 0x05, 0, 0, 0, 0)
        )
        h.ok(0, write6(300), blk(7, 300))  # appending after END-OF-DATA continues file 1
        h.ok(0, wfm(1))
        assert d.cartridge.records == 6
        h.ok(0, REWIND)  # an explicit rewind makes a write at BOP legitimate
        h.ok(0, write6(100), blk(9, 100))
        assert d.cartridge.records == 1
    finally:
        h.close()
        assert crashed.cartridge is not None
        os.close(crashed.cartridge._data)
        os.close(crashed.cartridge._index)
        os.close(crashed.cartridge._mark)


def test_clean_restart_is_unloaded_too(lib: Path) -> None:
    """A clean stop syncs everything, but the host's idea of the position is just as stale: the drive
    is unloaded at start all the same; a LOAD with EOT positions at end of data to append."""
    path = create_cartridge(str(lib), "CIS001L6", 8 << 20)
    d = TapeUnit(lun=0)
    h = Harness({0: d})
    h.run(d.insert(path))
    h.clear_ua(0)
    write_blocks(h, [100, 200])
    h.close()
    d = TapeUnit(lun=0)
    d.insert_now(path)
    h = Harness({0: d})
    try:
        h.clear_ua(0)
        assert bytes(h.cmd(0, TUR).sense or b"") == NOT_LOADED_SENSE
        h.ok(0, [0x1B, 0, 0, 0, 0x05, 0])  # LOAD + EOT
        assert tell(h) == 2
    finally:
        h.close()
