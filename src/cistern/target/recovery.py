"""Read data a target connection keeps at ErrorRecoveryLevel >= 1 for Data and R-Data SNACK (RFC 7143 11.16).

A :class:`Retained` entry is the Data-In payload of one command (a view of the device server's buffer, not
a copy) with the segmentation it was sent with, the TTT of the DataACK its last Data-In asked for, and the
StatSN of its SCSI Response.  It goes when the initiator acknowledges the status (ExpStatSN beyond it) or
sends the DataACK SNACK; at most :data:`RETAINED_LIMIT` commands per connection are kept (oldest dropped
first; a SNACK for a dropped one is answered Reject, SNACK Reject).
"""

from __future__ import annotations

from collections.abc import Iterator

from cistern.wire.constants import FLAG_FINAL

__all__ = ["RETAINED_LIMIT", "Retained"]

#: commands whose read data a connection keeps for Data SNACK
RETAINED_LIMIT = 64


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
