"""An enclosure services logical unit (SES-3, peripheral type 0x0D) reporting the target's RAID arrays.

One array device slot element per member device of every RAID LUN of the target (members, spares and
stale/failed devices still configured, plus an element for each role with no device at all), mapped the
way ledmon maps md states to SES (``ibpi_to_ses``): in-sync member of a healthy array → OK; member of a
degraded array → IN CRIT ARRAY; of a failed array → IN FAILED ARRAY; the member being rebuilt →
REBUILD/REMAP; spare → HOT SPARE; members during check/repair → CONS CHECK; failed, missing or stale
device → FAULT SENSED with element status Critical (Unrecoverable when the array failed).  IDENT and FAULT
REQUESTED come from SEND DIAGNOSTIC (enclosure control page 0x02).  Temperatures and fans come from the
host's hwmon, otherwise they are "Not available".

The configuration (element list and texts) is rebuilt on every RECEIVE DIAGNOSTIC RESULTS; the generation
code goes up by one whenever it differs from the last one reported (a spare added, a missing role filled).
Commands: TEST UNIT READY, REQUEST SENSE, INQUIRY, MODE SENSE/SELECT, RECEIVE DIAGNOSTIC RESULTS (SPC-4
6.27), SEND DIAGNOSTIC (SPC-4 6.42; PF=1 with a page, or SELFTEST=1 which always passes), REPORT LUNS,
REPORT SUPPORTED OPERATION CODES.
"""

from __future__ import annotations

import hashlib
import struct
from typing import TYPE_CHECKING, ClassVar

from . import ses_pages as sp
from .sense import PARAMETER_LIST_LENGTH_ERROR, CheckCondition, SenseKey, invalid_field, invalid_param
from .spc_commands import spc_core
from .table import CommandSpec, CommandTable
from .task import ScsiResult, ScsiTask
from .unit import ISCSI, SAM5, SPC4, LogicalUnitBase

if TYPE_CHECKING:
    from ..storage.raid import RaidStore

SES3 = 0x0680  # version descriptor: SES-3 (no version claimed)


def _sas_address(device_uuid: str) -> bytes:
    digest = hashlib.sha256(device_uuid.encode()).digest()
    return bytes([0x50 | (digest[0] & 0x0F)]) + digest[1:8]


def array_slots(label: str, arr: RaidStore) -> list[tuple[str, sp.Slot]]:
    """(stable key, slot) for every device of ``arr`` (see module docstring for the mapping)."""
    state = arr.state
    failed = state == "failed"
    degraded = arr.degraded
    checking = arr.sync.action in ("check", "repair")
    out: list[tuple[str, sp.Slot]] = []
    bad_status = sp.UNRECOVERABLE if failed else sp.CRITICAL
    for m in arr.members():
        text = f"{label} {m.name}"
        slot = sp.Slot(text, sas_address=_sas_address(m.device_uuid))
        if m.state == "in_sync":
            slot.status = sp.CRITICAL if failed else sp.OK
            slot.bits = sp.SLOT_INFAILED if failed else sp.SLOT_OK | (sp.SLOT_INCRIT if degraded else 0)
            if checking:
                slot.bits |= sp.SLOT_CONSCHECK
        elif m.state == "rebuilding":
            slot.status = sp.NONCRITICAL
            slot.bits = sp.SLOT_REBUILD | (sp.SLOT_INFAILED if failed else 0)
        elif m.state == "spare":
            slot.status, slot.bits = sp.OK, sp.SLOT_OK | sp.SLOT_HOTSPARE
        else:  # faulty or stale: a failed drive still in the enclosure
            slot.status = bad_status
            slot.bits = sp.SLOT_INFAILED if failed else 0
            slot.fault_sensed = True
        out.append((f"{label}/{m.device_uuid}", slot))
    for role, held in enumerate(arr.slots):
        if held is None:
            slot = sp.Slot(f"{label} role {role} (no device)", bad_status,
                           sp.SLOT_INFAILED if failed else 0, fault_sensed=True)
            out.append((f"{label}/role{role}", slot))
    return out


