"""Sense data encoding (SPC-4 4.5): fixed and descriptor formats, INFORMATION, field pointers."""

from __future__ import annotations

from cistern.scsi.sense import (
    LBA_OUT_OF_RANGE,
    MISCOMPARE_DURING_VERIFY,
    SenseKey,
    build_sense,
    field_pointer,
    invalid_field,
)


def test_fixed_format_layout() -> None:
    s = build_sense(SenseKey.ILLEGAL_REQUEST, LBA_OUT_OF_RANGE)
    assert s == bytes((0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x21, 0, 0, 0, 0, 0))


def test_fixed_format_information_sets_valid() -> None:
    s = build_sense(SenseKey.MISCOMPARE, MISCOMPARE_DURING_VERIFY, information=0x1234)
    assert s[0] == 0xF0 and s[3:7] == b"\x00\x00\x12\x34" and s[2] == 0x0E and s[12:14] == b"\x1d\x00"
    big = build_sense(SenseKey.MISCOMPARE, MISCOMPARE_DURING_VERIFY, information=1 << 40)
    assert big[0] == 0x70  # does not fit: VALID clear


def test_descriptor_format_with_information_and_field_pointer() -> None:
    s = build_sense(
        SenseKey.ILLEGAL_REQUEST, (0x24, 0x00), descriptor=True, information=7, sks=field_pointer(2, 5)
    )
    assert s[:8] == bytes((0x72, 0x05, 0x24, 0x00, 0, 0, 0, 20))
    assert s[8:20] == bytes((0x00, 0x0A, 0x80, 0)) + (7).to_bytes(8, "big")
    assert s[20:28] == bytes((0x02, 0x06, 0, 0, 0xCD, 0x00, 0x02, 0))


def test_invalid_field_sense_key_specific() -> None:
    cc = invalid_field(300)
    fixed = cc.sense(False)
    assert fixed[15:18] == bytes((0xC0, 0x01, 0x2C))
