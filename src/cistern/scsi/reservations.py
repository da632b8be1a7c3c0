"""Reservations of one logical unit: the conflict check run before every command (SPC-4 5.13.1,
SBC-3 4.17), SPC-2 RESERVE/RELEASE state, and where the persistent reservation state lives.

Conflict matrix.  A command from an I_T nexus that does not hold the reservation falls in one class:

- ``ALLOWED``: never conflicts (INQUIRY, REPORT LUNS, REQUEST SENSE, TEST UNIT READY, LOG SENSE,
  READ CAPACITY, REPORT TARGET PORT GROUPS, PERSISTENT RESERVE IN/OUT, whose service actions make their
  own checks, START STOP UNIT with START=1, PREVENT ALLOW MEDIUM REMOVAL with PREVENT=0, ...).
- ``READ``: reads the medium or LU state (READ, VERIFY, PRE-FETCH, GET LBA STATUS, MODE SENSE, READ
  BUFFER, REPORT SUPPORTED OPERATION CODES, ...): allowed through the Write Exclusive types, conflicts
  through the Exclusive Access types.
- everything else (writes, MODE SELECT, SYNCHRONIZE CACHE, SANITIZE, commands we do not know): conflicts.

Registrants-only and all-registrants reservations admit every command from a registered I_T nexus.
The REPORT CAPABILITIES ALLOW COMMANDS value 010b states this table.

SPC-2 reservations (RESERVE/RELEASE 6 and 10) are exclusive to one I_T nexus; every command from another
nexus conflicts except INQUIRY, REPORT LUNS, REQUEST SENSE, LOG SENSE, REPORT TARGET PORT GROUPS and
RELEASE (a no-op for a non-holder).  While one is held, PERSISTENT RESERVE IN/OUT conflict for every
nexus (SPC-4 5.13.3); they are released by RELEASE, I_T nexus loss, logical unit reset and target reset.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
from typing import TYPE_CHECKING, Final

from .pr import PersistentReservations
from .pr_state import PrStateFile
from .sense import ReservationConflict
from .task import ITNexus, ScsiTask

if TYPE_CHECKING:
    from .commands import CommandSpec

log = logging.getLogger(__name__)

PERSISTENT_RESERVE_IN: Final = 0x5E
PERSISTENT_RESERVE_OUT: Final = 0x5F
RESERVE_6, RELEASE_6, RESERVE_10, RELEASE_10 = 0x16, 0x17, 0x56, 0x57
_MAINTENANCE_IN: Final = 0xA3
_SERVICE_ACTION_IN_16: Final = 0x9E


class Access(enum.Enum):
    ALLOWED = "allowed"
    READ = "read"
    WRITE = "write"


# (opcode, service action or None for "any")
_ALLOWED: Final[frozenset[tuple[int, int | None]]] = frozenset(
    {
        (0x00, None),  # TEST UNIT READY
        (0x03, None),  # REQUEST SENSE
        (0x12, None),  # INQUIRY
        (0x25, None),  # READ CAPACITY(10)
        (0x4D, None),  # LOG SENSE
        (0xA0, None),  # REPORT LUNS
        (0xA2, None),  # SECURITY PROTOCOL IN (allowed for WE, treated as allowed)
        (PERSISTENT_RESERVE_IN, None),
        (PERSISTENT_RESERVE_OUT, None),
        (RESERVE_6, None),  # SPC-4 5.13.3: RESERVE/RELEASE make their own checks
        (RELEASE_6, None),
        (RESERVE_10, None),
        (RELEASE_10, None),
        (_SERVICE_ACTION_IN_16, 0x10),  # READ CAPACITY(16)
        (_MAINTENANCE_IN, 0x05),  # REPORT IDENTIFYING INFORMATION
        (_MAINTENANCE_IN, 0x0A),  # REPORT TARGET PORT GROUPS
        (_MAINTENANCE_IN, 0x0B),  # REPORT ALIASES
        (_MAINTENANCE_IN, 0x0E),  # REPORT PRIORITY
        (_MAINTENANCE_IN, 0x0F),  # REPORT TIMESTAMP
        (0xAB, 0x01),  # READ MEDIA SERIAL NUMBER
    }
)
_READ: Final[frozenset[tuple[int, int | None]]] = frozenset(
    {
        (0x08, None),  # READ(6)
        (0x28, None),  # READ(10)
        (0xA8, None),  # READ(12)
        (0x88, None),  # READ(16)
        (0x2F, None),  # VERIFY(10)
        (0xAF, None),  # VERIFY(12)
        (0x8F, None),  # VERIFY(16)
        (0x34, None),  # PRE-FETCH(10)
        (0x90, None),  # PRE-FETCH(16)
        (0x1A, None),  # MODE SENSE(6)
        (0x5A, None),  # MODE SENSE(10)
        (0x1C, None),  # RECEIVE DIAGNOSTIC RESULTS
        (0x3C, None),  # READ BUFFER
        (0x3E, None),  # READ LONG(10)
        (0x37, None),  # READ DEFECT DATA(10)
        (0xB7, None),  # READ DEFECT DATA(12)
        (0x84, None),  # RECEIVE COPY RESULTS
        (0x8C, None),  # READ ATTRIBUTE
        (_SERVICE_ACTION_IN_16, 0x11),  # READ LONG(16)
        (_SERVICE_ACTION_IN_16, 0x12),  # GET LBA STATUS
        (_MAINTENANCE_IN, 0x0C),  # REPORT SUPPORTED OPERATION CODES
        (_MAINTENANCE_IN, 0x0D),  # REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS
    }
)
_SPC2_ALLOWED: Final = frozenset({0x03, 0x12, 0x4D, 0xA0, RELEASE_6, RELEASE_10})
_SA_OPCODES: Final = frozenset({_SERVICE_ACTION_IN_16, _MAINTENANCE_IN, 0xAB})


def classify(cdb: bytes | memoryview) -> Access:
    """The conflict class of a CDB (see the module docstring)."""
    op = cdb[0]
    sa = cdb[1] & 0x1F if op in _SA_OPCODES and len(cdb) > 1 else None
    for table, access in ((_ALLOWED, Access.ALLOWED), (_READ, Access.READ)):
        if (op, None) in table or (sa is not None and (op, sa) in table):
            return access
    if op == 0x1B and len(cdb) > 4 and cdb[4] & 0xF1 == 0x01:  # START STOP UNIT: START=1, no power cond.
        return Access.ALLOWED
    if op == 0x1E and len(cdb) > 4 and cdb[4] & 0x03 == 0:  # PREVENT ALLOW MEDIUM REMOVAL: allow
        return Access.ALLOWED
    return Access.WRITE


def _is_report_tpgs(cdb: bytes | memoryview) -> bool:
    return cdb[0] == _MAINTENANCE_IN and len(cdb) > 1 and cdb[1] & 0x1F == 0x0A


def pr_conflicts(pr: PersistentReservations, nexus: ITNexus, access: Access) -> bool:
    """SPC-4 5.13.1 / SBC-3 4.17: does a persistent reservation block this command from ``nexus``?"""
    res = pr.reservation
    if res is None or access is Access.ALLOWED or pr.is_holder(nexus):
        return False
    if (res.type.registrants_only or res.type.all_registrants) and pr.registration(nexus) is not None:
        return False
    return not (access is Access.READ and res.type.write_exclusive)


class LuReservations:
    """All reservation state of one LU.  ``state_path``: where APTPL state lives (None: PTPL_C=0)."""

    def __init__(self, state_path: str | os.PathLike[str] | None = None) -> None:
        self.state = PrStateFile(state_path) if state_path is not None else None
        loaded = self.state.load() if self.state is not None else None
        self.pr = loaded if loaded is not None else PersistentReservations()
        if loaded is not None:
            log.info(
                "restored %d persistent reservation registration(s) from %s",
                len(loaded.registrations),
                state_path,
            )
        self.persisted = loaded is not None  # whether the state file currently holds our state
        self.spc2_holder: ITNexus | None = None
        self.lock = asyncio.Lock()  # serialises PERSISTENT RESERVE OUT (and its state-file writes)

    @property
    def ptpl_capable(self) -> bool:
        return self.state is not None

    def check(self, task: ScsiTask, spec: CommandSpec | None = None) -> None:
        """Raise :class:`ReservationConflict` if a reservation blocks ``task``."""
        cdb = task.cdb
        op = cdb[0]
        holder = self.spc2_holder
        if holder is not None:
            if op in (PERSISTENT_RESERVE_IN, PERSISTENT_RESERVE_OUT):
                raise ReservationConflict()
            if holder != task.nexus and op not in _SPC2_ALLOWED and not _is_report_tpgs(cdb):
                raise ReservationConflict()
            return
        if self.pr.reservation is not None and pr_conflicts(self.pr, task.nexus, classify(cdb)):
            raise ReservationConflict()

    # -- events --------------------------------------------------------------------------------------

    def nexus_lost(self, nexus: ITNexus) -> None:
        """I_T nexus loss: an SPC-2 reservation is released; registrations persist (SPC-4 5.13.6)."""
        if self.spc2_holder == nexus:
            self.spc2_holder = None

    def reset(self) -> None:
        """Logical unit reset or target reset: SPC-2 reservations are released, PR state is kept."""
        self.spc2_holder = None
