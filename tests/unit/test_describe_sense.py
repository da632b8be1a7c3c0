"""``describe_sense``: the text the target's debug log gives a CHECK CONDITION (the tape VM test greps it)."""

from __future__ import annotations

from cistern.scsi.sense import CheckCondition, SenseKey
from cistern.target.engine import describe_sense


def test_fixed_and_descriptor_sense() -> None:
    cc = CheckCondition(SenseKey.ILLEGAL_REQUEST, (0x24, 0x00))
    assert describe_sense(cc.sense(False)) == "ILLEGAL REQUEST 24/00"
    assert describe_sense(cc.sense(True)) == "ILLEGAL REQUEST 24/00"
    assert describe_sense(bytes([0x70, 0, 0x08] + [0] * 9 + [0x00, 0x05])) == "BLANK CHECK 00/05"


def test_hostile_sense_never_raises() -> None:
    assert describe_sense(None) == "no sense data"
    assert describe_sense(b"\x70\x00") == "no sense data"
    assert describe_sense(b"\x70\x00\x05\x00\x00") == "short sense 7000050000"
    assert describe_sense(b"\xf2\xff\x00\x00") == "0xF 00/00"
