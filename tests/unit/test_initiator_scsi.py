"""Initiator SCSI pieces without a network: CDB choice, sense decoding, status mapping, data parsers, URLs."""

from __future__ import annotations

import struct

import pytest

from cistern.initiator import cdb
from cistern.initiator.errors import (
    Miscompare,
    ReservationConflict,
    ScsiCheckCondition,
    TargetBusy,
    UnitAttention,
)
from cistern.initiator.scsi_data import (
    parse_inquiry,
    parse_read_capacity_10,
    parse_read_capacity_16,
    parse_report_luns,
    parse_vpd,
)
from cistern.initiator.sense import decode_sense
from cistern.initiator.task import ScsiResult, raise_for_status
from cistern.initiator.url import UrlError, parse_portal, parse_url


@pytest.mark.parametrize(
    ("lba", "blocks", "size", "opcode"),
    [
        (0, 1, 6, 0x08),
        ((1 << 21) - 1, 256, 6, 0x08),
        (1 << 21, 1, 10, 0x28),
        (0, 257, 10, 0x28),
        (0xFFFFFFFF, 0xFFFF, 10, 0x28),
        (1 << 32, 1, 16, 0x88),
        (0, 0x10000, 16, 0x88),
    ],
)
def test_read_cdb_picks_the_smallest_form(lba: int, blocks: int, size: int, opcode: int) -> None:
    got = cdb.read(lba, blocks)
    assert len(got) == size and got[0] == opcode
    if size == 6:
        assert int.from_bytes(got[1:4], "big") == lba and got[4] == blocks % 256
    elif size == 10:
        assert struct.unpack(">IxH", got[2:9]) == (lba, blocks)
    else:
        assert struct.unpack(">QI", got[2:14]) == (lba, blocks)


def test_write_cdb_with_fua_skips_the_6_byte_form() -> None:
    got = cdb.write(0, 1, fua=True)
    assert got[0] == 0x2A and got[1] & 0x08


def test_compare_and_write_and_unmap_layouts() -> None:
    caw = cdb.compare_and_write(5, 2)
    assert caw[0] == 0x89 and int.from_bytes(caw[2:10], "big") == 5 and caw[13] == 2
    params = cdb.unmap_parameters([(10, 4), (100, 8)])
    assert len(params) == 8 + 32 and int.from_bytes(params[2:4], "big") == 32
    assert struct.unpack(">QI", params[8:20]) == (10, 4)


def test_fixed_and_descriptor_sense_decode() -> None:
    fixed = bytes([0xF0, 0, 0x05, 0, 0, 0, 7, 10, 0, 0, 0, 0, 0x24, 0x00]) + bytes(4)
    s = decode_sense(fixed)
    assert (s.key, s.asc, s.ascq, s.information) == (5, 0x24, 0, 7) and s.valid
    desc = bytes([0x72, 0x06, 0x29, 0x07, 0, 0, 0, 12, 0x00, 10, 0x80, 0]) + (42).to_bytes(8, "big")
    s = decode_sense(desc)
    assert (s.key, s.asc, s.ascq, s.information, s.descriptor_format) == (6, 0x29, 7, 42, True)


@pytest.mark.parametrize(
    "raw", [b"", b"\x70", b"\x00" * 30, b"\x72\x05", b"\x72" + b"\xff" * 40, bytes(range(256))]
)
def test_hostile_sense_never_raises(raw: bytes) -> None:
    decode_sense(raw)


def _result(status: int, sense: bytes = b"") -> ScsiResult:
    return ScsiResult(status, memoryview(b""), 0, decode_sense(sense) if sense else None)


