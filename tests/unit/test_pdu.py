"""Byte-level tests of the PDU codec and the framer (RFC 7143 section 11)."""

from __future__ import annotations

import dataclasses

import crc32c
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cistern.wire import pdu as P
from cistern.wire.constants import BHS_LEN, Opcode, RejectReason
from cistern.wire.framing import FramingError, HeaderDigestError, PduReader, crc32c_digest, frame_pdu


def test_every_opcode_round_trips() -> None:
    for opcode in Opcode:
        cls = P.pdu_class(opcode)
        assert cls is not None, opcode
        pdu = cls()
        raw = pdu.encode_header()
        assert len(raw) == BHS_LEN
        assert raw[0] & 0x3F == opcode
        assert P.decode_bhs(raw) == pdu


@pytest.mark.parametrize("cls", [P.ScsiCommand, P.DataOut])
def test_written_constructors_take_every_field_with_its_default(cls: type[P.PDU]) -> None:
    """ScsiCommand and DataOut have hand-written __init__s (the framer builds one per command): they must
    take exactly the dataclass fields, positionally in layout order, with the fields' defaults."""
    fields = dataclasses.fields(cls)
    plain = cls()
    for f in fields:
        assert getattr(plain, f.name) == f.default, f.name
    values: dict[str, object] = {}
    for i, f in enumerate(fields):  # a distinct value of each field's kind
        values[f.name] = (
            bytes([i + 1]) * (len(f.default) or 4)
            if isinstance(f.default, bytes)
            else (i + 1 if f.name != "immediate" else True)
        )
    built = cls(**values)
    assert {f.name: getattr(built, f.name) for f in fields} == values
    positional = [values[f.name] for f in fields if not f.kw_only]
    assert cls(*positional, immediate=True, ahs=values["ahs"], data=values["data"]) == built
    with pytest.raises(TypeError):
        cls(*positional, True)  # immediate, ahs and data are keyword-only
    raw = built.encode_header()
    assert P.decode_bhs(raw[:BHS_LEN], bytes(raw[BHS_LEN:])) == dataclasses.replace(built, data=b"")


def test_scsi_command_field_offsets() -> None:
    cdb = bytes([0x28, 0, 0, 0, 0, 1, 0, 0, 8, 0]) + bytes(6)
    cmd = P.ScsiCommand(0xC1, P.encode_lun(1), 0x11223344, 4096, 7, 9, cdb, immediate=True, data=b"xyz")
    raw = cmd.encode_header()
    assert raw[0] == 0x41  # I bit + opcode 1
    assert raw[1] == 0xC1
    assert raw[5:8] == b"\x00\x00\x03"
    assert raw[8:16] == bytes([0, 1, 0, 0, 0, 0, 0, 0])
    assert raw[16:20] == bytes.fromhex("11223344")
    assert int.from_bytes(raw[20:24], "big") == 4096
    assert int.from_bytes(raw[24:28], "big") == 7
    assert int.from_bytes(raw[28:32], "big") == 9
    assert bytes(raw[32:48]) == cdb
    back = P.decode(cmd.encode())
    assert back.read and not back.write and back.attribute == 1 and back.data == b"xyz"


def test_login_response_status_and_flags() -> None:
    rsp = P.LoginResponse(P.login_flags(True, False, 1, 3), 0, 0, b"\x80\x00\x00\x00\x00\x01", 5, 3)
    rsp.status_class, rsp.status_detail = 2, 1
    raw = rsp.encode_header()
    assert raw[1] == 0x87
    assert raw[36:38] == b"\x02\x01"
    back = P.decode_bhs(raw)
    assert isinstance(back, P.LoginResponse)
    assert back.transit and not back.cont and back.csg == 1 and back.nsg == 3


def test_lun_encoding() -> None:
    assert P.encode_lun(0) == 0
    assert P.decode_lun(P.encode_lun(5)) == 5
    assert P.encode_lun(300) >> 56 == 0x41
    assert P.decode_lun(P.encode_lun(300)) == 300
    assert P.decode_lun(0x0001_0000_0000_0001) == -1  # multi-level addressing is not ours
    with pytest.raises(ValueError):
        P.encode_lun(20000)


def test_unknown_opcode_is_reported_not_raised_by_reader() -> None:
    raw = bytearray(BHS_LEN)
    raw[0] = 0x1C  # not an iSCSI opcode
    raw[7] = 5  # 5 bytes of data (padded to 8)
    reader = PduReader()
    frames = reader.feed(bytes(raw) + b"hello\0\0\0" + P.NopOut(itt=1).encode())
    assert len(frames) == 2
    assert frames[0].pdu is None and frames[0].error is not None
    assert frames[0].error.reason == RejectReason.COMMAND_NOT_SUPPORTED
    assert isinstance(frames[1].pdu, P.NopOut)  # still in sync after the bad PDU