class EnclosureUnit(LogicalUnitBase):
    """The SES LU of a target; ``arrays`` are (label, RAID store) of the RAID LUNs it reports."""

    device_type: ClassVar[int] = 0x0D
    version_descriptors: ClassVar[tuple[int, ...]] = (SAM5, ISCSI, SPC4, SES3)

    def __init__(self, arrays: list[tuple[str, RaidStore]], *, lun: int, serial: str | None = None,
                 vendor: str = "CISTERN", product: str = "cistern SES", revision: str = "0001",
                 sensors: object | None = None) -> None:
        super().__init__(lun=lun, commands=SES_COMMANDS, vendor=vendor, product=product, revision=revision,
                         serial=serial)
        self.arrays = arrays
        self.generation = 0
        self._signature: tuple[str, ...] | None = None
        self.ident: dict[str, bool] = {}
        self.fault_requested: dict[str, bool] = {}
        self.enclosure_ident = False
        self._keys: list[str] = []
        from ..storage.raid.hwmon import read_sensors

        self._read_sensors = sensors if callable(sensors) else read_sensors

    def model(self) -> sp.Enclosure:
        """The enclosure as it is now; bumps the generation code when its configuration changed."""
        pairs: list[tuple[str, sp.Slot]] = []
        for label, arr in self.arrays:
            pairs += array_slots(label, arr)
        temps, fans = self._read_sensors()
        signature = tuple(k for k, _ in pairs) + tuple(s.text for _, s in pairs) + (
            f"t{len(temps)}", f"f{len(fans)}")
        if signature != self._signature:
            if self._signature is not None:
                self.generation = (self.generation + 1) & 0xFFFFFFFF
            self._signature = signature
        self._keys = [k for k, _ in pairs]
        for key, slot in pairs:
            slot.ident = self.ident.get(key, False)
            slot.fault_requested = self.fault_requested.get(key, False)
        return sp.Enclosure(
            self.naa_id[:8], generation=self.generation, slots=[s for _, s in pairs],
            temperatures=[sp.Sensor(r.label, r.value, r.crit, r.warn) for r in temps],
            fans=[sp.Sensor(r.label, r.value) for r in fans],
            ident=self.enclosure_ident,
        )

    def apply_control(self, data: bytes) -> None:
        """SEND DIAGNOSTIC enclosure control page: RQST IDENT / RQST FAULT of the selected elements."""
        enc = self.model()
        try:
            slots, ident = sp.parse_control(enc, data)
        except sp.ControlError as exc:
            raise invalid_param(exc.offset) from None
        for ctl in slots:
            key = self._keys[ctl.index]
            self.ident[key] = ctl.ident
            self.fault_requested[key] = ctl.fault
        if ident is not None:
            self.enclosure_ident = ident


async def receive_diagnostic_results(server: object, lu: EnclosureUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    """RECEIVE DIAGNOSTIC RESULTS (SPC-4 6.27): PCV=1 returns the page; PCV=0 returns page 0x00."""
    pcv = cdb[1] & 0x01
    code = cdb[2] if pcv else 0x00
    (alloc,) = struct.unpack_from(">H", cdb, 3)
    if code not in sp.SUPPORTED_PAGES:
        raise invalid_field(2)
    data = sp.page(lu.model(), code)
    return ScsiResult(data_in=data[:alloc], transfer_length=alloc)


async def send_diagnostic(server: object, lu: EnclosureUnit, task: ScsiTask, cdb: bytes) -> ScsiResult:
    """SEND DIAGNOSTIC (SPC-4 6.42): the default self-test (SELFTEST=1, nothing to fail) or, with PF=1,
    the enclosure control page 0x02; other pages and self-test codes are refused."""
    code = cdb[1] >> 5
    pf, selftest = bool(cdb[1] & 0x10), bool(cdb[1] & 0x04)
    (length,) = struct.unpack_from(">H", cdb, 3)
    if selftest:
        if code or length:
            raise invalid_field(1, 7 if code else 4)
        return ScsiResult(transfer_length=0)
    if code:
        raise invalid_field(1, 7)
    if length == 0:
        return ScsiResult(transfer_length=0)
    if not pf:
        raise invalid_field(1, 4)
    data = bytes(task.data_out or b"")[:length]
    if len(data) < length or length < 4:
        raise CheckCondition(SenseKey.ILLEGAL_REQUEST, PARAMETER_LIST_LENGTH_ERROR)
    if data[0] != 0x02:
        raise invalid_param(0)
    lu.apply_control(data)
    return ScsiResult(transfer_length=length)


def _u(*b: int) -> bytes:
    return bytes(b)


# fmt: off
SES_COMMANDS = CommandTable((
    *spc_core(),
    CommandSpec(0x1C, None, "RECEIVE DIAGNOSTIC RESULTS", _u(0x1C, 0x01, 0xFF, 0xFF, 0xFF, 0),
                receive_diagnostic_results, needs_medium=False),
    CommandSpec(0x1D, None, "SEND DIAGNOSTIC", _u(0x1D, 0xF4, 0, 0xFF, 0xFF, 0), send_diagnostic, needs_medium=False),
))
# fmt: on