def test_status_maps_to_typed_errors() -> None:
    illegal = bytes([0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x20, 0x00])
    with pytest.raises(ScsiCheckCondition) as info:
        raise_for_status(_result(2, illegal))
    assert (info.value.sense_key, info.value.asc, info.value.ascq) == (5, 0x20, 0)
    ua = bytes([0x70, 0, 0x06, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x29, 0x07])
    with pytest.raises(UnitAttention):
        raise_for_status(_result(2, ua))
    mis = bytes([0x70, 0, 0x0E, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x1D, 0x00])
    with pytest.raises(Miscompare):
        raise_for_status(_result(2, mis))
    with pytest.raises(ReservationConflict):
        raise_for_status(_result(0x18))
    with pytest.raises(TargetBusy):
        raise_for_status(_result(0x28))
    assert raise_for_status(_result(0)).status == 0


def test_parsers() -> None:
    inq = parse_inquiry(bytes([0, 0x80, 5, 2, 31, 0, 0, 0]) + b"VENDOR  PRODUCT         REV1")
    assert (inq.device_type_name, inq.removable, inq.vendor, inq.product, inq.revision) == (
        "disk",
        True,
        "VENDOR",
        "PRODUCT",
        "REV1",
    )
    assert parse_read_capacity_10(struct.pack(">II", 99, 512)).size == 100 * 512
    cap = parse_read_capacity_16(struct.pack(">QIBBH", 999, 4096, 0, 0x03, 0x8000) + bytes(16))
    assert (cap.blocks, cap.block_size, cap.thin_provisioned, cap.lbppbe) == (1000, 4096, True, 3)
    luns = struct.pack(">I4x", 24) + (0).to_bytes(8, "big") + (1 << 48).to_bytes(8, "big")
    luns += ((0x4000 | 300) << 48).to_bytes(8, "big")
    assert parse_report_luns(luns) == [0, 1, 300]
    # a length field claiming more than was sent is clipped, not trusted
    assert parse_report_luns(struct.pack(">I4x", 1 << 30) + (2 << 48).to_bytes(8, "big")) == [2]
    vpd = parse_vpd(bytes([0, 0x83, 0, 12, 2, 1, 0, 8]) + b"ABCDEFGH")
    assert vpd.designators == [(2, 1, b"ABCDEFGH")]
    with pytest.raises(ValueError):
        parse_inquiry(b"\x00")


def test_urls() -> None:
    url = parse_url("iscsi://bob%s3cret@10.0.0.1:3261/iqn.2024-01.org.x:disk/7")
    assert (url.host, url.port, url.target, url.lun) == ("10.0.0.1", 3261, "iqn.2024-01.org.x:disk", 7)
    assert url.chap is not None and (url.chap.user, url.chap.secret) == ("bob", "s3cret")
    assert parse_url("iscsi://[::1]/iqn.x/0").host == "::1"
    assert parse_url("iscsi://host").port == 3260 and parse_url("iscsi://host").target is None
    assert parse_portal("[fe80::1]:99") == ("fe80::1", 99)
    for bad in ("http://x", "iscsi://host:0/t/1", "iscsi://host/t/x", "iscsi://user@host/t/1"):
        with pytest.raises(UrlError):
            parse_url(bad)


def test_get_lba_status_cdb_and_parameter_data() -> None:
    from cistern.initiator.cdb import get_lba_status
    from cistern.initiator.scsi_data import parse_lba_status

    cdb = get_lba_status(0x1234, 4096)
    assert cdb[0] == 0x9E and cdb[1] == 0x12 and int.from_bytes(cdb[2:10], "big") == 0x1234
    assert int.from_bytes(cdb[10:14], "big") == 4096 and len(cdb) == 16
    descriptors = (0).to_bytes(8, "big") + (8).to_bytes(4, "big") + bytes([1, 0, 0, 0])
    descriptors += (8).to_bytes(8, "big") + (24).to_bytes(4, "big") + bytes([0, 0, 0, 0])
    data = (4 + len(descriptors)).to_bytes(4, "big") + bytes(4) + descriptors
    assert parse_lba_status(data) == [(0, 8, 1), (8, 24, 0)]
    assert parse_lba_status(data[:20]) == []  # a truncated descriptor is not invented
