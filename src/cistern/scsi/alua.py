"""Asymmetric logical unit access (SPC-4 5.15): target port groups, their access states, and the
commands that read and set them, REPORT TARGET PORT GROUPS (SPC-4 6.27) and SET TARGET PORT GROUPS
(SPC-4 6.36).

Model: every target port (an iSCSI target portal group, RFC 7143 4.4.4.1) belongs to one target port
group; a group holds one asymmetric access state that applies to every logical unit of the target
device (all LUs form one logical unit group).  A command arriving through a port is admitted or refused
by the state of that port's group (SPC-4 5.15.2.4):

- active/optimized, active/non-optimized: every command;
- standby: the commands listed in :data:`STANDBY_ALLOWED`, others NOT READY / 04/0B;
- unavailable: :data:`UNAVAILABLE_ALLOWED`, others NOT READY / 04/0C;
- transitioning: :data:`TRANSITIONING_ALLOWED`, others NOT READY / 04/0A.

A state change establishes ASYMMETRIC ACCESS STATE CHANGED (2A/06) for every I_T nexus (an implicit
change) or for every I_T nexus but the one that sent SET TARGET PORT GROUPS (an explicit change).
Those unit attentions are queued by :class:`~cistern.scsi.server.DeviceServer`; this module owns the
states, the byte formats and the validation.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from .lu import LogicalUnit
from .sense import (
    INVALID_COMMAND_OPERATION_CODE,
    PARAMETER_LIST_LENGTH_ERROR,
    CheckCondition,
    SenseKey,
    invalid_field,
    invalid_param,
)
from .task import ITNexus, ScsiResult, ScsiTask
from .unit import LogicalUnitBase

# ASC/ASCQ pairs (SPC-4 annex D)
LU_NOT_ACCESSIBLE_TRANSITIONING = (0x04, 0x0A)  # ASYMMETRIC ACCESS STATE TRANSITION
LU_NOT_ACCESSIBLE_STANDBY = (0x04, 0x0B)  # TARGET PORT IN STANDBY STATE
LU_NOT_ACCESSIBLE_UNAVAILABLE = (0x04, 0x0C)  # TARGET PORT IN UNAVAILABLE STATE
ASYMMETRIC_ACCESS_STATE_CHANGED = (0x2A, 0x06)

MAINTENANCE_IN = 0xA3
MAINTENANCE_OUT = 0xA4
SA_REPORT_TARGET_PORT_GROUPS = 0x0A
SA_SET_TARGET_PORT_GROUPS = 0x0A


class AccessState(enum.IntEnum):
    """ASYMMETRIC ACCESS STATE field values (SPC-4 6.27, table 167) that this device server uses."""

    ACTIVE_OPTIMIZED = 0x0
    ACTIVE_NON_OPTIMIZED = 0x1
    STANDBY = 0x2
    UNAVAILABLE = 0x3
    TRANSITIONING = 0xF

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {
    AccessState.ACTIVE_OPTIMIZED: "active/optimized",
    AccessState.ACTIVE_NON_OPTIMIZED: "active/non-optimized",
    AccessState.STANDBY: "standby",
    AccessState.UNAVAILABLE: "unavailable",
    AccessState.TRANSITIONING: "transitioning",
}
STATE_BY_NAME = {label: state for state, label in _LABELS.items()}

#: States SET TARGET PORT GROUPS may request (transitioning is the device server's own business).
EXPLICIT_STATES = frozenset(
    {
        AccessState.ACTIVE_OPTIMIZED,
        AccessState.ACTIVE_NON_OPTIMIZED,
        AccessState.STANDBY,
        AccessState.UNAVAILABLE,
    }
)

# Supported-state bits of a target port group descriptor, byte 1 (SPC-4 6.27)
T_SUP, O_SUP, LBD_SUP, U_SUP, S_SUP, AN_SUP, AO_SUP = 0x80, 0x40, 0x10, 0x08, 0x04, 0x02, 0x01
SUPPORTED_STATES = T_SUP | U_SUP | S_SUP | AN_SUP | AO_SUP


class Tpgs(enum.IntEnum):
    """The TPGS field of standard INQUIRY data (SPC-4 6.6.2): which kinds of ALUA are supported."""

    IMPLICIT = 0b01
    EXPLICIT = 0b10
    BOTH = 0b11


TPGS_BY_NAME = {"implicit": Tpgs.IMPLICIT, "explicit": Tpgs.EXPLICIT, "both": Tpgs.BOTH}


class StatusCode(enum.IntEnum):
    """STATUS CODE of a target port group descriptor (SPC-4 6.27, table 169)."""

    NONE = 0x00
    ALTERED_BY_STPG = 0x01
    ALTERED_IMPLICITLY = 0x02


def parse_state(name: str) -> AccessState:
    """``"active/optimized"`` -> :attr:`AccessState.ACTIVE_OPTIMIZED`; ``ValueError`` naming the choices."""
    try:
        return STATE_BY_NAME[name]
    except (KeyError, TypeError):
        raise ValueError(f"{name!r} is not an ALUA state (use one of: {', '.join(STATE_BY_NAME)})") from None


# -- which commands each state admits (SPC-4 5.15.2.4.4 - 5.15.2.4.6) ---------------------------------
# Keys are (operation code, service action or None for "any").

_INQUIRY, _REQUEST_SENSE, _REPORT_LUNS = 0x12, 0x03, 0xA0
_MODE_SELECT6, _MODE_SENSE6, _MODE_SELECT10, _MODE_SENSE10 = 0x15, 0x1A, 0x55, 0x5A
_LOG_SELECT, _LOG_SENSE = 0x4C, 0x4D
_RECEIVE_DIAGNOSTIC, _SEND_DIAGNOSTIC = 0x1C, 0x1D
_PR_IN, _PR_OUT = 0x5E, 0x5F
_READ_BUFFER10, _WRITE_BUFFER = 0x3C, 0x3B
_READ_CAPACITY10, _SERVICE_ACTION_IN_16, _SA_READ_CAPACITY16 = 0x25, 0x9E, 0x10
_SA_REPORT_SUPPORTED_OPCODES = 0x0C

Allowed = frozenset[tuple[int, int | None]]

TRANSITIONING_ALLOWED: Allowed = frozenset(
    {
        (_INQUIRY, None),
        (_REPORT_LUNS, None),
        (_REQUEST_SENSE, None),
        (MAINTENANCE_IN, SA_REPORT_TARGET_PORT_GROUPS),
        (_READ_BUFFER10, None),  # SPC-4 admits the echo buffer modes only; we have no buffers at all
        (_WRITE_BUFFER, None),
    }
)
UNAVAILABLE_ALLOWED: Allowed = TRANSITIONING_ALLOWED | {
    (_LOG_SELECT, None),
    (_LOG_SENSE, None),
    (_MODE_SELECT6, None),
    (_MODE_SENSE6, None),
    (_MODE_SELECT10, None),
    (_MODE_SENSE10, None),
    (_RECEIVE_DIAGNOSTIC, None),
    (_SEND_DIAGNOSTIC, None),
    (MAINTENANCE_OUT, SA_SET_TARGET_PORT_GROUPS),
    # Not in SPC-4's list; admitted (as SPC-5 and Linux LIO do) so that a host can size and describe
    # the disk on every path, including paths that are not active.
    (MAINTENANCE_IN, _SA_REPORT_SUPPORTED_OPCODES),
    (_READ_CAPACITY10, None),
    (_SERVICE_ACTION_IN_16, _SA_READ_CAPACITY16),
}
STANDBY_ALLOWED: Allowed = UNAVAILABLE_ALLOWED | {(_PR_IN, None), (_PR_OUT, None)}

_REFUSAL: Final = {
    AccessState.STANDBY: (STANDBY_ALLOWED, LU_NOT_ACCESSIBLE_STANDBY),
    AccessState.UNAVAILABLE: (UNAVAILABLE_ALLOWED, LU_NOT_ACCESSIBLE_UNAVAILABLE),
    AccessState.TRANSITIONING: (TRANSITIONING_ALLOWED, LU_NOT_ACCESSIBLE_TRANSITIONING),
}


def admits(state: AccessState, cdb: bytes) -> bool:
    """Whether a port in ``state`` may execute the command in ``cdb``."""
    refusal = _REFUSAL.get(state)
    if refusal is None:
        return True
    allowed = refusal[0]
    op = cdb[0]
    if (op, None) in allowed:
        return True
    return len(cdb) > 1 and (op, cdb[1] & 0x1F) in allowed


# -- the state -----------------------------------------------------------------------------------------


@dataclass(slots=True)
class TargetPortGroup:
    """One target port group: its TARGET PORT GROUP number, member ports and access state."""

    group_id: int
    relative_ports: tuple[int, ...]
    state: AccessState = AccessState.ACTIVE_OPTIMIZED
    preferred: bool = False  # PREF bit
    status: StatusCode = StatusCode.NONE

    def __post_init__(self) -> None:
        if not 0 <= self.group_id <= 0xFFFF:
            raise ValueError(f"target port group {self.group_id} is not in 0..65535")
        if not self.relative_ports or len(self.relative_ports) > 255:
            raise ValueError("a target port group needs 1..255 target ports")
        for port in self.relative_ports:
            if not 1 <= port <= 0xFFFF:
                raise ValueError(f"relative target port identifier {port} is not in 1..65535")

    def descriptor(self) -> bytes:
        """The target port group descriptor of REPORT TARGET PORT GROUPS parameter data."""
        head = struct.pack(
            ">BBHxBxB",
            (0x80 if self.preferred else 0) | self.state,
            SUPPORTED_STATES,
            self.group_id,
            self.status,
            len(self.relative_ports),
        )
        return head + b"".join(struct.pack(">xxH", port) for port in self.relative_ports)


@dataclass(slots=True)
class Alua:
    """The ALUA configuration and state of one SCSI target device.

    ``implicit_transition_time`` is reported in the extended RTPG header (seconds, 0: unspecified).
    """

    groups: dict[int, TargetPortGroup] = field(default_factory=dict)
    tpgs: Tpgs = Tpgs.IMPLICIT
    implicit_transition_time: int = 0
    _by_port: dict[int, TargetPortGroup] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.groups:
            self.groups = {1: TargetPortGroup(1, (1,))}
        self._index()

    @classmethod
    def from_groups(cls, groups: Iterable[TargetPortGroup], tpgs: Tpgs = Tpgs.IMPLICIT) -> Alua:
        table: dict[int, TargetPortGroup] = {}
        for group in groups:
            if group.group_id in table:
                raise ValueError(f"target port group {group.group_id} is listed twice")
            table[group.group_id] = group
        return cls(table, tpgs)

    def _index(self) -> None:
        self._by_port = {}
        for group in self.groups.values():
            for port in group.relative_ports:
                if port in self._by_port:
                    raise ValueError(f"relative target port {port} is in two target port groups")
                self._by_port[port] = group

    @property
    def explicit(self) -> bool:
        return bool(self.tpgs & Tpgs.EXPLICIT)

    def group_of(self, nexus: ITNexus) -> TargetPortGroup | None:
        """The group of the target port ``nexus`` runs through (by relative port, else by TPGT)."""
        return self._by_port.get(nexus.relative_port) or self.groups.get(nexus.tpgt)

    def state_for(self, nexus: ITNexus) -> AccessState:
        group = self.group_of(nexus)
        return group.state if group is not None else AccessState.ACTIVE_OPTIMIZED

    def check(self, nexus: ITNexus, cdb: bytes) -> None:
        """Raise NOT READY with the state's ASC/ASCQ when the port may not execute ``cdb``."""
        state = self.state_for(nexus)
        if not admits(state, cdb):
            raise CheckCondition(SenseKey.NOT_READY, _REFUSAL[state][1])

    # -- REPORT TARGET PORT GROUPS --

    def report(self, extended: bool) -> bytes:
        """REPORT TARGET PORT GROUPS parameter data, length-only (000b) or extended (001b) header."""
        body = b"".join(self.groups[g].descriptor() for g in sorted(self.groups))
        if extended:
            header_rest = struct.pack(">BBxx", 0x10, min(self.implicit_transition_time, 255))
            return struct.pack(">I", len(header_rest) + len(body)) + header_rest + body
        return struct.pack(">I", len(body)) + body

    # -- SET TARGET PORT GROUPS --

    def parse_set(self, data: bytes) -> list[tuple[TargetPortGroup, AccessState]]:
        """Validate a SET TARGET PORT GROUPS parameter list (SPC-4 6.36); nothing changes here.

        Raises :class:`CheckCondition` (PARAMETER LIST LENGTH ERROR, INVALID FIELD IN PARAMETER LIST
        with a field pointer) for a truncated list, reserved bits, an unknown group, a group named twice,
        or a state that cannot be requested.
        """
        if len(data) < 4 or len(data) % 4:
            raise CheckCondition(SenseKey.ILLEGAL_REQUEST, PARAMETER_LIST_LENGTH_ERROR)
        for i in range(4):
            if data[i]:
                raise invalid_param(i, data[i].bit_length() - 1)
        changes: list[tuple[TargetPortGroup, AccessState]] = []
        seen: set[int] = set()
        for off in range(4, len(data), 4):
            b0, b1, group_id = struct.unpack_from(">BBH", data, off)
            if b0 & 0xF0:
                raise invalid_param(off, b0.bit_length() - 1)
            if b1:
                raise invalid_param(off + 1, b1.bit_length() - 1)
            try:
                state = AccessState(b0 & 0x0F)
            except ValueError:
                raise invalid_param(off, 3) from None
            if state not in EXPLICIT_STATES:
                raise invalid_param(off, 3)
            group = self.groups.get(group_id)
            if group is None or group_id in seen:
                raise invalid_param(off + 2, 7)
            seen.add(group_id)
            changes.append((group, state))
        return changes

    def apply(self, changes: Iterable[tuple[TargetPortGroup, AccessState]], status: StatusCode) -> bool:
        """Set the states; True when any group's state moved (unit attentions are then due)."""
        moved = False
        for group, state in changes:
            if group.state != state:
                group.state = state
                moved = True
            group.status = status
        return moved


