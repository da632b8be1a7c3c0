"""Persistent reservations of one logical unit (SPC-4 5.13): registrations, the reservation, PRgeneration.

This is the state machine only: each PERSISTENT RESERVE OUT service action is a method that checks its
preconditions, changes the state, and returns :class:`Effects` (the unit attentions to establish and
the registrations PREEMPT AND ABORT removed).  Errors are raised as :class:`ReservationConflict` or
:class:`CheckCondition`, before anything changes.  No I/O here: the command glue
(:mod:`cistern.scsi.pr_commands`) parses CDBs and parameter lists and persists APTPL state
(:mod:`cistern.scsi.pr_state`).

A registration belongs to an I_T nexus: an initiator port (a :class:`TransportId`; a format 00b one,
from SPEC_I_PT, stands for every port of that initiator device) and a target port (``None`` when
registered with ALL_TG_PT).  The six reservation types are SPC-4 table 6.17.3 (TYPE field).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from .sense import (
    INSUFFICIENT_REGISTRATION_RESOURCES,
    INVALID_RELEASE_OF_PERSISTENT_RESERVATION,
    REGISTRATIONS_PREEMPTED,
    RESERVATIONS_PREEMPTED,
    RESERVATIONS_RELEASED,
    CheckCondition,
    ReservationConflict,
    SenseKey,
    invalid_field,
    invalid_param,
)
from .task import ITNexus
from .transport_id import TransportId

MAX_REGISTRATIONS = 1024
SCOPE_LU = 0


class PrType(enum.IntEnum):
    """PERSISTENT RESERVE OUT TYPE field (SPC-4 6.17.3)."""

    WRITE_EXCLUSIVE = 0x1
    EXCLUSIVE_ACCESS = 0x3
    WRITE_EXCLUSIVE_REGISTRANTS_ONLY = 0x5
    EXCLUSIVE_ACCESS_REGISTRANTS_ONLY = 0x6
    WRITE_EXCLUSIVE_ALL_REGISTRANTS = 0x7
    EXCLUSIVE_ACCESS_ALL_REGISTRANTS = 0x8

    @property
    def all_registrants(self) -> bool:
        return self in (PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS, PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS)

    @property
    def registrants_only(self) -> bool:
        return self in (PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY, PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY)

    @property
    def write_exclusive(self) -> bool:
        return self in (
            PrType.WRITE_EXCLUSIVE,
            PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY,
            PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS,
        )


VALID_TYPES = frozenset(int(t) for t in PrType)


@dataclass(slots=True, eq=False)
class Registration:
    """One registered I_T nexus (or, with ALL_TG_PT, one initiator port on every target port)."""

    initiator: TransportId
    target_port: str | None
    relative_port: int
    key: int

    def matches(self, nexus: ITNexus) -> bool:
        if self.target_port is not None and self.target_port != nexus.target_port:
            return False
        return self.initiator.matches(nexus.initiator_name, nexus.isid)

    @property
    def all_tg_pt(self) -> bool:
        return self.target_port is None


@dataclass(slots=True)
class Reservation:
    type: PrType
    holder: Registration | None  # None for the all-registrants types: every registrant holds it
    scope: int = SCOPE_LU


@dataclass(slots=True)
class Effects:
    """What a service action asks of the LU besides the state change."""

    ua: list[tuple[Registration, tuple[int, int]]] = field(default_factory=list)
    preempted: list[Registration] = field(default_factory=list)
    changed: bool = False


class PersistentReservations:
    """The persistent reservation state of one LU; see the module docstring."""

    def __init__(self) -> None:
        self.generation = 0
        self.registrations: list[Registration] = []
        self.reservation: Reservation | None = None
        self.aptpl = False

    # -- queries -----------------------------------------------------------------------------------

    def registration(self, nexus: ITNexus) -> Registration | None:
        for reg in self.registrations:
            if reg.matches(nexus):
                return reg
        return None

    def is_holder(self, nexus: ITNexus) -> bool:
        res = self.reservation
        if res is None:
            return False
        if res.holder is None:
            return self.registration(nexus) is not None
        return res.holder.matches(nexus)

    def holds(self, reg: Registration) -> bool:
        res = self.reservation
        return res is not None and (res.holder is None or res.holder is reg)

    # -- helpers ---------------------------------------------------------------------------------------

    def _bump(self, effects: Effects) -> Effects:
        self.generation = (self.generation + 1) & 0xFFFFFFFF
        effects.changed = True
        return effects

    def _checked(self, nexus: ITNexus, key: int) -> Registration:
        """The caller's registration, which the RESERVATION KEY must match (else RESERVATION CONFLICT)."""
        reg = self.registration(nexus)
        if reg is None or reg.key != key:
            raise ReservationConflict()
        return reg

    def _remove(self, reg: Registration, effects: Effects) -> None:
        """Unregister ``reg``, releasing the reservation it held (SPC-4 5.13.11.2.3)."""
        self.registrations.remove(reg)
        res = self.reservation
        if res is None:
            return
        if res.holder is reg:
            self.reservation = None
            if res.type.registrants_only:
                effects.ua += [(r, RESERVATIONS_RELEASED) for r in self.registrations]
        elif res.holder is None and not self.registrations:
            self.reservation = None

    @staticmethod
    def _type(value: int) -> PrType:
        if value not in VALID_TYPES:
            raise invalid_field(2, 3)
        return PrType(value)

    # -- service actions (SPC-4 5.13.7 - 5.13.11) --------------------------------------------------

    def register(
        self,
        nexus: ITNexus,
        key: int,
        sark: int,
        *,
        ignore_existing: bool = False,
        all_tg_pt: bool = False,
        aptpl: bool = False,
        spec_i_pt: list[TransportId] | None = None,
    ) -> Effects:
        """REGISTER (SA 0) and REGISTER AND IGNORE EXISTING KEY (SA 6)."""
        effects = Effects()
        reg = self.registration(nexus)
        if reg is None:
            if key != 0 and not ignore_existing:
                raise ReservationConflict()
            if sark == 0:
                return effects  # unregistered nexus unregistering: nothing to do, no new generation
            if len(self.registrations) + 1 + len(spec_i_pt or ()) > MAX_REGISTRATIONS:
                raise CheckCondition(SenseKey.ILLEGAL_REQUEST, INSUFFICIENT_REGISTRATION_RESOURCES)
            target_port = None if all_tg_pt else nexus.target_port
            new = [
                Registration(
                    TransportId(nexus.initiator_name, nexus.isid), target_port, nexus.relative_port, sark
                )
            ]
            for tid in spec_i_pt or ():
                probe = Registration(tid, target_port, nexus.relative_port, sark)
                if any(self._overlaps(probe, r) for r in self.registrations + new):
                    raise invalid_param(24)  # a TransportID already registered, or listed twice
                new.append(probe)
            self.registrations += new
        else:
            if spec_i_pt:
                raise invalid_param(20, 3)
            if not ignore_existing and key != reg.key:
                raise ReservationConflict()
            if sark == 0:
                self._remove(reg, effects)
            else:
                reg.key = sark
        self.aptpl = aptpl
        return self._bump(effects)

    @staticmethod
    def _overlaps(a: Registration, b: Registration) -> bool:
        if a.target_port is not None and b.target_port is not None and a.target_port != b.target_port:
            return False
        if a.initiator.name.casefold() != b.initiator.name.casefold():
            return False
        return a.initiator.isid is None or b.initiator.isid is None or a.initiator.isid == b.initiator.isid

    def reserve(self, nexus: ITNexus, key: int, type_: int, scope: int = SCOPE_LU) -> Effects:
        """RESERVE (SA 1): SPC-4 5.13.9.  Never changes PRgeneration."""
        pr_type = self._type(type_)
        reg = self._checked(nexus, key)
        res = self.reservation
        if res is None:
            self.reservation = Reservation(pr_type, None if pr_type.all_registrants else reg, scope)
            return Effects(changed=True)
        if self.holds(reg) and res.type == pr_type and res.scope == scope:
            return Effects()
        raise ReservationConflict()

    def release(self, nexus: ITNexus, key: int, type_: int, scope: int = SCOPE_LU) -> Effects:
        """RELEASE (SA 2): SPC-4 5.13.10.  A non-holder's RELEASE is a GOOD no-op."""
        reg = self._checked(nexus, key)
        res = self.reservation
        effects = Effects()
        if res is None or not self.holds(reg):
            return effects
        if res.type != type_ or res.scope != scope:
            raise CheckCondition(SenseKey.ILLEGAL_REQUEST, INVALID_RELEASE_OF_PERSISTENT_RESERVATION)
        self.reservation = None
        effects.changed = True
        if res.type.registrants_only or res.type.all_registrants:
            effects.ua += [(r, RESERVATIONS_RELEASED) for r in self.registrations if r is not reg]
        return effects

    def clear(self, nexus: ITNexus, key: int) -> Effects:
        """CLEAR (SA 3): every registration and the reservation go; the others see 2A/03."""
        reg = self._checked(nexus, key)
        effects = Effects(ua=[(r, RESERVATIONS_PREEMPTED) for r in self.registrations if r is not reg])
        self.registrations.clear()
        self.reservation = None
        return self._bump(effects)

    def preempt(self, nexus: ITNexus, key: int, sark: int, type_: int, scope: int = SCOPE_LU) -> Effects:
        """PREEMPT (SA 4) and PREEMPT AND ABORT (SA 5): SPC-4 5.13.11.

        ``Effects.preempted`` lists the removed registrations (whose tasks PREEMPT AND ABORT aborts).
        """
        reg = self._checked(nexus, key)
        res = self.reservation
        effects = Effects()
        if res is not None and res.holder is None:  # all registrants type
            pr_type = self._type(type_)
            if sark == 0:
                victims = [r for r in self.registrations if r is not reg]
                self._drop(victims, effects)
                self.reservation = Reservation(pr_type, None if pr_type.all_registrants else reg, scope)
                return self._bump(effects)
            return self._preempt_registrations(reg, sark, effects)
        if res is not None and res.holder is not None and res.holder.key == sark:
            pr_type = self._type(type_)
            victims = [r for r in self.registrations if r.key == sark and r is not reg]
            self._drop(victims, effects)
            self.reservation = Reservation(pr_type, None if pr_type.all_registrants else reg, scope)
            if pr_type != res.type or scope != res.scope:
                effects.ua += [(r, RESERVATIONS_RELEASED) for r in self.registrations if r is not reg]
            return self._bump(effects)
        if sark == 0:
            raise invalid_param(8)
        return self._preempt_registrations(reg, sark, effects)

    def _preempt_registrations(self, reg: Registration, sark: int, effects: Effects) -> Effects:
        victims = [r for r in self.registrations if r.key == sark]
        if not victims:
            raise ReservationConflict()
        for victim in victims:
            self._remove(victim, effects)
            effects.preempted.append(victim)
            if victim is not reg:
                effects.ua.append((victim, REGISTRATIONS_PREEMPTED))
        return self._bump(effects)

    def _drop(self, victims: list[Registration], effects: Effects) -> None:
        """Remove registrations without the release side effects (the reservation is replaced)."""
        for victim in victims:
            self.registrations.remove(victim)
            effects.preempted.append(victim)
            effects.ua.append((victim, REGISTRATIONS_PREEMPTED))

    def register_and_move(
        self,
        nexus: ITNexus,
        key: int,
        sark: int,
        dest: TransportId,
        dest_target_port: str,
        dest_relative_port: int,
        *,
        unreg: bool = False,
        aptpl: bool = False,
    ) -> Effects:
        """REGISTER AND MOVE (SA 7): SPC-4 5.13.8.  Only the reservation holder may move it."""
        reg = self.registration(nexus)
        if reg is None or reg.key != key:
            raise ReservationConflict()
        res = self.reservation
        if res is None or res.holder is not reg:  # also: all registrants types cannot be moved
            raise ReservationConflict()
        if sark == 0:
            raise invalid_param(8)
        if dest.matches(nexus.initiator_name, nexus.isid) and dest_target_port == nexus.target_port:
            raise invalid_param(24)
        probe = Registration(dest, dest_target_port, dest_relative_port, sark)
        target = next((r for r in self.registrations if self._overlaps(probe, r)), None)
        if target is None:
            if len(self.registrations) >= MAX_REGISTRATIONS:
                raise CheckCondition(SenseKey.ILLEGAL_REQUEST, INSUFFICIENT_REGISTRATION_RESOURCES)
            self.registrations.append(probe)
            target = probe
        res.holder = target
        if unreg:
            self.registrations.remove(reg)
        self.aptpl = aptpl
        return self._bump(Effects())

    # -- persistence (APTPL) ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        regs = self.registrations
        res = self.reservation
        return {
            "version": 1,
            "generation": self.generation,
            "aptpl": self.aptpl,
            "registrations": [
                {
                    "initiator": r.initiator.name,
                    "isid": r.initiator.isid.hex() if r.initiator.isid is not None else None,
                    "target_port": r.target_port,
                    "relative_port": r.relative_port,
                    "key": r.key,
                }
                for r in regs
            ],
            "reservation": None
            if res is None
            else {
                "type": int(res.type),
                "scope": res.scope,
                "holder": None if res.holder is None else regs.index(res.holder),
            },
        }

    @classmethod
    def from_dict(cls, data: Any) -> PersistentReservations:
        """Rebuild from :meth:`to_dict` output; raises ValueError on anything malformed."""
        try:
            if not isinstance(data, dict) or data.get("version") != 1:
                raise ValueError("unknown state format")
            pr = cls()
            pr.generation = _int(data["generation"], 0xFFFFFFFF)
            pr.aptpl = bool(data["aptpl"])
            for item in data["registrations"]:
                isid = item["isid"]
                tid = TransportId(str(item["initiator"]), None if isid is None else bytes.fromhex(isid))
                port = item["target_port"]
                pr.registrations.append(
                    Registration(
                        tid,
                        None if port is None else str(port),
                        _int(item["relative_port"], 0xFFFF),
                        _int(item["key"], 0xFFFFFFFFFFFFFFFF),
                    )
                )
            res = data["reservation"]
            if res is not None:
                holder = res["holder"]
                pr_type = PrType(_int(res["type"], 0xF))
                if (holder is None) != pr_type.all_registrants:
                    raise ValueError("reservation holder does not fit its type")
                pr.reservation = Reservation(
                    pr_type,
                    None if holder is None else pr.registrations[_int(holder, len(pr.registrations) - 1)],
                    _int(res["scope"], 0xF),
                )
            return pr
        except (KeyError, TypeError, IndexError) as exc:
            raise ValueError(f"malformed persistent reservation state: {exc!r}") from None


def _int(value: Any, maximum: int) -> int:
    if type(value) is not int or not 0 <= value <= maximum:
        raise ValueError(f"{value!r} is not an integer in 0..{maximum}")
    return value