def test_reader_byte_at_a_time_with_digests() -> None:
    pdu = P.TextRequest(itt=3, data=b"SendTargets=All\0")
    wire = b"".join(bytes(b) for b in frame_pdu(pdu, header_digest=True, data_digest=True))
    reader = PduReader(header_digest=True, data_digest=True)
    frames = []
    for i in range(len(wire)):
        frames += reader.feed(wire[i : i + 1])
    assert len(frames) == 1
    assert frames[0].data_digest_ok
    assert bytes(frames[0].pdu.data) == b"SendTargets=All\0"  # type: ignore[union-attr]


def test_header_digest_mismatch_is_fatal() -> None:
    wire = bytearray(b"".join(bytes(b) for b in frame_pdu(P.NopOut(itt=1), header_digest=True)))
    wire[50] ^= 1
    with pytest.raises(HeaderDigestError):
        PduReader(header_digest=True).feed(bytes(wire))


def test_data_digest_mismatch_is_flagged() -> None:
    wire = bytearray(
        b"".join(
            bytes(b) for b in frame_pdu(P.NopOut(itt=1, data=b"ping"), header_digest=False, data_digest=True)
        )
    )
    wire[BHS_LEN] ^= 0xFF
    (frame,) = PduReader(data_digest=True).feed(bytes(wire))
    assert not frame.data_digest_ok


def test_digest_byte_order_matches_rfc_example() -> None:
    # RFC 3720 B.4: 32 bytes of zeroes have CRC32C 0x8a9136aa, sent as aa 36 91 8a
    assert crc32c.crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c_digest(bytes(32)) == bytes.fromhex("aa36918a")


def test_oversized_data_segment_is_rejected_before_reading_it() -> None:
    raw = bytearray(P.NopOut(itt=1).encode_header())
    raw[5:8] = (1 << 20).to_bytes(3, "big")
    with pytest.raises(FramingError):
        PduReader(max_data_segment_length=8192).feed(bytes(raw))


def test_sink_receives_data_in_place() -> None:
    target = bytearray(16)
    reader = PduReader(sink=lambda p: memoryview(target)[4:] if isinstance(p, P.DataOut) else None)
    (frame,) = reader.feed(P.DataOut(itt=1, data=b"abcdef").encode())
    assert frame.sunk
    assert bytes(target[4:10]) == b"abcdef"


def test_extended_cdb_ahs() -> None:
    extra = bytes(range(16))
    ahs = (len(extra) + 1).to_bytes(2, "big") + bytes([1, 0]) + extra
    cmd = P.ScsiCommand(cdb16=bytes(16), ahs=ahs)
    back = P.decode(cmd.encode())
    assert isinstance(back, P.ScsiCommand)
    cdb, bidi = back.parse_ahs()
    assert len(cdb) == 32 and cdb[16:] == extra and bidi is None
    bad = P.ScsiCommand(ahs=bytes([0, 9, 1, 0]))
    with pytest.raises(P.PduError):
        P.decode(bad.encode()).parse_ahs()  # type: ignore[attr-defined]


def _recv_all(reader: PduReader, wire: bytes, most: int = 1 << 30) -> tuple[list[object], int]:
    """Feed ``wire`` the way a socket would (each ``recv`` fills what ``get_buffer`` offers, at most
    ``most`` bytes): the frames and the number of reads it took."""
    frames: list[object] = []
    mv, reads = memoryview(wire), 0
    while True:
        while (frame := reader.next_frame()) is not None:
            frames.append(frame)
        if not mv:
            return frames, reads
        buf = reader.get_buffer()
        n = min(len(buf), len(mv), most)
        buf[:n] = mv[:n]
        mv = mv[n:]
        reads += 1
        reader.buffer_filled(n)


