"""Read data a target connection keeps at ErrorRecoveryLevel >= 1 for Data and R-Data SNACK (RFC 7143 11.16).

A :class:`Retained` entry is the Data-In payload of one command (a view of the device server's buffer, not
a copy) with the segmentation it was sent with, the TTT of the DataACK its last Data-In asked for, and the
StatSN of its SCSI Response.  It goes when the initiator acknowledges the status (ExpStatSN beyond it) or
sends the DataACK SNACK; at most :data:`RETAINED_LIMIT` commands per connection are kept (oldest dropped
first; a SNACK for a dropped one is answered Reject, SNACK Reject), and at most :data:`RETAINED_BYTES` of
data in all (so an initiator that never acknowledges cannot pin read buffers without bound).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator

from cistern.wire.constants import FLAG_FINAL

__all__ = ["RETAINED_BYTES", "RETAINED_LIMIT", "Retained", "RetainedSet"]

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
