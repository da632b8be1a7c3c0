"""The SCSI device server for one target: routes a task to its logical unit and, through that LU's own
command table (``lu.commands``, one per device type: disk, tape, changer, ...), to the handler.

Order of checks for a command (SAM-5 5.14, SPC-4 5.12): logical unit exists (else 25/00, except
INQUIRY, REPORT LUNS and REQUEST SENSE, which answer for a missing LU); a pending unit attention is
reported (and consumed) for every command except INQUIRY, REPORT LUNS and REQUEST SENSE; operation
code and service action (20/00, 24/00); CDB length and reserved bits against the CDB usage data
(24/00 with a field pointer); medium present (3A/00); the per-LU access hook (reservations later);
then the handler.  ``execute`` never raises: every failure is CHECK CONDITION with sense data.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from time import perf_counter
from typing import Any, Final

from .alua import AccessState, Alua, implicit_transition
from .commands import DISK_COMMANDS
from .inquiry import inquiry
from .lu import LogicalUnit
from .sanitize import check_blocked as check_sanitize
from .sense import (
    BUS_DEVICE_RESET_FUNCTION_OCCURRED,
    CAPACITY_DATA_HAS_CHANGED,
    INTERNAL_TARGET_FAILURE,
    INVALID_COMMAND_OPERATION_CODE,
    INVALID_FIELD_IN_CDB,
    LOGICAL_UNIT_NOT_SUPPORTED,
    MEDIUM_NOT_PRESENT,
    POWER_ON_OCCURRED,
    POWER_ON_RESET,
    REPORTED_LUNS_DATA_HAS_CHANGED,
    CheckCondition,
    ReservationConflict,
    SenseKey,
    build_sense,
    invalid_field,
)
from .spc import report_luns, request_sense
from .table import CommandSpec
from .task import ITNexus, ScsiResult, ScsiTask, Status
from .thin import check_soft_threshold
from .unit import LogicalUnitBase
from .xcopy import CopyManager

AbortHook = Callable[[frozenset[ITNexus], int], None]
"""``abort_hook(nexuses, lun)``: abort every task of these I_T nexuses on this LUN (PREEMPT AND ABORT)."""

TMF_FUNCTIONS = frozenset(
    {"ABORT_TASK_SET", "CLEAR_TASK_SET", "LUN_RESET", "TARGET_WARM_RESET", "TARGET_COLD_RESET"}
)
_INQUIRY, _REQUEST_SENSE, _REPORT_LUNS = 0x12, 0x03, 0xA0
_UA_EXEMPT: Final = frozenset({_INQUIRY, _REQUEST_SENSE, _REPORT_LUNS})
_EXTENDED_COPY: Final = 0x83
_NO_LU_SPECS: Final = {op: DISK_COMMANDS.by_op[op] for op in (_INQUIRY, _REQUEST_SENSE, _REPORT_LUNS)}


def _reserved_bit_error(cdb: bytes, spec: CommandSpec) -> CheckCondition:
    for i, allowed in enumerate(spec.usage):
        bad = cdb[i] & ~allowed & 0xFF
        if bad:
            return invalid_field(i, bad.bit_length() - 1)
    return CheckCondition(SenseKey.ILLEGAL_REQUEST, INVALID_FIELD_IN_CDB)


def _failure(exc: Exception, lu: LogicalUnitBase | None) -> ScsiResult:
    """The status of a command that raised: RESERVATION CONFLICT, CHECK CONDITION with the sense it carries,
    or (a bug of ours, reported as sense, never to the transport) HARDWARE ERROR / INTERNAL TARGET
    FAILURE (SPC-4 4.5)."""
    if isinstance(exc, ReservationConflict):
        return ScsiResult(Status.RESERVATION_CONFLICT)
    descriptor = lu.d_sense if lu is not None else False
    if isinstance(exc, CheckCondition):
        return ScsiResult(Status.CHECK_CONDITION, sense=exc.sense(descriptor))
    return ScsiResult(
        Status.CHECK_CONDITION,
        sense=build_sense(SenseKey.HARDWARE_ERROR, INTERNAL_TARGET_FAILURE, descriptor=descriptor),
    )


class DeviceServer:
    """The device server of one SCSI target device: its logical units by LUN."""

    def __init__(
        self, luns: dict[int, LogicalUnitBase], *, target_name: str, alua: Alua | None = None
    ) -> None:
        self.target_name = target_name
        self.alua = alua if alua is not None else Alua()  # target port groups and their ALUA states
        self.luns: dict[int, LogicalUnitBase] = dict(luns)
        self.nexuses: set[ITNexus] = set()
        self.abort_hook: AbortHook | None = None  # set by the transport (SPC-4 5.13.11.2.6)
        self.copy_manager = CopyManager()  # EXTENDED COPY results held per I_T nexus (xcopy.py)
        # [bytes read, bytes written] per I_T nexus, keyed by id(): the transport passes the session's own
        # ITNexus object with every task, and an int hashes faster than the dataclass
        self.nexus_io: dict[int, list[int]] = {}
        for lun, lu in self.luns.items():
            if lu.lun != lun:
                raise ValueError(f"LUN key {lun} does not match LogicalUnit.lun {lu.lun}")

    # -- command execution -----------------------------------------------------------------------

    async def execute(self, task: ScsiTask) -> ScsiResult:
        """Execute one SCSI command; never raises for bad input (:meth:`submit`, awaited)."""
        step = self.submit(task)
        return step if isinstance(step, ScsiResult) else await step

    def submit(self, task: ScsiTask) -> ScsiResult | Coroutine[Any, Any, ScsiResult]:
        """Start one SCSI command: its result when it completes without waiting (a READ or WRITE the store
        serves at once, e.g. the file store from the page cache), else the coroutine to await for it, which
        the caller must await or run to its end (a waiting WRITE holds its LBA range until then).  Never
        raises for bad input: every failure is a result (CHECK CONDITION with sense data, RESERVATION
        CONFLICT).  Counts the command once in the LU's :class:`~cistern.scsi.stats.LuStats` and the
        nexus' byte counters (read by the metrics)."""
        lu = self.luns.get(task.lun)
        start = perf_counter()
        try:
            step = self._start(task, lu)  # the checks run now; the command's own work may wait
        except Exception as exc:
            return self._done(task, lu, _failure(exc, lu), start)
        if isinstance(step, ScsiResult):
            return self._done(task, lu, step, start)
        return self._waiting(task, lu, step, start)

    async def _waiting(
        self, task: ScsiTask, lu: LogicalUnitBase | None, step: Awaitable[ScsiResult], start: float
    ) -> ScsiResult:
        """A command whose work waits (thread-pool I/O, a write's data): it counts as in flight meanwhile."""
        stats = lu.stats if lu is not None else None
        if stats is not None:
            stats.in_flight += 1
        try:
            result = await step
        except Exception as exc:
            result = _failure(exc, lu)
        finally:
            if stats is not None:
                stats.in_flight -= 1
        return self._done(task, lu, result, start)

    def _done(
        self, task: ScsiTask, lu: LogicalUnitBase | None, result: ScsiResult, start: float
    ) -> ScsiResult:
        """Count the finished command (``start``: its perf_counter() at submission) and answer it."""
        if lu is not None:
            lu.stats.record(task, result, perf_counter() - start, self.nexus_io.get(id(task.nexus)))
        return result

    def _start(self, task: ScsiTask, lu: LogicalUnitBase | None) -> ScsiResult | Awaitable[ScsiResult]:
        """The checks every command passes (SAM-5/SPC-4 order: SANITIZE in progress, unit attention, opcode,
        reserved bits, medium, ALUA state, reservations, write protection), then the command's handler: its
        result, or what to await for it (a plain call, not a coroutine of its own, so a command costs one
        coroutine less).  Raises CheckCondition and ReservationConflict (:meth:`submit` turns them into
        status)."""
        cdb = task.cdb if type(task.cdb) is bytes else bytes(task.cdb)
        if not cdb:
            raise CheckCondition(SenseKey.ILLEGAL_REQUEST, INVALID_COMMAND_OPERATION_CODE)
        op = cdb[0]
        if lu is None:
            return self._no_lu(task, cdb, op)
        if lu.sanitize is not None and isinstance(
            lu, LogicalUnit
        ):  # SANITIZE IN PROGRESS / FAILED come before unit attentions
            blocked = check_sanitize(lu, op)
            if blocked is not None:
                return blocked
        if lu.ua and op not in _UA_EXEMPT:
            ua = lu.pop_ua(task.nexus)
            if ua is not None:
                return ScsiResult(
                    Status.CHECK_CONDITION,
                    sense=build_sense(SenseKey.UNIT_ATTENTION, ua, descriptor=lu.d_sense),
                )
        table = lu.commands
        spec = table.by_op[op]
        if spec is None:
            spec = table.lookup(cdb)
        if not spec.available(lu):
            if spec.service_action is not None:
                raise invalid_field(1, 4)
            raise CheckCondition(SenseKey.ILLEGAL_REQUEST, INVALID_COMMAND_OPERATION_CODE)
        n = len(spec.usage)
        if len(cdb) < n:
            raise CheckCondition(SenseKey.ILLEGAL_REQUEST, INVALID_FIELD_IN_CDB)
        if int.from_bytes(cdb[:n], "big") & spec.inv_mask:
            raise _reserved_bit_error(cdb, spec)
        if spec.needs_medium and not lu.medium_present:
            raise CheckCondition(SenseKey.NOT_READY, MEDIUM_NOT_PRESENT)
        self.alua.check(task.nexus, cdb)  # ALUA state of the port the command came through
        lu.check_access(task, spec)
        if spec.writes:
            if op != _EXTENDED_COPY:  # XCOPY writes its destination LU, which may be another one
                lu.check_writable()  # DATA PROTECT for every medium-changing command
            if lu.soft_threshold is not None and isinstance(lu, LogicalUnit):
                return self._write_then_check_threshold(spec, lu, task, cdb)
        return spec.handler(self, lu, task, cdb)

    async def _write_then_check_threshold(
        self, spec: CommandSpec, lu: LogicalUnit, task: ScsiTask, cdb: bytes
    ) -> ScsiResult:
        """A medium-changing command on a thin LU with a soft threshold: the command, then the threshold
        check (a unit attention when crossed, SBC-4 4.7.3.8)."""
        step = spec.handler(self, lu, task, cdb)
        result = step if isinstance(step, ScsiResult) else await step
        await check_soft_threshold(lu)
        return result

    async def _no_lu(self, task: ScsiTask, cdb: bytes, op: int) -> ScsiResult:
        """Commands addressed to a LUN that has no logical unit (SPC-4 6.6.2, 6.33, 6.39)."""
        handler = {_INQUIRY: inquiry, _REPORT_LUNS: report_luns, _REQUEST_SENSE: request_sense}.get(op)
        if handler is None:
            raise CheckCondition(SenseKey.ILLEGAL_REQUEST, LOGICAL_UNIT_NOT_SUPPORTED)
        spec = _NO_LU_SPECS[op]
        assert spec is not None
        if len(cdb) < len(spec.usage):
            raise CheckCondition(SenseKey.ILLEGAL_REQUEST, INVALID_FIELD_IN_CDB)
        if int.from_bytes(cdb[: len(spec.usage)], "big") & spec.inv_mask:
            raise _reserved_bit_error(cdb, spec)
        step = handler(self, None, task, cdb)
        return step if isinstance(step, ScsiResult) else await step

    # -- I_T nexus events and task management -----------------------------------------------------

    def nexus_added(self, nexus: ITNexus) -> None:
        """A new I_T nexus exists (login): POWER ON, RESET, OR BUS DEVICE RESET OCCURRED for it."""
        self.nexuses.add(nexus)
        self.nexus_io[id(nexus)] = [0, 0]
        for lu in self.luns.values():
            lu.nexuses.add(nexus)
            lu.establish_ua(nexus, POWER_ON_RESET)

    def nexus_lost(self, nexus: ITNexus) -> None:
        """I_T nexus loss (SAM-5 6.3.4): drop its unit attentions and medium-removal holds."""
        self.nexuses.discard(nexus)
        self.nexus_io.pop(id(nexus), None)
        self.copy_manager.forget_nexus(nexus)
        for lu in self.luns.values():
            lu.forget_nexus(nexus)

    def task_management(self, function: str, nexus: ITNexus, lun: int | None) -> None:
        """Unit attentions required by SAM-5 after a task management function.

        The task set type is one per I_T nexus (control mode page TST=001b), so ABORT TASK SET and
        CLEAR TASK SET only affect the caller's own tasks and establish nothing.
        """
        if function not in TMF_FUNCTIONS:
            raise ValueError(f"unknown task management function {function!r}")
        if function == "LUN_RESET":
            lu = self.luns.get(lun) if lun is not None else None
            if lu is not None:
                lu.prevent.clear()
                lu.reservations.reset()
                lu.establish_ua_all(BUS_DEVICE_RESET_FUNCTION_OCCURRED)
        elif function in ("TARGET_WARM_RESET", "TARGET_COLD_RESET"):
            cold = function == "TARGET_COLD_RESET"
            for lu in self.luns.values():
                lu.prevent.clear()
                lu.reservations.reset()
                if cold:
                    lu.d_sense = lu.swp = False
                lu.establish_ua_all(POWER_ON_OCCURRED if cold else POWER_ON_RESET)

    # -- configuration changes ---------------------------------------------------------------------

    def add_lun(self, lu: LogicalUnitBase) -> None:
        if lu.lun in self.luns:
            raise ValueError(f"LUN {lu.lun} already exists")
        for other in self.luns.values():
            other.establish_ua_all(REPORTED_LUNS_DATA_HAS_CHANGED)
        self.luns[lu.lun] = lu
        for nexus in self.nexuses:
            lu.nexuses.add(nexus)
            lu.establish_ua(nexus, POWER_ON_RESET)

    def remove_lun(self, lun: int) -> LogicalUnitBase | None:
        lu = self.luns.pop(lun, None)
        if lu is not None:
            for other in self.luns.values():
                other.establish_ua_all(REPORTED_LUNS_DATA_HAS_CHANGED)
        return lu

    def set_access_state(self, group_id: int, state: AccessState | str) -> bool:
        """Implicit ALUA transition of target port group ``group_id`` (SPC-4 5.15.2.2): every I_T nexus
        gets ASYMMETRIC ACCESS STATE CHANGED when the state moved.  ``KeyError`` for an unknown group."""
        return implicit_transition(self.alua, self.luns.values(), group_id, state)

    def capacity_changed(self, lun: int) -> None:
        """Re-read a LU's capacity from its store; CAPACITY DATA HAS CHANGED (2A/09) when it moved."""
        lu = self.luns.get(lun)
        if lu is not None and lu.refresh_capacity():
            lu.establish_ua_all(CAPACITY_DATA_HAS_CHANGED)
