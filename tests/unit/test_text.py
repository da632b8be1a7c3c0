"""RFC 7143 6.1 text data segment: parsing, encoding, limits, continuation, value encodings."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cistern.wire.text import (
    MAX_TEXT_LENGTH,
    NO_VALUE,
    TextAccumulator,
    TextError,
    decode_binary,
    decode_boolean,
    decode_number,
    encode_base64,
    encode_hex,
    encode_send_targets,
    encode_text,
    parse_send_targets,
    parse_target_address,
    parse_text,
    split_list,
    split_text,
)


def test_parse_pairs_in_order() -> None:
    data = b"InitiatorName=iqn.2024-01.org.example:a\x00SessionType=Normal\x00X-vendor.key=v=w\x00"
    assert parse_text(data) == [
        ("InitiatorName", "iqn.2024-01.org.example:a"),
        ("SessionType", "Normal"),
        ("X-vendor.key", "v=w"),
    ]


def test_parse_tolerates_missing_final_nul_and_padding() -> None:
    assert parse_text(b"A=1\x00B=2") == [("A", "1"), ("B", "2")]
    assert parse_text(b"A=1\x00\x00\x00\x00") == [("A", "1")]
    assert parse_text(b"") == []


def test_parse_keeps_duplicates_and_empty_values() -> None:
    assert parse_text(b"SendTargets=\x00A=1\x00A=2\x00") == [("SendTargets", ""), ("A", "1"), ("A", "2")]


def test_iana_vendor_key() -> None:
    assert parse_text(b"X#com.example=1\x00") == [("X#com.example", "1")]


@pytest.mark.parametrize(
    "data",
    [
        b"=value\x00",
        b"lowercase\x00",  # no "=" and not a key name either
        b"lowercase=1\x00",
        b"Bad Key=1\x00",
        b"Bad#Key=1\x00",
        b"Key=\xff\xfe\x00",
        b"K\xc3\xa9y=1\x00",
        b"A" * 64 + b"=1\x00",
        b"A=" + b"v" * 8193 + b"\x00",
    ],
)
def test_malformed_raises_text_error(data: bytes) -> None:
    with pytest.raises(TextError):
        parse_text(data)


def test_key_without_equals_has_no_value() -> None:
    """RFC 7143 6.1: a key name alone is a key without a value, answered for that key (NO_VALUE)."""
    assert parse_text(b"NoEquals\x00A=1\x00Empty=\x00") == [("NoEquals", NO_VALUE), ("A", "1"), ("Empty", "")]
    with pytest.raises(TextError):  # never sent back
        encode_text([("NoEquals", NO_VALUE)])


def test_limits() -> None:
    assert parse_text(b"A" * 63 + b"=1\x00")[0][0] == "A" * 63
    assert parse_text(b"A=" + b"v" * 8192 + b"\x00")[0][1] == "v" * 8192
    with pytest.raises(TextError):
        parse_text(b"A=1\x00" * 1025)
    with pytest.raises(TextError):
        parse_text(b"A=" + b"v" * MAX_TEXT_LENGTH)


def test_utf8_values() -> None:
    assert parse_text("InitiatorAlias=café\x00".encode()) == [("InitiatorAlias", "café")]


def test_encode_roundtrip_and_refusals() -> None:
    pairs = [("TargetName", "iqn.x"), ("InitiatorAlias", "é")]
    assert encode_text(pairs) == "TargetName=iqn.x\x00InitiatorAlias=é\x00".encode()
    assert parse_text(encode_text(pairs)) == pairs
    with pytest.raises(TextError):
        encode_text([("A", "a\x00b")])
    with pytest.raises(TextError):
        encode_text([("bad", "1")])


def test_accumulator_joins_key_value_split_across_pdus() -> None:
    acc = TextAccumulator()
    assert acc.feed(b"MaxBurstLen", final=False) is None
    assert acc.pending
    assert acc.feed(b"gth=2621", final=False) is None
    assert acc.feed(b"44\x00A=1\x00", final=True) == [("MaxBurstLength", "262144"), ("A", "1")]
    assert not acc.pending


def test_accumulator_bounds_total() -> None:
    acc = TextAccumulator(max_total=100)
    acc.feed(b"A=" + b"x" * 60, final=False)
    with pytest.raises(TextError):
        acc.feed(b"x" * 60, final=False)


def test_split_text() -> None:
    data = encode_text([("A", "x" * 10)])
    pieces = split_text(data, 5)
    assert b"".join(pieces) == data and all(len(p) <= 5 for p in pieces)
    assert split_text(b"", 5) == [b""]


def test_numbers() -> None:
    assert decode_number("262144") == 262144
    assert decode_number("0x40000") == 262144
    assert decode_number("0X1") == 1
    assert decode_number("0bAAQAAA==") == 262144
    assert decode_number("18446744073709551615") == 2**64 - 1
    for bad in ("", "-1", "1.0", "abc", "0x", "0xzz", "18446744073709551616", "0x" + "f" * 17, " 1"):
        with pytest.raises(TextError):
            decode_number(bad)
    with pytest.raises(TextError):
        decode_number("256", maximum=255)


def test_binary_values() -> None:
    assert decode_binary("0x0a0B") == b"\x0a\x0b"
    assert decode_binary("0xabc") == b"\x0a\xbc"
    assert decode_binary(encode_hex(b"\x01\x02")) == b"\x01\x02"
    assert decode_binary(encode_base64(b"\xff" * 20)) == b"\xff" * 20
    for bad in ("1234", "0x", "0b", "0bA", "0b@@@@", "0xgg"):
        with pytest.raises(TextError):
            decode_binary(bad)
    with pytest.raises(TextError):
        decode_binary("0x" + "00" * 1025)


def test_boolean_and_list() -> None:
    assert decode_boolean("Yes") is True and decode_boolean("No") is False
    with pytest.raises(TextError):
        decode_boolean("yes")
    assert split_list("CRC32C,None") == ["CRC32C", "None"]
    with pytest.raises(TextError):
        split_list("CRC32C,,None")


def test_send_targets_roundtrip() -> None:
    data = encode_send_targets([("iqn.a", [("127.0.0.1", 3260, 1), ("::1", 3261, 2)]), ("iqn.b", [])])
    assert data == (
        b"TargetName=iqn.a\x00TargetAddress=127.0.0.1:3260,1\x00TargetAddress=[::1]:3261,2\x00"
        b"TargetName=iqn.b\x00"
    )
    assert parse_send_targets(parse_text(data)) == [
        ("iqn.a", [("127.0.0.1", 3260, 1), ("::1", 3261, 2)]),
        ("iqn.b", []),
    ]
    assert parse_target_address("host") == ("host", 3260, 1)
    with pytest.raises(TextError):
        parse_target_address("host:99999,1")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_only_raise_text_error(data: bytes) -> None:
    try:
        pairs = parse_text(data)
    except TextError:
        return
    if any(value == NO_VALUE for _, value in pairs):
        with pytest.raises(TextError):
            encode_text(pairs)
        return
    assert parse_text(encode_text(pairs)) == pairs


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_value_decoders_only_raise_text_error(value: str) -> None:
    for fn in (decode_number, decode_binary, decode_boolean, split_list):
        try:
            fn(value)  # type: ignore[operator]
        except TextError:
            pass
