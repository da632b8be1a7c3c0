"""Sans-I/O bookkeeping for ErrorRecoveryLevel 1 on the target (RFC 7143 sections 7.2, 7.4, 11.16).

* :class:`StatusLog`: the status-carrying PDUs a connection sent, by StatSN, kept until the initiator
  acknowledges them (ExpStatSN beyond them) so a Status SNACK can have them sent again. Bounded: at most
  ``limit`` entries (oldest forgotten first); a SNACK for a forgotten StatSN is answered Reject
  (SNACK Reject, 0x03).
* :func:`snack_range`: the numbers a SNACK's BegRun/RunLength name (RunLength 0: "from BegRun to the end").

Nothing here knows PDUs beyond opaque framed buffers, sockets or clocks.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from cistern.wire.serial import sn_lt

__all__ = ["STATUS_LOG_LIMIT", "StatusLog", "snack_range"]

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
