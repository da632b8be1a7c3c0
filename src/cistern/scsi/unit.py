"""The logical-unit base every device type builds on (SAM-5 4.6, SPC-4).

A device type (SBC disk ``lu.LogicalUnit``, SSC tape ``tape.TapeUnit``, SMC changer
``changer.ChangerUnit``; SES enclosure next) is a subclass of :class:`LogicalUnitBase` that sets:

- ``device_type`` (PERIPHERAL DEVICE TYPE, SPC-4 6.6.2) and ``version_descriptors`` (class attributes);
- ``commands``: its own :class:`~cistern.scsi.table.CommandTable` (passed to ``__init__``); the device
  server dispatches through it and REPORT SUPPORTED OPERATION CODES reports it;
- optionally the page hooks below, each returning ``{code: builder}`` in page-code order:
  ``vpd_pages()`` (type-specific VPD pages beyond 0x00/0x80/0x83, builder(lu) -> page body),
  ``mode_pages()`` (builder(lu, pc) -> whole mode page; the base gives control page 0x0A),
  ``log_pages()`` (builder(lu) -> log page parameters; page 0x00 is generated), and for MODE SENSE /
  SELECT ``mode_device_specific()``, ``mode_block_descriptor()``, ``mode_check_descriptor()`` and
  ``mode_apply()``;
- ``check_writable()`` / ``medium_present`` when writes or medium presence mean more than the base's
  read-only / SWP flags.

The base owns what every type shares: identity (vendor, product, revision, serial, NAA designator),
the I_T nexuses that see it, their unit attentions, PREVENT ALLOW MEDIUM REMOVAL holders, SPC-2 and
persistent reservations, and the control mode page state (D_SENSE, SWP).  Handlers have the signature
``handler(server, lu, task, cdb)``, answer a :class:`ScsiResult` or an awaitable of one (most are
``async def``; READ and WRITE answer at once when the store does not wait) and raise
:class:`CheckCondition` for errors;
the generic SPC handlers (``spc``, ``inquiry``, ``mode``, ``log``, ``pr_commands``, ``table``) work on
any subclass, so a new type's table usually lists them next to its own commands.

To add a device type: subclass, build a ``CommandTable`` from ``CommandSpec``s (CDB usage data is also
the reserved-bit mask), pass it to ``super().__init__``, and construct the LU where the target builds
its LUNs (``target/server.py``); ``DeviceServer`` needs no change.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from mypy_extensions import mypyc_attr

from .reservations import LuReservations
from .sense import (
    MEDIUM_NOT_PRESENT,
    POWER_ON_RESET,
    SOFTWARE_WRITE_PROTECTED,
    WRITE_PROTECTED,
    CheckCondition,
    SenseKey,
    invalid_param,
)
from .stats import LuStats
from .task import ITNexus, ScsiTask

if TYPE_CHECKING:
    from .table import CommandSpec, CommandTable

UA_QUEUE_DEPTH = 8
SAM5, ISCSI, SPC4 = 0x00A0, 0x0960, 0x0460  # version descriptors (SPC-4 table 37)

VpdBuilder = Callable[["LogicalUnitBase"], bytes]
ModePageBuilder = Callable[..., bytes]  # (lu, pc) -> the whole page
LogPageBuilder = Callable[..., bytes]  # (lu) -> the page's parameters


def ascii_field(value: str, width: int) -> bytes:
    """``value`` as printable ASCII, space padded / truncated to ``width`` (SPC-4 4.4.1)."""
    raw = value.encode("ascii", "replace")[:width]
    return bytes(c if 0x20 <= c <= 0x7E else 0x20 for c in raw).ljust(width, b" ")


@mypyc_attr(allow_interpreted_subclasses=True)  # tape, changer, SES, RAID units subclass it
class LogicalUnitBase:
    """State and hooks shared by every device type; see the module docstring.

    ``naa_id`` is an 8-byte (NAA 3/5) or 16-byte (NAA 6) designator; when omitted a locally assigned
    NAA 3 designator is derived from ``serial``.  Raises ``ValueError`` for a LUN outside 0..16383 or a
    malformed designator.
    """

    device_type: ClassVar[int] = 0x00
    version_descriptors: ClassVar[tuple[int, ...]] = (SAM5, ISCSI, SPC4)
    three_pc: ClassVar[bool] = False  # 3PC bit of standard INQUIRY (EXTENDED COPY)
    # Defaults the device server reads on every LU (disk features other types lack).
    thin: bool = False
    soft_threshold: int | None = None
    sanitize: object | None = None

    def __init__(
        self,
        *,
        lun: int,
        commands: CommandTable,
        vendor: str = "CISTERN",
        product: str = "cistern",
        revision: str = "0001",
        serial: str | None = None,
        naa_id: bytes | None = None,
        read_only: bool = False,
        removable: bool = False,
        pr_state_path: str | None = None,
    ) -> None:
        if not 0 <= lun < 16384:
            raise ValueError("lun must be in 0..16383")
        self.lun = lun
        self.commands = commands
        self.vendor = ascii_field(vendor, 8)
        self.product = ascii_field(product, 16)
        self.revision = ascii_field(revision, 4)
        self.serial = serial if serial is not None else f"cistern-{lun:05d}"
        if naa_id is None:
            digest = hashlib.sha256(self.serial.encode()).digest()
            naa_id = bytes([0x30 | (digest[0] & 0x0F)]) + digest[1:8]
        if len(naa_id) not in (8, 16) or naa_id[0] >> 4 not in (2, 3, 5, 6):
            raise ValueError("naa_id must be an 8-byte NAA 2/3/5 or 16-byte NAA 6 designator")
        self.naa_id = bytes(naa_id)
        self.read_only = read_only
        self.removable = removable
        # Control mode page (current values; nothing is saveable).
        self.d_sense = False
        self.swp = False
        # Medium state (removable units); PREVENT ALLOW MEDIUM REMOVAL holders.
        self.medium_present = True
        self.prevent: set[ITNexus] = set()
        # Unit attention conditions per I_T nexus, oldest first.
        self.ua: dict[ITNexus, list[tuple[int, int]]] = {}
        self.nexuses: set[ITNexus] = set()
        # SPC-2 and persistent reservations; APTPL state in ``pr_state_path`` (None: PTPL_C=0).
        self.reservations = LuReservations(pr_state_path)
        # I/O counters, bumped once per command by DeviceServer.submit; read by the metrics (stats.py)
        self.stats = LuStats()

    # -- hooks -----------------------------------------------------------------------------------

    def check_access(self, task: ScsiTask, spec: CommandSpec) -> None:
        """Per-LU admission check before a command runs (reservations).

        Raise :class:`CheckCondition` / ``ReservationConflict``, or return normally to let it run.
        """
        self.reservations.check(task, spec)

    def check_medium(self) -> None:
        """NOT READY / MEDIUM NOT PRESENT (02/3A/00) when there is no medium."""
        if not self.medium_present:
            raise CheckCondition(SenseKey.NOT_READY, MEDIUM_NOT_PRESENT)

    def check_writable(self) -> None:
        """DATA PROTECT before a medium-changing command (``CommandSpec.writes``)."""
        if self.read_only:
            raise CheckCondition(SenseKey.DATA_PROTECT, WRITE_PROTECTED)
        if self.swp:
            raise CheckCondition(SenseKey.DATA_PROTECT, SOFTWARE_WRITE_PROTECTED)

    def refresh_capacity(self) -> bool:
        """Re-read the capacity from the medium; True when it changed (disk only)."""
        return False

    def vpd_pages(self) -> dict[int, VpdBuilder]:
        """Type-specific VPD pages (beyond 0x00, 0x80, 0x83): {page code: builder(lu) -> body}."""
        return {}

    def mode_pages(self) -> dict[int, ModePageBuilder]:
        """Mode pages in page-code order: {code: builder(lu, pc) -> page}; the base has control 0x0A."""
        from .mode import control_page

        return {0x0A: control_page}

    def log_pages(self) -> dict[int, LogPageBuilder]:
        """Log pages other than 0x00: {code: builder(lu) -> parameter bytes} (LOG SENSE, ``log.py``)."""
        return {}

    def mode_device_specific(self) -> int:
        """DEVICE-SPECIFIC PARAMETER of the mode parameter header: WP when read-only or SWP."""
        return 0x80 if (self.read_only or self.swp) else 0

    def mode_block_descriptor(self, llbaa: bool) -> bytes:
        """The block descriptor MODE SENSE returns (b"" when the type has none)."""
        return b""

    def mode_check_descriptor(self, desc: bytes, offset: int) -> None:
        """Validate one MODE SELECT block descriptor at ``offset`` of the parameter list; raise
        ``invalid_param`` when it cannot be honoured.  Types without descriptors refuse any."""
        raise invalid_param(offset)

    def mode_apply(self, descriptor: bytes | None, pages: dict[int, bytes]) -> None:
        """Apply a validated MODE SELECT: the last block descriptor (or None) and the pages by code
        (only changeable bits differ from the current values)."""
        control = pages.get(0x0A)
        if control is not None:
            self.d_sense = bool(control[2] & 0x04)
            self.swp = bool(control[4] & 0x08)

    # -- unit attention --------------------------------------------------------------------------

    def establish_ua(self, nexus: ITNexus, asc_ascq: tuple[int, int]) -> None:
        """Queue a unit attention for ``nexus``.  A reset-class UA (29/xx) supersedes the others."""
        queue = self.ua.get(nexus)
        if queue is None:
            self.ua[nexus] = [asc_ascq]
            return
        if asc_ascq[0] == POWER_ON_RESET[0]:
            queue[:] = [asc_ascq]
        elif asc_ascq not in queue and len(queue) < UA_QUEUE_DEPTH:
            queue.append(asc_ascq)

    def establish_ua_all(self, asc_ascq: tuple[int, int], *, exclude: ITNexus | None = None) -> None:
        for nexus in self.nexuses:
            if nexus != exclude:
                self.establish_ua(nexus, asc_ascq)

    def pop_ua(self, nexus: ITNexus) -> tuple[int, int] | None:
        queue = self.ua.get(nexus)
        if not queue:
            return None
        ua = queue.pop(0)
        if not queue:
            del self.ua[nexus]
        return ua

    def clear_ua(self, nexus: ITNexus, asc_ascq: tuple[int, int]) -> None:
        queue = self.ua.get(nexus)
        if queue and asc_ascq in queue:
            queue.remove(asc_ascq)
            if not queue:
                del self.ua[nexus]

    def forget_nexus(self, nexus: ITNexus) -> None:
        """I_T nexus loss: drop its unit attentions, removal hold and reservations."""
        self.ua.pop(nexus, None)
        self.prevent.discard(nexus)
        self.nexuses.discard(nexus)
        self.reservations.nexus_lost(nexus)

    async def close(self) -> None:
        """Release what the LU holds beyond its store (tape: the loaded cartridge); default nothing."""
