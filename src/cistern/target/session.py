"""Target-side iSCSI session state: identity, TSIH, the CmdSN window and in-order delivery (RFC 7143 4.2.2).

A session outlives its connections (MC/S and ERL 2 later): it owns what RFC 7143 makes session-wide —
the I_T nexus, ExpCmdSN/MaxCmdSN, the negotiated session parameters and the task table keyed by ITT.
Per-connection state (StatSN, framing, data transfer) lives in :mod:`cistern.target.connection`.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cistern.scsi.task import ITNexus
from cistern.wire.serial import sn_add, sn_in_window

if TYPE_CHECKING:
    from cistern.target.connection import Connection
    from cistern.target.model import TargetSpec
    from cistern.wire.negotiation import Negotiated


class CmdDisposition(enum.Enum):
    DELIVER = 1  # in order: deliver now (and then any held commands that became in order)
    HOLD = 2  # inside the window but ahead of ExpCmdSN: keep until the gap fills
    DROP = 3  # outside the window (or a duplicate): silently ignore (RFC 7143 4.2.2.1)


@dataclass(slots=True)
class Session:
    tsih: int
    initiator_name: str
    isid: bytes
    target: TargetSpec | None  # None for a discovery session
    params: Negotiated
    expcmdsn: int
    queue_depth: int = 128
    nexus: ITNexus | None = None
    connections: dict[int, Connection] = field(default_factory=dict)
    outstanding: int = 0  # non-immediate commands delivered and not yet completed
    write_buffered: int = 0  # bytes of write buffers allocated for commands not yet completed
    held: dict[int, Callable[[], None]] = field(default_factory=dict)  # CmdSN -> deliver callback
    _maxcmdsn: int = 0
    closed: bool = False

    def __post_init__(self) -> None:
        self._maxcmdsn = sn_add(self.expcmdsn, self.queue_depth - 1)

    @property
    def discovery(self) -> bool:
        return self.target is None

    @property
    def maxcmdsn(self) -> int:
        """ExpCmdSN + free slots - 1, never decreasing (initiators ignore a MaxCmdSN that goes back)."""
        free = self.queue_depth - self.outstanding - len(self.held)
        candidate = (self.expcmdsn + free - 1) & 0xFFFFFFFF if free > 1 else self.expcmdsn
        current = self._maxcmdsn
        # sn_lt(current, candidate), inlined: this runs for every status the target sends
        if candidate != current and ((candidate - current) & 0xFFFFFFFF) < 0x80000000:
            self._maxcmdsn = current = candidate
        return current

    def classify(self, cmdsn: int, immediate: bool) -> CmdDisposition:
        """Where a command with this CmdSN goes.  Immediate commands are delivered at once (RFC 7143 3.2.2.1)."""
        if immediate:
            return CmdDisposition.DELIVER
        if cmdsn == self.expcmdsn:
            return CmdDisposition.DELIVER
        if sn_in_window(cmdsn, self.expcmdsn, self._maxcmdsn) and cmdsn not in self.held:
            return CmdDisposition.HOLD
        return CmdDisposition.DROP

    def advance(self) -> list[Callable[[], None]]:
        """ExpCmdSN moves past a delivered command; returns held commands that are now in order."""
        self.expcmdsn = sn_add(self.expcmdsn, 1)
        ready: list[Callable[[], None]] = []
        while self.expcmdsn in self.held:
            ready.append(self.held.pop(self.expcmdsn))
            self.expcmdsn = sn_add(self.expcmdsn, 1)
        return ready


class SessionTable:
    """All sessions of a target server: TSIH allocation and reinstatement lookup (RFC 7143 6.3.5)."""

    def __init__(self) -> None:
        self._by_tsih: dict[int, Session] = {}
        self._tsih = itertools.cycle(range(1, 0x10000))

    def allocate_tsih(self) -> int:
        for _ in range(0xFFFF):
            tsih = next(self._tsih)
            if tsih not in self._by_tsih:
                return tsih
        raise RuntimeError("no free TSIH")

    def add(self, session: Session) -> None:
        self._by_tsih[session.tsih] = session

    def remove(self, session: Session) -> None:
        if self._by_tsih.get(session.tsih) is session:
            del self._by_tsih[session.tsih]

    def get(self, tsih: int) -> Session | None:
        return self._by_tsih.get(tsih)

    def find(self, initiator_name: str, isid: bytes, target_name: str | None) -> Session | None:
        for session in self._by_tsih.values():
            name = session.target.name if session.target else None
            if session.initiator_name == initiator_name and session.isid == isid and name == target_name:
                return session
        return None

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._by_tsih.values()))

    def __len__(self) -> int:
        return len(self._by_tsih)