@pytest.mark.parametrize("digests", [False, True])
@pytest.mark.parametrize("most", [1 << 30, 65536 + 48, 4096, 1000])
def test_large_pdus_in_every_read_size(digests: bool, most: int) -> None:
    """64 KiB immediate data (staged), 200 KiB (direct), 64 KiB Data-Out into a sink, small PDUs between:
    every byte arrives where it belongs, whatever the read sizes."""
    sinks: dict[int, bytearray] = {}  # a write buffer per Data-Out (by DataSN), as a command's would be

    def sink(pdu: P.PDU) -> memoryview | None:
        if not isinstance(pdu, P.DataOut):
            return None
        return memoryview(sinks.setdefault(pdu.datasn, bytearray(65536)))

    reader = PduReader(max_data_segment_length=262144, header_digest=digests, data_digest=digests, sink=sink)
    pdus: list[P.PDU] = []
    for i in range(12):
        size = (65536, 200 * 1024, 3)[i % 3]
        pdus.append(P.ScsiCommand(itt=i, data=bytes([i]) * size))
        if i % 4 == 1:
            pdus.append(P.DataOut(itt=99, datasn=i, data=bytes([i + 100]) * 65536))
        pdus.append(P.NopOut(itt=1000 + i))
    wire = b"".join(bytes(b) for p in pdus for b in frame_pdu(p, header_digest=digests, data_digest=digests))
    frames, _ = _recv_all(reader, wire, most)
    assert len(frames) == len(pdus)
    for frame, sent in zip(frames, pdus, strict=True):
        assert frame.pdu is not None and type(frame.pdu) is type(sent) and frame.data_digest_ok
        assert frame.pdu.itt == sent.itt and bytes(frame.pdu.data) == bytes(sent.data)
        assert frame.sunk == isinstance(sent, P.DataOut)


def test_64k_immediate_data_arrives_several_per_read() -> None:
    """A run of 64 KiB writes with immediate data (the qemu-img / Linux pattern at FirstBurstLength 256 KiB)
    is staged: fewer reads than PDUs, not a header read and a data read each."""
    reader = PduReader(max_data_segment_length=262144)
    pdus = [P.ScsiCommand(itt=i, data=bytes([i]) * 65536) for i in range(32)]
    wire = b"".join(bytes(b) for p in pdus for b in frame_pdu(p))
    frames, reads = _recv_all(reader, wire)
    assert [bytes(f.pdu.data[:1]) for f in frames] == [bytes([i]) for i in range(32)]  # type: ignore[union-attr]
    assert reads <= len(pdus) // 2
    assert reader.bulk  # large PDUs: the caller gathers responses over the read burst


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=400))
def test_reader_never_raises_anything_but_framing_errors(blob: bytes) -> None:
    reader = PduReader(max_data_segment_length=256, header_digest=bool(blob[:1] and blob[0] & 1))
    try:
        for frame in reader.feed(blob):
            if frame.pdu is not None and isinstance(frame.pdu, P.ScsiCommand):
                try:
                    frame.pdu.parse_ahs()
                except P.PduError:
                    pass
    except FramingError:
        pass


def test_header_templates_match_dataclass_encoding() -> None:
    """The target's precompiled Data-In / SCSI Response / R2T headers are byte for byte the dataclasses'."""
    from cistern.wire import pdu as P

    lun = P.encode_lun(300)
    din = P.DataIn(
        flags=0x83, status=2, lun=lun, itt=0x11223344, statsn=0xFFFFFFFF, expcmdsn=10, maxcmdsn=0x80000000,
        datasn=3, buffer_offset=4096, residual_count=12, data=bytes(262144),
    )  # fmt: skip
    assert P.data_in_header(
        0x83, 2, lun, 0x11223344, 0xFFFFFFFF, 10, 0x80000000, 3, 4096, 12, 262144
    ) == bytes(din.encode_header())
    rsp = P.ScsiResponse(
        flags=0x86, response=1, status=2, itt=7, statsn=9, expcmdsn=10, maxcmdsn=11, expdatasn=4,
        residual_count=12, data=bytes(20),
    )  # fmt: skip
    assert P.scsi_response_header(0x86, 1, 2, 7, 9, 10, 11, 4, 12, 20) == bytes(rsp.encode_header())
    r2t = P.R2T(
        lun=lun, itt=7, ttt=8, statsn=9, expcmdsn=10, maxcmdsn=11, r2tsn=2, buffer_offset=65536,
        desired_data_transfer_length=1 << 20,
    )  # fmt: skip
    assert P.r2t_header(lun, 7, 8, 9, 10, 11, 2, 65536, 1 << 20) == bytes(r2t.encode_header())
    decoded = P.decode(P.data_in_header(0x81, 0, 0, 1, 2, 3, 4, 5, 6, 7, 4) + b"abcd")
    assert isinstance(decoded, P.DataIn) and decoded.data == b"abcd" and decoded.ttt == P.RESERVED_TAG
