"""PERSISTENT RESERVE IN / OUT (SPC-4 6.16, 6.17) and SPC-2 RESERVE / RELEASE (6) and (10) handlers.

The handlers parse the CDB and parameter list (hostile input: every malformed field is sense data),
run the service action on the LU's :class:`~cistern.scsi.pr.PersistentReservations`, persist APTPL
state before completing, establish the unit attentions the action produces on the other I_T nexuses,
and for PREEMPT AND ABORT ask the transport, through ``DeviceServer.abort_hook``, to abort the tasks of
the preempted I_T nexuses.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import TYPE_CHECKING, Any

from .pr import VALID_TYPES, PersistentReservations
from .sense import (
    INTERNAL_TARGET_FAILURE,
    PARAMETER_LIST_LENGTH_ERROR,
    CheckCondition,
    ReservationConflict,
    SenseKey,
    invalid_field,
    invalid_param,
)
from .task import ITNexus, ScsiResult, ScsiTask
from .transport_id import TransportId, TransportIdError, decode, decode_list

if TYPE_CHECKING:
    from .lu import LogicalUnit
    from .pr import Effects
    from .reservations import LuReservations

log = logging.getLogger(__name__)

# PERSISTENT RESERVE IN service actions
READ_KEYS, READ_RESERVATION, REPORT_CAPABILITIES, READ_FULL_STATUS = 0, 1, 2, 3
# PERSISTENT RESERVE OUT service actions
REGISTER, RESERVE, RELEASE, CLEAR, PREEMPT, PREEMPT_AND_ABORT = 0, 1, 2, 3, 4, 5
REGISTER_AND_IGNORE_EXISTING_KEY, REGISTER_AND_MOVE = 6, 7

_BASIC_LENGTH = 24
_TYPE_MASK = bytes(
    (0x80 | 0x40 | 0x20 | 0x08 | 0x02, 0x01)
)  # WR_EX_AR EX_AC_RO WR_EX_RO EX_AC WR_EX; EX_AC_AR
_ALLOW_COMMANDS = 0b010  # SPC-4 6.16.4: TUR allowed through WE and EA; reads of LU state through WE


# ---------------------------------------------------------------------------- PERSISTENT RESERVE IN


def read_keys_data(pr: PersistentReservations) -> bytes:
    keys = b"".join(struct.pack(">Q", r.key) for r in pr.registrations)
    return struct.pack(">II", pr.generation, len(keys)) + keys


def read_reservation_data(pr: PersistentReservations) -> bytes:
    res = pr.reservation
    if res is None:
        return struct.pack(">II", pr.generation, 0)
    key = 0 if res.holder is None else res.holder.key
    return struct.pack(">IIQ4xxBxx", pr.generation, 16, key, (res.scope << 4) | res.type)


def report_capabilities_data(pr: PersistentReservations, ptpl_capable: bool) -> bytes:
    # CRH, SIP_C, ATP_C, PTPL_C | TMV, ALLOW COMMANDS, PTPL_A
    b2 = 0x10 | 0x08 | 0x04 | (0x01 if ptpl_capable else 0)
    b3 = 0x80 | (_ALLOW_COMMANDS << 4) | (0x01 if pr.aptpl else 0)
    return struct.pack(">HBB2s2x", 8, b2, b3, _TYPE_MASK)


def read_full_status_data(pr: PersistentReservations) -> bytes:
    body = bytearray()
    res = pr.reservation
    for r in pr.registrations:
        holder = pr.holds(r)
        tid = r.initiator.encode()
        body += struct.pack(
            ">Q4xBB4xHI",
            r.key,
            (0x02 if r.all_tg_pt else 0) | (0x01 if holder else 0),
            ((res.scope << 4) | res.type) if holder and res is not None else 0,
            0 if r.all_tg_pt else r.relative_port,
            len(tid),
        )
        body += tid
    return struct.pack(">II", pr.generation, len(body)) + bytes(body)


async def persistent_reserve_in(server: object, lu: LogicalUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    (alloc,) = struct.unpack_from(">H", cdb, 7)
    sa = cdb[1] & 0x1F
    res = lu.reservations
    pr = res.pr
    if sa == READ_KEYS:
        data = read_keys_data(pr)
    elif sa == READ_RESERVATION:
        data = read_reservation_data(pr)
    elif sa == REPORT_CAPABILITIES:
        data = report_capabilities_data(pr, res.ptpl_capable)
    elif sa == READ_FULL_STATUS:
        data = read_full_status_data(pr)
    else:
        raise invalid_field(1, 4)
    return ScsiResult(data_in=data[:alloc], transfer_length=alloc)


# ---------------------------------------------------------------------------- PERSISTENT RESERVE OUT


def _length_error() -> CheckCondition:
    return CheckCondition(SenseKey.ILLEGAL_REQUEST, PARAMETER_LIST_LENGTH_ERROR)


def _tid_error(exc: TransportIdError) -> CheckCondition:
    return invalid_param(exc.offset)


def _basic(lu: LogicalUnit, task: ScsiTask, sa: int, scope: int, type_: int, data: bytes) -> Effects:
    """Every service action except REGISTER AND MOVE: the 24-byte basic parameter list (6.17.3)."""
    pr = lu.reservations.pr
    if len(data) < _BASIC_LENGTH:
        raise _length_error()
    key, sark = struct.unpack_from(">QQ", data, 0)
    flags = data[20]
    spec_i_pt, all_tg_pt, aptpl = bool(flags & 0x08), bool(flags & 0x04), bool(flags & 0x01)
    tids: list[TransportId] = []
    if spec_i_pt:
        if sa != REGISTER:
            raise invalid_param(20, 3)
        if len(data) < _BASIC_LENGTH + 4:
            raise _length_error()
        (tid_length,) = struct.unpack_from(">I", data, 24)
        if _BASIC_LENGTH + 4 + tid_length != len(data):
            raise _length_error()
        try:
            tids = decode_list(data, 28, tid_length)
        except TransportIdError as exc:
            raise _tid_error(exc) from None
    elif len(data) != _BASIC_LENGTH:
        raise _length_error()
    nexus = task.nexus
    if sa in (REGISTER, REGISTER_AND_IGNORE_EXISTING_KEY):
        if aptpl and not lu.reservations.ptpl_capable:
            raise invalid_param(20, 0)
        return pr.register(
            nexus,
            key,
            sark,
            ignore_existing=sa == REGISTER_AND_IGNORE_EXISTING_KEY,
            all_tg_pt=all_tg_pt,
            aptpl=aptpl,
            spec_i_pt=tids,
        )
    if sa in (RESERVE, PREEMPT, PREEMPT_AND_ABORT):
        if scope != 0:
            raise invalid_field(2, 7)
        if type_ not in VALID_TYPES:
            raise invalid_field(2, 3)
    if sa == RESERVE:
        return pr.reserve(nexus, key, type_, scope)
    if sa == RELEASE:
        return pr.release(nexus, key, type_, scope)
    if sa == CLEAR:
        return pr.clear(nexus, key)
    return pr.preempt(nexus, key, sark, type_, scope)


def _register_and_move(lu: LogicalUnit, task: ScsiTask, data: bytes) -> Effects:
    """REGISTER AND MOVE parameter list (SPC-4 6.17.4)."""
    if len(data) < _BASIC_LENGTH:
        raise _length_error()
    key, sark, flags, rel_port, tid_length = struct.unpack_from(">QQxBHI", data, 0)
    if _BASIC_LENGTH + tid_length > len(data):
        raise _length_error()
    if tid_length == 0:
        raise invalid_param(20)
    try:
        dest, _ = decode(data[: _BASIC_LENGTH + tid_length], _BASIC_LENGTH)
    except TransportIdError as exc:
        raise _tid_error(exc) from None
    aptpl = bool(flags & 0x01)
    if aptpl and not lu.reservations.ptpl_capable:
        raise invalid_param(17, 0)
    target_port = _target_port_of(lu, task.nexus, rel_port)
    if target_port is None:
        raise invalid_param(18)
    return lu.reservations.pr.register_and_move(
        task.nexus, key, sark, dest, target_port, rel_port, unreg=bool(flags & 0x02), aptpl=aptpl
    )


def _target_port_of(lu: LogicalUnit, nexus: ITNexus, rel_port: int) -> str | None:
    if rel_port == nexus.relative_port:
        return nexus.target_port
    for other in lu.nexuses:
        if other.relative_port == rel_port:
            return other.target_port
    return None


async def persistent_reserve_out(server: object, lu: LogicalUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    sa = cdb[1] & 0x1F
    scope, type_ = cdb[2] >> 4, cdb[2] & 0x0F
    (length,) = struct.unpack_from(">I", cdb, 5)
    data = bytes(task.data_out or b"")[:length]
    if len(data) < length:
        raise _length_error()
    res = lu.reservations
    async with res.lock:
        if sa == REGISTER_AND_MOVE:
            effects = _register_and_move(lu, task, data)
        elif sa <= REGISTER_AND_IGNORE_EXISTING_KEY:
            effects = _basic(lu, task, sa, scope, type_, data)
        else:
            raise invalid_field(1, 4)
        if effects.changed:
            await _persist(res)
    _apply(server, lu, task, sa, effects)
    return ScsiResult(transfer_length=length)


async def _persist(res: LuReservations) -> None:
    state = res.state
    if state is None:
        return
    try:
        if res.pr.aptpl:
            await asyncio.to_thread(state.save, res.pr.to_dict())
            res.persisted = True
        elif res.persisted:
            await asyncio.to_thread(state.remove)
            res.persisted = False
    except OSError as exc:
        log.error("persistent reservation state %s: %s", state.path, exc)
        raise CheckCondition(SenseKey.HARDWARE_ERROR, INTERNAL_TARGET_FAILURE) from None


def _apply(server: object, lu: LogicalUnit, task: ScsiTask, sa: int, effects: Effects) -> None:
    """Establish the unit attentions; PREEMPT AND ABORT: abort the preempted nexuses' tasks."""
    me = task.nexus
    for reg, asc_ascq in effects.ua:
        for nexus in lu.nexuses:
            if nexus != me and reg.matches(nexus):
                lu.establish_ua(nexus, asc_ascq)
    if sa == PREEMPT_AND_ABORT and effects.preempted:
        victims = frozenset(n for n in lu.nexuses if n != me and any(r.matches(n) for r in effects.preempted))
        hook: Any = getattr(server, "abort_hook", None)
        if victims and hook is not None:
            try:
                hook(victims, lu.lun)
            except Exception:
                log.exception("abort_hook failed for PREEMPT AND ABORT")