# -- command handlers (the device server passes itself; its ``alua`` attribute is an :class:`Alua`) ------


def tpgs_of(server: object) -> int:
    """The TPGS value for standard INQUIRY data of ``server`` (0 when it has no ALUA state)."""
    alua = getattr(server, "alua", None)
    return int(alua.tpgs) if isinstance(alua, Alua) else 0


def report_target_port_groups_data(alua: Alua, cdb: bytes) -> tuple[bytes, int]:
    """Parse an RTPG CDB; return (parameter data truncated to ALLOCATION LENGTH, allocation length)."""
    fmt = cdb[1] >> 5
    if fmt not in (0, 1):
        raise invalid_field(1, 7)
    (alloc,) = struct.unpack_from(">I", cdb, 6)
    return alua.report(extended=fmt == 1)[:alloc], alloc


def set_target_port_groups_changes(
    alua: Alua, cdb: bytes, data_out: bytes | bytearray | memoryview | None
) -> list[tuple[TargetPortGroup, AccessState]]:
    """Parse an STPG CDB and its parameter list; return the validated changes (possibly none)."""
    if not alua.explicit:
        raise invalid_field(1, 4)  # SET TARGET PORT GROUPS is not supported without explicit ALUA
    (length,) = struct.unpack_from(">I", cdb, 6)
    if length == 0:
        return []
    data = bytes(data_out or b"")[:length]
    if len(data) < length:
        raise CheckCondition(SenseKey.ILLEGAL_REQUEST, PARAMETER_LIST_LENGTH_ERROR)
    return alua.parse_set(data)


