"""Incremental, sans-I/O PDU framing with digests and hard size limits (RFC 7143 sections 11.2, 13).

:class:`PduReader` is driven the way :class:`asyncio.BufferedProtocol` is: the caller asks
:meth:`PduReader.get_buffer` where the next bytes must go, copies (or ``recv_into``\\ s) at most that many
bytes there, and reports them with :meth:`PduReader.buffer_filled`, which returns a finished
:class:`Frame` when one completes.  Buffers are always sized to what the current piece still needs, so a
read never runs past a PDU boundary.

Zero copy: after the header of a PDU is parsed, the reader asks the optional *sink* callback where the data
segment should land.  The target answers with a slice of the command's write buffer for a Data-Out PDU, so
the payload goes from the socket straight to the buffer the storage layer writes from.

Digests are CRC32C (the ``crc32c`` C extension), sent least significant byte first as Linux and libiscsi do.
A header digest error is fatal for the connection (lengths cannot be trusted); a data digest error is
reported on the frame so the caller can Reject the PDU (RFC 7143 section 7.8).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import crc32c

from cistern.wire.constants import BHS_LEN, DIGEST_LEN
from cistern.wire.pdu import PDU, Buffer, PduError, decode_bhs, header_lengths

MAX_AHS_LEN = 255 * 4


class FramingError(Exception):
    """The byte stream cannot be framed any further: the connection must be dropped."""


class HeaderDigestError(FramingError):
    pass


def crc32c_digest(*parts: Buffer) -> bytes:
    crc = 0
    for part in parts:
        crc = crc32c.crc32c(part, crc)
    return crc.to_bytes(4, "little")


@dataclass(slots=True)
class Frame:
    """One received PDU.  ``error`` is set (and ``pdu`` is None) when the BHS could not be decoded; the
    frame was still consumed whole, so the stream stays in sync.  ``data_digest_ok`` is False when the
    data digest did not match.  ``header`` is the raw BHS (for echoing in a Reject)."""

    pdu: PDU | None
    header: bytes
    error: PduError | None = None
    data_digest_ok: bool = True
    sunk: bool = False  # the data segment went to a sink buffer (pdu.data is a view of it)


Sink = Callable[[PDU], memoryview | None]

_HEADER, _DATA = 0, 1


class PduReader:
    """Frames PDUs from a byte stream.  Limits: ``max_data_segment_length`` (our MaxRecvDataSegmentLength)."""

    def __init__(
        self,
        *,
        max_data_segment_length: int = 8192,
        header_digest: bool = False,
        data_digest: bool = False,
        sink: Sink | None = None,
    ) -> None:
        self.max_data_segment_length = max_data_segment_length
        self.header_digest = header_digest
        self.data_digest = data_digest
        self.sink = sink
        self._hdr = bytearray(BHS_LEN + MAX_AHS_LEN + DIGEST_LEN)
        self._hdr_view = memoryview(self._hdr)
        self._state = _HEADER
        self._need = BHS_LEN  # bytes wanted in the current piece
        self._have = 0
        self._hdr_total = BHS_LEN
        self._dlen = 0
        self._pdu: PDU | None = None
        self._error: PduError | None = None
        self._data_target: memoryview | None = None  # where the data segment goes
        self._tail = bytearray(3 + DIGEST_LEN)  # padding + data digest when the data went to a sink
        self._tail_len = 0
        self._sunk = False

    # -- BufferedProtocol-style interface -----------------------------------------------------------

    def get_buffer(self) -> memoryview:
        if self._state == _HEADER:
            return self._hdr_view[self._have : self._need]
        assert self._data_target is not None
        if self._have < len(self._data_target):
            return self._data_target[self._have :]
        start = self._have - len(self._data_target)
        return memoryview(self._tail)[start : self._tail_len]

    def buffer_filled(self, n: int) -> Frame | None:
        self._have += n
        if self._state == _HEADER:
            if self._have < self._need:
                return None
            if self._need == BHS_LEN:
                ahs_len, dlen = header_lengths(self._hdr)
                if dlen > self.max_data_segment_length:
                    raise FramingError(
                        f"DataSegmentLength {dlen} exceeds MaxRecvDataSegmentLength {self.max_data_segment_length}"
                    )
                self._dlen = dlen
                self._hdr_total = BHS_LEN + ahs_len
                self._need = self._hdr_total + (DIGEST_LEN if self.header_digest else 0)
                if self._have < self._need:
                    return None
            return self._header_done()
        if self._have < self._need:
            return None
        return self._data_done()

    def feed(self, data: Buffer) -> list[Frame]:
        """Copying convenience for tests and low-rate users: feed bytes, get the completed frames."""
        frames: list[Frame] = []
        mv = memoryview(data)
        while mv:
            buf = self.get_buffer()
            n = min(len(buf), len(mv))
            buf[:n] = mv[:n]
            mv = mv[n:]
            frame = self.buffer_filled(n)
            if frame is not None:
                frames.append(frame)
        return frames

    # -- internals ------------------------------------------------------------------------------------

    def _header_done(self) -> Frame | None:
        hdr = self._hdr_view
        total = self._hdr_total
        if self.header_digest and crc32c_digest(hdr[:total]) != bytes(hdr[total : total + DIGEST_LEN]):
            raise HeaderDigestError("header digest mismatch")
        self._error = None
        self._pdu = None
        try:
            self._pdu = decode_bhs(hdr[:BHS_LEN], bytes(hdr[BHS_LEN:total]) if total > BHS_LEN else b"")
        except PduError as exc:
            self._error = exc
        dlen = self._dlen
        if dlen == 0:
            return self._finish(b"", True)
        padded = dlen + (-dlen % 4)
        extra = padded - dlen + (DIGEST_LEN if self.data_digest else 0)
        target = self.sink(self._pdu) if (self.sink is not None and self._pdu is not None) else None
        if target is not None and len(target) >= dlen:
            self._data_target = target[:dlen]
            self._sunk = True
        else:
            self._data_target = memoryview(bytearray(dlen))
            self._sunk = False
        self._tail_len = extra
        self._state = _DATA
        self._have = 0
        self._need = dlen + extra
        return None

    def _data_done(self) -> Frame:
        target = self._data_target
        assert target is not None
        ok = True
        if self.data_digest:
            pad = self._tail_len - DIGEST_LEN
            got = bytes(self._tail[pad : pad + DIGEST_LEN])
            ok = crc32c_digest(target, self._tail[:pad]) == got
        self._data_target = None
        return self._finish(target, ok)

    def _finish(self, data: Buffer, digest_ok: bool) -> Frame:
        header = bytes(self._hdr_view[:BHS_LEN])
        pdu = self._pdu
        if pdu is not None:
            pdu.data = data
        frame = Frame(pdu, header, self._error, digest_ok, self._sunk and bool(data))
        self._state = _HEADER
        self._have = 0
        self._need = BHS_LEN
        self._sunk = False
        self._pdu = None
        return frame


def frame_pdu(pdu: PDU, *, header_digest: bool = False, data_digest: bool = False) -> list[Buffer]:
    """The buffers to send for one PDU (header [+digest], data, padding [+digest]); data is not copied."""
    header = pdu.encode_header()
    if header_digest:
        header += crc32c_digest(header)
    data = pdu.data
    if not data:
        return [header]
    pad = bytes(-len(data) % 4)
    parts: list[Buffer] = [header, data]
    if data_digest:
        parts.append(pad + crc32c_digest(data, pad))
    elif pad:
        parts.append(pad)
    return parts