# ---------------------------------------------------------------------------- SPC-2 RESERVE / RELEASE


def _crh_no_op(res: LuReservations, nexus: ITNexus) -> bool:
    """SPC-4 5.13.3 (CRH=1): True if RESERVE/RELEASE completes GOOD without effect; raises on conflict."""
    pr = res.pr
    if not pr.registrations:
        return False
    if pr.is_holder(nexus):
        return True
    rsv = pr.reservation
    shared = rsv is not None and (rsv.type.registrants_only or rsv.type.all_registrants)
    if shared and pr.registration(nexus) is not None:
        return True
    raise ReservationConflict()


async def reserve(server: object, lu: LogicalUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    """RESERVE(6) / RESERVE(10) (SPC-2 7.21, 7.22): an exclusive reservation for this I_T nexus."""
    res = lu.reservations
    if not _crh_no_op(res, task.nexus):
        if res.spc2_holder is not None and res.spc2_holder != task.nexus:
            raise ReservationConflict()
        res.spc2_holder = task.nexus
    return ScsiResult(transfer_length=0)


async def release(server: object, lu: LogicalUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    """RELEASE(6) / RELEASE(10) (SPC-2 7.19, 7.20): a non-holder's RELEASE is a GOOD no-op."""
    res = lu.reservations
    if not _crh_no_op(res, task.nexus) and res.spc2_holder == task.nexus:
        res.spc2_holder = None
    return ScsiResult(transfer_length=0)