def _alua_of(server: object) -> Alua:
    alua = getattr(server, "alua", None)
    if not isinstance(alua, Alua):
        raise CheckCondition(SenseKey.ILLEGAL_REQUEST, INVALID_COMMAND_OPERATION_CODE)
    return alua


def announce_change(luns: Iterable[LogicalUnitBase], exclude: ITNexus | None = None) -> None:
    """ASYMMETRIC ACCESS STATE CHANGED for every I_T nexus of every LU (but ``exclude``), SPC-4 5.15.2.3."""
    for lu in luns:
        lu.establish_ua_all(ASYMMETRIC_ACCESS_STATE_CHANGED, exclude=exclude)


async def report_target_port_groups(
    server: object, lu: LogicalUnit, task: ScsiTask, cdb: bytes
) -> ScsiResult:
    """REPORT TARGET PORT GROUPS (MAINTENANCE IN, service action 0Ah; SPC-4 6.27)."""
    data, alloc = report_target_port_groups_data(_alua_of(server), cdb)
    return ScsiResult(data_in=data, transfer_length=alloc)


async def set_target_port_groups(server: object, lu: LogicalUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    """SET TARGET PORT GROUPS (MAINTENANCE OUT, service action 0Ah; SPC-4 6.36): all or nothing."""
    alua = _alua_of(server)
    changes = set_target_port_groups_changes(alua, cdb, task.data_out)
    if alua.apply(changes, StatusCode.ALTERED_BY_STPG):
        announce_change(server.luns.values(), exclude=task.nexus)  # type: ignore[attr-defined]
    return ScsiResult(transfer_length=struct.unpack_from(">I", cdb, 6)[0])


def implicit_transition(
    alua: Alua, luns: Iterable[LogicalUnitBase], group_id: int, state: AccessState | str
) -> bool:
    """Move target port group ``group_id`` to ``state`` by the device server's own decision (implicit
    ALUA, SPC-4 5.15.2.2): STATUS CODE becomes 02h and, when the state moved, every I_T nexus gets
    ASYMMETRIC ACCESS STATE CHANGED.  Returns whether the state moved; ``KeyError`` for an unknown group.
    """
    if isinstance(state, str):
        state = parse_state(state)
    group = alua.groups[group_id]
    moved = alua.apply([(group, AccessState(state))], StatusCode.ALTERED_IMPLICITLY)
    if moved:
        announce_change(luns)
    return moved
