"""Target-side iSCSI session identity and the session table (RFC 7143 6.3.5).

A :class:`Session` is what the target server knows about a session beyond the protocol: its TSIH, the
initiator port (name, ISID), the target and the SCSI I_T nexus.  Everything RFC 7143 makes session-wide on
the wire — CmdSN window, task table, TTTs, connection set, negotiated keys, DefaultTime2Retain — is owned
by its sans-I/O :class:`~cistern.wire.target_session.TargetSession` (:attr:`Session.core`); the properties
here only read it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cistern.scsi.task import ITNexus
from cistern.wire.target_session import TargetSession

if TYPE_CHECKING:
    from cistern.target.connection import Connection
    from cistern.target.model import TargetSpec
    from cistern.wire.params import Negotiated


@dataclass(slots=True, eq=False)
class Session:
    tsih: int
    initiator_name: str
    isid: bytes
    target: TargetSpec | None  # None for a discovery session
    core: TargetSession
    nexus: ITNexus | None = None
    closed: bool = False

    @property
    def discovery(self) -> bool:
        return self.target is None

    @property
    def params(self) -> Negotiated:
        return self.core.params

    @property
    def expcmdsn(self) -> int:
        return self.core.expcmdsn

    @property
    def maxcmdsn(self) -> int:
        return self.core.maxcmdsn

    @property
    def queue_depth(self) -> int:
        return self.core.queue_depth

    @property
    def outstanding(self) -> int:
        return self.core.outstanding

    @property
    def write_buffered(self) -> int:
        return self.core.write_buffered

    @property
    def held(self) -> dict[int, object]:
        return self.core.held  # type: ignore[return-value]

    @property
    def connections(self) -> dict[int, Connection]:
        """The connections in full feature phase, by CID (their I/O adapters; a snapshot)."""
        return {cid: m.owner for cid, m in self.core.connections.items()}


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
