"""Write journal against the RAID 5/6 write hole (the idea of md's ``--write-journal``).

Before a RAID 5/6 stripe update touches the members, the new contents of every member range it will
write (data and parity) go to the journal as one record; only then are the members written.  After a
crash, assembly replays every complete record of the current epoch in order, so a stripe whose update
was cut short between its member writes gets all of them: its parity agrees with its data again, also
when the array is degraded (where a torn update would otherwise corrupt the *missing* member's data as
it is reconstructed).

File layout: a 4 KiB header (``MAGIC``, epoch u32, CRC) then records back to back::

    record = MAGIC_R(4) epoch(u32) seq(u64) entries(u32) payload_len(u32) crc32(payload)(u32)
             payload = entries x (role u16, member_offset u64, length u32) + the data of each entry

Records are valid while magic, epoch and CRC match; replay stops at the first invalid one.  When the file
is full, new writes wait for the records in flight to be applied, the members are flushed, and the epoch
is bumped (a new empty journal).  Ordering across processes is the page cache's: a record written with
``pwrite`` before the member writes is on the file if the process dies; ``flush`` (SYNCHRONIZE CACHE,
FUA) makes the journal durable before the members.
"""

from __future__ import annotations

import asyncio
import struct
import zlib
from collections.abc import Awaitable, Callable, Iterator

from ..base import BackingStore

MAGIC = b"CJNL"
MAGIC_R = b"CJRC"
HEADER = 4096
_H = struct.Struct(">4sII")
_R = struct.Struct(">4sIQIII")
_E = struct.Struct(">HQI")

Entry = tuple[int, int, bytes | memoryview]  # (role/member index, member data offset, bytes)


def encode_record(epoch: int, seq: int, entries: list[Entry]) -> bytes:
    head = b"".join(_E.pack(r, off, len(d)) for r, off, d in entries)
    payload = head + b"".join(bytes(d) for _, _, d in entries)
    return _R.pack(MAGIC_R, epoch, seq, len(entries), len(payload), zlib.crc32(payload)) + payload


def decode_records(raw: bytes, epoch: int) -> Iterator[list[tuple[int, int, bytes]]]:
    pos = HEADER
    while pos + _R.size <= len(raw):
        magic, ep, _seq, n, plen, crc = _R.unpack_from(raw, pos)
        if magic != MAGIC_R or ep != epoch or pos + _R.size + plen > len(raw):
            return
        payload = raw[pos + _R.size : pos + _R.size + plen]
        if zlib.crc32(payload) != crc or n * _E.size > plen:
            return
        out = []
        data_pos = n * _E.size
        for i in range(n):
            role, off, ln = _E.unpack_from(payload, i * _E.size)
            out.append((role, off, payload[data_pos : data_pos + ln]))
            data_pos += ln
        yield out
        pos += _R.size + plen


class Journal:
    """An append-only record log on a store (see module docstring); one per array."""

    def __init__(self, store: BackingStore) -> None:
        if store.size < 2 * HEADER:
            raise ValueError("journal is too small")
        self.store = store
        self.epoch = 0
        self.pos = HEADER
        self.seq = 0
        self.inflight = 0
        self._lock = asyncio.Lock()
        self._idle = asyncio.Event()
        self._idle.set()
        self.records = 0

    async def read_pending(self) -> list[list[tuple[int, int, bytes]]]:
        """Records of the current epoch (to replay after a crash)."""
        head = bytearray(HEADER)
        await self.store.read_into(0, memoryview(head))
        magic, epoch, crc = _H.unpack_from(head)
        if magic != MAGIC or zlib.crc32(head[: _H.size - 4]) != crc:
            self.epoch = 0
            return []
        self.epoch = epoch
        raw = bytearray(self.store.size)
        await self.store.read_into(0, memoryview(raw))
        return list(decode_records(bytes(raw), epoch))

    async def reset(self) -> None:
        """Start a new epoch: every older record is void."""
        self.epoch = (self.epoch + 1) & 0xFFFFFFFF
        head = _H.pack(MAGIC, self.epoch, 0)
        head = head[:-4] + struct.pack(">I", zlib.crc32(head[:-4]))
        await self.store.write(0, head.ljust(HEADER, b"\0"))
        await self.store.flush()
        self.pos = HEADER

    async def append(self, entries: list[Entry], flush_members: Callable[[], Awaitable[None]]) -> None:
        """Write one record; the caller then writes the members and calls :meth:`done`."""
        async with self._lock:
            self.seq += 1
            rec = encode_record(self.epoch, self.seq, entries)
            if len(rec) > self.store.size - HEADER:
                raise OSError("stripe update larger than the journal")
            if self.pos + len(rec) > self.store.size:
                await self._idle.wait()
                await flush_members()
                await self.reset()
                rec = encode_record(self.epoch, self.seq, entries)
            pos = self.pos
            self.pos += len(rec)
            self.inflight += 1
            self._idle.clear()
            try:
                await self.store.write(pos, rec)
            except BaseException:
                self.done()
                raise
            self.records += 1

    def done(self) -> None:
        self.inflight -= 1
        if self.inflight == 0:
            self._idle.set()
