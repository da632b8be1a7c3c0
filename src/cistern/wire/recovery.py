"""Sans-I/O bookkeeping for ErrorRecoveryLevel 1 on the target (RFC 7143 sections 7.2, 7.4, 11.16).

* :class:`StatusLog`: the status-carrying PDUs a connection sent, by StatSN, kept until the initiator
  acknowledges them (ExpStatSN beyond them) so a Status SNACK can have them sent again. Bounded: at most
  ``limit`` entries (oldest forgotten first); a SNACK for a forgotten StatSN is answered Reject
  (SNACK Reject, 0x03).
* :func:`snack_range`: the numbers a SNACK's BegRun/RunLength name (RunLength 0: "from BegRun to the end").
* :class:`Retained` / :class:`RetainedSet`: the read data of commands (a view of the device server's buffer,
  not a copy) with the segmentation it was sent with, the TTT of the DataACK its last Data-In asked for and
  the StatSN of its SCSI Response, for Data and R-Data SNACK. An entry goes when the initiator acknowledges
  the status (ExpStatSN beyond it) or sends the DataACK SNACK; at most :data:`RETAINED_LIMIT` commands per
  connection are kept (oldest dropped first; a SNACK for a dropped one is answered Reject, SNACK Reject) and
  at most :data:`RETAINED_BYTES` of data in all (an initiator that never acknowledges cannot pin read
  buffers without bound).

Nothing here knows PDUs beyond opaque framed buffers, sockets or clocks.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence

from cistern.wire.constants import FLAG_FINAL
from cistern.wire.serial import sn_lt

__all__ = [
    "RETAINED_BYTES",
    "RETAINED_LIMIT",
    "STATUS_LOG_LIMIT",
    "Retained",
    "RetainedSet",
    "StatusLog",
    "snack_range",
]

#: statuses kept per connection for Status SNACK (each: one BHS and its sense/text data)
STATUS_LOG_LIMIT = 256


def snack_range(begrun: int, runlength: int, end: int) -> range | None:
    """DataSN/R2TSN/StatSN numbers ``begrun`` .. named by a SNACK, with ``end`` the first number not sent
    yet; None if the request names numbers never sent (RFC 7143 11.16.3/11.16.4)."""
    stop = end if runlength == 0 else begrun + runlength
    if begrun < 0 or stop > end or begrun >= stop:
        return None
    return range(begrun, stop)


class StatusLog:
    """Framed status PDUs by StatSN, pruned by the initiator's ExpStatSN, at most ``limit`` entries."""

    __slots__ = ("_entries", "limit")

    def __init__(self, limit: int = STATUS_LOG_LIMIT) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self._entries: OrderedDict[int, Sequence[bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, statsn: int, parts: Sequence[bytes]) -> None:
        """Remember the framed PDU (header, data, digests) that carried ``statsn``."""
        self._entries[statsn] = parts
        while len(self._entries) > self.limit:
            self._entries.popitem(last=False)

    def acknowledge(self, expstatsn: int) -> None:
        """The initiator has every status before ``expstatsn`` (serial arithmetic, RFC 7143 4.2.2.2)."""
        entries = self._entries
        while entries:
            first = next(iter(entries))
            if not sn_lt(first, expstatsn):
                break
            del entries[first]

    def get(self, begrun: int, runlength: int, next_statsn: int) -> list[Sequence[bytes]] | None:
        """The PDUs a Status SNACK asks for, in order, or None if any of them is not (or no longer) kept."""
        count = ((next_statsn - begrun) & 0xFFFFFFFF) if runlength == 0 else runlength
        if count == 0 or count > self.limit:
            return None
        out = []
        for i in range(count):
            parts = self._entries.get((begrun + i) & 0xFFFFFFFF)
            if parts is None:
                return None
            out.append(parts)
        return out


#: commands whose read data a connection keeps for Data SNACK
RETAINED_LIMIT = 64
#: bytes of read data a connection keeps for Data SNACK, all commands together
RETAINED_BYTES = 64 * 1024 * 1024


class Retained:
    __slots__ = ("ack_ttt", "burst", "lun_field", "mxl", "statsn", "view")

    def __init__(self, lun_field: int, view: memoryview, mxl: int, burst: int, ack_ttt: int) -> None:
        self.lun_field = lun_field
        self.view = view
        self.mxl = mxl  # MaxRecvDataSegmentLength it is cut with (R-Data SNACK may change it)
        self.burst = burst  # MaxBurstLength: each burst ends with the F bit
        self.ack_ttt = ack_ttt
        self.statsn: int | None = None

    def segments(self) -> Iterator[tuple[int, int, int]]:
        """(start, end, flags) of each Data-In PDU, DataSN 0, 1, ... (RFC 7143 11.7.1, 13.14)."""
        total, mxl, burst = len(self.view), self.mxl, self.burst
        offset = 0
        while offset < total:
            end = min(offset + mxl, total, (offset // burst + 1) * burst)
            flags = FLAG_FINAL if (end >= total or end % burst == 0) else 0
            yield offset, end, flags
            offset = end

    def count(self) -> int:
        """How many Data-In PDUs (the DataSN after the last)."""
        return sum(1 for _ in self.segments())


class RetainedSet:
    """The :class:`Retained` entries of one connection by ITT, oldest first, within both bounds."""

    __slots__ = ("_by_itt", "bytes")

    def __init__(self) -> None:
        self._by_itt: OrderedDict[int, Retained] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._by_itt)

    def get(self, itt: int) -> Retained | None:
        return self._by_itt.get(itt)

    def add(self, itt: int, kept: Retained) -> None:
        self.discard(itt)
        self._by_itt[itt] = kept
        self.bytes += len(kept.view)
        while len(self._by_itt) > RETAINED_LIMIT or (self.bytes > RETAINED_BYTES and len(self._by_itt) > 1):
            _, old = self._by_itt.popitem(last=False)
            self.bytes -= len(old.view)

    def discard(self, itt: int) -> None:
        old = self._by_itt.pop(itt, None)
        if old is not None:
            self.bytes -= len(old.view)

    def by_ack_ttt(self, ttt: int) -> tuple[int, Retained] | None:
        for itt, kept in self._by_itt.items():
            if kept.ack_ttt == ttt:
                return itt, kept
        return None

    def acknowledge(self, expstatsn_lt: Callable[[int], bool]) -> None:
        """Drop the oldest entries whose status the initiator has (``expstatsn_lt(statsn)`` is True)."""
        while self._by_itt:
            itt, first = next(iter(self._by_itt.items()))
            if first.statsn is None or not expstatsn_lt(first.statsn):
                break
            self.discard(itt)
