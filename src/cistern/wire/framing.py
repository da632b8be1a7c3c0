"""Incremental, sans-I/O PDU framing with digests and hard size limits (RFC 7143 sections 11.2, 13).

:class:`PduReader` is driven the way :class:`asyncio.BufferedProtocol` is: the caller asks
:meth:`PduReader.get_buffer` where the next bytes must go, copies (or ``recv_into``\\ s) at most that many
bytes there, and reports them with :meth:`PduReader.buffer_filled`; :meth:`PduReader.next_frame` then
returns the finished :class:`Frame`\\ s one at a time.

Zero copy: after the header of a PDU is parsed, the reader asks the optional *sink* callback where the data
segment should land.  The target answers with a slice of the command's write buffer for a Data-Out PDU, so
a large payload goes from the socket straight to the buffer the storage layer writes from.  Immediate data
(a SCSI Command's own data segment, which has no buffer to go to yet) of up to :data:`STAGED_MAX` bytes is
staged instead and copied out into a buffer of its own, which the target keeps as the write buffer: one
``recv`` then carries several 64 KiB writes (bench/RESULTS.md, "64 KiB writes at depth 32").

Digests are CRC32C (the ``crc32c`` C extension), sent least significant byte first as Linux and libiscsi do.
A header digest error is fatal for the connection (lengths cannot be trusted); a data digest error is
reported on the frame so the caller can Reject the PDU (RFC 7143 section 7.8).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, cast

import crc32c

from cistern.wire.buffers import MIN_POOLED, WRITE_BUFFERS
from cistern.wire.constants import BHS_LEN, DIGEST_LEN
from cistern.wire.errors import PduError, RemoteProtocolError
from cistern.wire.pdu import PDU, Buffer, decode_bhs, header_lengths

MAX_AHS_LEN: Final = 255 * 4


class FramingError(RemoteProtocolError):
    """The byte stream cannot be framed any further: the connection must be dropped (answer :data:`DROP`)."""


class HeaderDigestError(FramingError):
    pass


def crc32c_digest(*parts: Buffer) -> bytes:
    crc = 0
    for part in parts:
        crc = crc32c.crc32c(part, crc)
    return crc.to_bytes(4, "little")


@dataclass(slots=True, init=False)
class Frame:
    """One received PDU.  ``error`` is set (and ``pdu`` is None) when the BHS could not be decoded; the
    frame was still consumed whole, so the stream stays in sync.  ``data_digest_ok`` is False when the
    data digest did not match.  ``header`` is the raw BHS (for echoing in a Reject)."""

    pdu: PDU | None
    header: bytes
    error: PduError | None = None
    data_digest_ok: bool = True
    sunk: bool = False  # the data segment went to a sink buffer (pdu.data is a view of it)

    def __init__(
        self,
        pdu: PDU | None,
        header: bytes,
        error: PduError | None = None,
        data_digest_ok: bool = True,
        sunk: bool = False,
    ) -> None:  # written, not generated: a direct call when compiled (see cistern.scsi.task.ScsiTask)
        self.pdu = pdu
        self.header = header
        self.error = error
        self.data_digest_ok = data_digest_ok
        self.sunk = sunk


Sink = Callable[[PDU], memoryview | None]

STAGING_SIZE: Final = 64 * 1024  # greedy reads land here
BULK_STAGING_SIZE: Final = 256 * 1024  # ... or here, while large PDUs are staged whole (see STAGED_MAX)
#: staging buffers not in use by any reader, shared by all readers of the process (bounded), one pool per
#: size: a reader holds one only from the read that needs it until everything staged is parsed, so idle
#: connections hold none
_STAGING_POOL: Final[list[memoryview]] = []  # views of free staging buffers (a view made once per buffer)
_STAGING_POOL_MAX: Final = 256
_BULK_POOL: Final[list[memoryview]] = []
_BULK_POOL_MAX: Final = 16
_NO_STAGE: Final = bytearray()
_NO_VIEW: Final = memoryview(_NO_STAGE)
DIRECT_THRESHOLD: Final = 16 * 1024  # a data segment this large that has a sink is read straight into it
#: a PDU (header + data segment + padding and digest) up to this size without a sink (immediate data) is
#: staged whole and copied out: several arrive per ``recv``, instead of two ``recv``s each in direct mode
STAGED_MAX: Final = BULK_STAGING_SIZE // 2


class PduReader:
    """Frames PDUs from a byte stream.  Limits: ``max_data_segment_length`` (our MaxRecvDataSegmentLength).

    Two read modes, switched per PDU:

    * *staging*: ``get_buffer`` offers the free part of a 64 KiB staging buffer (256 KiB while large PDUs
      are staged whole), so one ``recv`` picks up several PDUs (pipelined commands, 4 KiB Data-In/Out, 64 KiB
      writes with immediate data) at once; their data segments are copied out (or into the sink) — cheaper
      than a system call or two per PDU;
    * *direct*: once a header announces a large data segment that has a sink (a Data-Out into its
      command's write buffer) or is larger than :data:`STAGED_MAX`, the part already staged is copied to
      its destination (the sink's buffer, or a fresh one) and the rest is read straight into it, so those
      payloads are never staged.  After such a PDU the next header is read exactly (48 bytes) too, since
      large transfers come in runs.

    ``buffer_filled`` only accounts for the bytes; frames come out one at a time from ``next_frame``, so the
    caller can change digests or limits (the end of login) before the next PDU is parsed.
    """

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
        self._stage = _NO_STAGE  # borrowed from _STAGING_POOL by get_buffer, given back when all parsed
        self._view = _NO_VIEW
        self._start = 0  # first unparsed staged byte
        self._end = 0  # end of staged bytes
        self._greedy = True
        self._bulk = False  # the last PDU framed (or awaited) had a large data segment
        self._pending = 0  # staging: bytes from _start the PDU there needs in all (0: not known yet)
        self._unit = 0  # size of the last staged large PDU (header to digest): the next ones are likely alike
        # direct mode: the data segment of ``_pdu`` is being read into ``_target`` (+ ``_tail``)
        self._target: memoryview | None = None
        self._target_have = 0
        self._tail = bytearray(3 + DIGEST_LEN)  # padding + data digest
        self._tail_len = 0
        self._tail_have = 0
        self._pdu: PDU | None = None
        self._error: PduError | None = None
        self._header = b""
        self._sunk = False
        self._ready: Frame | None = None  # a frame finished in direct mode, waiting for next_frame()

    # -- BufferedProtocol-style interface -----------------------------------------------------------

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        target = self._target
        if target is not None:
            if self._target_have < len(target):
                return target[self._target_have :]
            return memoryview(self._tail)[self._tail_have : self._tail_len]
        unit = self._unit
        if not self._stage:
            if unit:
                view = _BULK_POOL.pop() if _BULK_POOL else memoryview(bytearray(BULK_STAGING_SIZE))
            else:
                view = _STAGING_POOL.pop() if _STAGING_POOL else memoryview(bytearray(STAGING_SIZE))
            self._stage, self._view = cast(bytearray, view.obj), view
        if self._start == self._end:
            self._start = self._end = 0
        size = len(self._stage)
        need = self._pending or unit  # what the PDU at _start takes, when known
        if need > size:
            size = self._grow_stage()
        elif self._start and (
            size - self._end < DIRECT_THRESHOLD or not self._greedy or self._start + need > size
        ):
            self._stage[: self._end - self._start] = self._view[self._start : self._end]
            self._end -= self._start
            self._start = 0
        if not self._greedy:
            exact = self._view[self._end : self._start + self._wanted()]
            if exact:
                return exact
        if unit:
            # a run of large staged PDUs (64 KiB writes): end the read where a PDU of the same size would,
            # so no partial PDU is left at the end of the buffer to be moved to its front
            base = self._start + need
            if base <= size:
                stop = base + (size - base) // unit * unit
                if stop > self._end:
                    return self._view[self._end : stop]
        return self._view[self._end :] if self._end else self._view

    def _grow_stage(self) -> int:
        """Move what is staged to the front of a bulk staging buffer (the small one goes back to its pool)."""
        view = _BULK_POOL.pop() if _BULK_POOL else memoryview(bytearray(BULK_STAGING_SIZE))
        n = self._end - self._start
        view[:n] = self._view[self._start : self._end]
        self._give_back_stage()
        self._stage, self._view = cast(bytearray, view.obj), view
        self._end = n
        return BULK_STAGING_SIZE

    def buffer_filled(self, n: int) -> None:
        target = self._target
        if target is None:
            self._end += n
            return
        if self._target_have < len(target):
            self._target_have += n  # get_buffer never hands out more than the target's rest
        else:
            self._tail_have += n
        if self._target_have >= len(target) and self._tail_have >= self._tail_len:
            self._ready = self._finish_direct()

    @property
    def bulk(self) -> bool:
        """True while large PDUs are arriving (the last data segment was at least :data:`DIRECT_THRESHOLD`
        bytes): the caller may expect the next PDU within the same read burst."""
        return self._bulk

    def next_frame(self) -> Frame | None:
        """The next complete frame, or None until more bytes arrive.  Raises FramingError."""
        if self._ready is not None:
            ready, self._ready = self._ready, None
            return ready
        if self._target is not None:
            return None
        frame = self._parse()
        if frame is None and self._start == self._end and self._stage:
            self._give_back_stage()
        return frame

    def _give_back_stage(self) -> None:
        """Everything staged is parsed: return the staging buffer to its pool (an idle reader holds none)."""
        view = self._view
        if len(view) == STAGING_SIZE:
            if len(_STAGING_POOL) < _STAGING_POOL_MAX:
                _STAGING_POOL.append(view)
        elif len(_BULK_POOL) < _BULK_POOL_MAX:
            _BULK_POOL.append(view)
        self._stage, self._view = _NO_STAGE, _NO_VIEW
        self._start = self._end = 0

    def feed(self, data: Buffer) -> list[Frame]:
        """Copying convenience for tests and low-rate users: feed bytes, get the completed frames."""
        frames: list[Frame] = []
        mv = memoryview(data)
        while True:
            while (frame := self.next_frame()) is not None:
                frames.append(frame)
            if not mv:
                return frames
            buf = self.get_buffer()
            n = min(len(buf), len(mv))
            buf[:n] = mv[:n]
            mv = mv[n:]
            self.buffer_filled(n)

    # -- internals ------------------------------------------------------------------------------------

    def _wanted(self) -> int:
        """Staged bytes the PDU at ``_start`` needs before the next step (exact mode)."""
        avail = self._end - self._start
        if avail < BHS_LEN:
            return BHS_LEN
        ahs_len, _ = header_lengths(self._view[self._start : self._start + BHS_LEN])
        return BHS_LEN + ahs_len + (DIGEST_LEN if self.header_digest else 0)

    def _parse(self) -> Frame | None:
        start = self._start
        avail = self._end - start
        self._pending = 0
        if avail < BHS_LEN:
            return None
        view = self._view
        header = bytes(view[start : start + BHS_LEN])  # kept for a Reject; decoded from
        ahs_len, dlen = header[4] * 4, (header[5] << 16) | (header[6] << 8) | header[7]
        if dlen > self.max_data_segment_length:
            raise FramingError(
                f"DataSegmentLength {dlen} exceeds MaxRecvDataSegmentLength {self.max_data_segment_length}"
            )
        total = BHS_LEN + ahs_len
        hlen = total + (DIGEST_LEN if self.header_digest else 0)
        if avail < hlen:
            return None
        if self.header_digest and crc32c_digest(view[start : start + total]) != bytes(
            view[start + total : start + hlen]
        ):
            raise HeaderDigestError("header digest mismatch")
        pdu: PDU | None = None
        error: PduError | None = None
        try:
            pdu = decode_bhs(header, bytes(view[start + BHS_LEN : start + total]) if ahs_len else b"")
        except PduError as exc:
            error = exc
        if dlen == 0:
            self._start = start + hlen
            self._greedy = True
            self._bulk = False
            self._unit = 0
            return self._frame(pdu, header, error, b"", True, False)
        pad = -dlen % 4
        extra = pad + (DIGEST_LEN if self.data_digest else 0)
        data_at = start + hlen
        staged = self._end - data_at
        target = self.sink(pdu) if (self.sink is not None and pdu is not None) else None
        sunk = target is not None and len(target) >= dlen
        if staged >= dlen + extra:  # the whole data segment is staged: copy it out
            dest: Buffer
            if sunk:
                assert target is not None
                into = target[:dlen]
                into[:] = view[data_at : data_at + dlen]
                dest = into
            elif dlen >= MIN_POOLED:  # a recycled buffer: it may become the command's write buffer
                into = memoryview(WRITE_BUFFERS.take(dlen))
                into[:] = view[data_at : data_at + dlen]
                dest = into
            else:  # a bytearray of its own (one copy, no view): it may become the command's write buffer too
                dest = self._stage[data_at : data_at + dlen]
            ok = True
            if self.data_digest:
                got = bytes(view[data_at + dlen + pad : data_at + dlen + extra])
                ok = crc32c_digest(dest, view[data_at + dlen : data_at + dlen + pad]) == got
            self._start = data_at + dlen + extra
            self._bulk = large = dlen >= DIRECT_THRESHOLD
            staged_large = large and not sunk and hlen + dlen + extra <= STAGED_MAX
            self._greedy = staged_large or not large
            self._unit = hlen + dlen + extra if staged_large else 0
            return self._frame(pdu, header, error, dest, ok, sunk)
        if dlen < DIRECT_THRESHOLD or (not sunk and hlen + dlen + extra <= STAGED_MAX):
            # small, or large with nowhere better to go: wait for the rest in the staging buffer (moved to its
            # front by get_buffer if it would not fit)
            self._greedy = True
            self._bulk = dlen >= DIRECT_THRESHOLD
            self._pending = hlen + dlen + extra
            self._unit = self._pending if self._bulk else 0
            return None
        # large: switch to direct mode; copy what is staged, read the rest in place
        if sunk:
            assert target is not None
            dest = target[:dlen]
        else:
            dest = memoryview(WRITE_BUFFERS.take(dlen))  # filled in full before the frame is returned
        have = min(staged, dlen)
        if have > 0:
            dest[:have] = view[data_at : data_at + have]
        tail_have = max(staged - dlen, 0)
        if tail_have:
            self._tail[:tail_have] = view[data_at + dlen : data_at + dlen + tail_have]
        self._start = self._end = 0
        self._target, self._target_have = dest, have
        self._tail_len, self._tail_have = extra, tail_have
        self._pdu, self._error, self._header, self._sunk = pdu, error, header, sunk
        self._greedy = False
        self._bulk = True
        self._unit = 0
        if have == dlen and tail_have >= extra:
            return self._finish_direct()
        return None

    def _finish_direct(self) -> Frame:
        target = self._target
        assert target is not None
        ok = True
        if self.data_digest:
            pad = self._tail_len - DIGEST_LEN
            ok = crc32c_digest(target, self._tail[:pad]) == bytes(self._tail[pad : pad + DIGEST_LEN])
        self._target = None
        return self._frame(self._pdu, self._header, self._error, target, ok, self._sunk)

    @staticmethod
    def _frame(
        pdu: PDU | None, header: bytes, error: PduError | None, data: Buffer, ok: bool, sunk: bool
    ) -> Frame:
        if pdu is not None:
            pdu.data = data
        return Frame(pdu, header, error, ok, sunk and bool(data))


def frame_pdu(pdu: PDU, *, header_digest: bool = False, data_digest: bool = False) -> list[Buffer]:
    """The buffers to send for one PDU (header [+digest], data, padding [+digest]); data is not copied."""
    return frame_parts(pdu.encode_header(), pdu.data, header_digest, data_digest)


_PADS: Final[tuple[bytes, ...]] = (b"", bytes(1), bytes(2), bytes(3))  # not a fixed shape: see docs/design.md


def frame_parts(header: Buffer, data: Buffer, header_digest: bool, data_digest: bool) -> list[Buffer]:
    """The buffers to send for an encoded header (BHS + AHS) and its data segment: header [+digest], data,
    padding [+digest] (RFC 7143 11.2); the data is not copied."""
    parts: list[Buffer] = []
    frame_into(parts, header, data, header_digest, data_digest)
    return parts


def frame_into(out: list[Buffer], header: Buffer, data: Buffer, header_digest: bool, data_digest: bool) -> None:
    """:func:`frame_parts`, appended to ``out`` (a connection's send list: no list per PDU)."""
    if header_digest:
        header = bytes(header) + crc32c_digest(header)
    out.append(header)
    if not data:
        return
    out.append(data)
    pad = _PADS[-len(data) % 4]
    if data_digest:
        out.append(pad + crc32c_digest(data, pad))
    elif pad:
        out.append(pad)
