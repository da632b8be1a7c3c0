"""The disk's (SBC-3, peripheral type 0x00) command table: every supported operation code, its CDB
USAGE DATA (also the reserved-bit mask, see ``table.py``) and its handler.
"""

from __future__ import annotations

from . import alua, atomic, caw, defect, orwrite, sanitize, sbc, spc, thin, xcopy
from .spc_commands import reservations, spc_core
from .table import CommandSpec, CommandTable

__all__ = ["COMMANDS", "DISK_COMMANDS", "CommandSpec", "CommandTable"]

SERVICE_ACTION_IN_16 = 0x9E
MAINTENANCE_IN = 0xA3
SA_READ_CAPACITY_16 = 0x10
SA_GET_LBA_STATUS = 0x12
SA_REPORT_SUPPORTED_OPCODES = 0x0C


def _u(*b: int) -> bytes:
    return bytes(b)


F4 = (0xFF,) * 4
F8 = (0xFF,) * 8


# fmt: off
COMMANDS: tuple[CommandSpec, ...] = (
    *spc_core(),
    *reservations(),
    CommandSpec(0x08, None, "READ(6)", _u(0x08, 0x1F, 0xFF, 0xFF, 0xFF, 0), sbc.read6),
    CommandSpec(0x0A, None, "WRITE(6)", _u(0x0A, 0x1F, 0xFF, 0xFF, 0xFF, 0), sbc.write6, writes=True),
    CommandSpec(0x1B, None, "START STOP UNIT", _u(0x1B, 0x01, 0, 0x0F, 0xF7, 0), sbc.start_stop_unit, needs_medium=False),
    CommandSpec(0x1E, None, "PREVENT ALLOW MEDIUM REMOVAL", _u(0x1E, 0, 0, 0, 0x03, 0), spc.prevent_allow,
                needs_medium=False),
    CommandSpec(0x25, None, "READ CAPACITY(10)", _u(0x25, 0, *F4, 0, 0, 0x01, 0), sbc.read_capacity10),
    CommandSpec(0x28, None, "READ(10)", _u(0x28, 0x1E, *F4, 0x1F, 0xFF, 0xFF, 0), sbc.read10),
    CommandSpec(0x2A, None, "WRITE(10)", _u(0x2A, 0x1A, *F4, 0x1F, 0xFF, 0xFF, 0), sbc.write10, writes=True),
    CommandSpec(0x2E, None, "WRITE AND VERIFY(10)", _u(0x2E, 0x12, *F4, 0x1F, 0xFF, 0xFF, 0), sbc.write_verify10,
                writes=True),
    CommandSpec(0x2F, None, "VERIFY(10)", _u(0x2F, 0x16, *F4, 0x1F, 0xFF, 0xFF, 0), sbc.verify10),
    CommandSpec(0x34, None, "PRE-FETCH(10)", _u(0x34, 0x02, *F4, 0x1F, 0xFF, 0xFF, 0), sbc.prefetch10),
    CommandSpec(0x35, None, "SYNCHRONIZE CACHE(10)", _u(0x35, 0x06, *F4, 0x1F, 0xFF, 0xFF, 0), sbc.sync_cache10),
    CommandSpec(0x41, None, "WRITE SAME(10)", _u(0x41, 0x08, *F4, 0x1F, 0xFF, 0xFF, 0), sbc.write_same10, writes=True),
    CommandSpec(0x42, None, "UNMAP", _u(0x42, 0, 0, 0, 0, 0, 0x1F, 0xFF, 0xFF, 0), thin.unmap, writes=True,
                thin_only=True),
    CommandSpec(0x88, None, "READ(16)", _u(0x88, 0x1E, *F8, *F4, 0x1F, 0), sbc.read16),
    CommandSpec(0x8A, None, "WRITE(16)", _u(0x8A, 0x1A, *F8, *F4, 0x1F, 0), sbc.write16, writes=True),
    CommandSpec(0x8E, None, "WRITE AND VERIFY(16)", _u(0x8E, 0x12, *F8, *F4, 0x1F, 0), sbc.write_verify16,
                writes=True),
    CommandSpec(0x8F, None, "VERIFY(16)", _u(0x8F, 0x16, *F8, *F4, 0x1F, 0), sbc.verify16),
    CommandSpec(0x90, None, "PRE-FETCH(16)", _u(0x90, 0x02, *F8, *F4, 0x1F, 0), sbc.prefetch16),
    CommandSpec(0x91, None, "SYNCHRONIZE CACHE(16)", _u(0x91, 0x06, *F8, *F4, 0x1F, 0), sbc.sync_cache16),
    CommandSpec(0x93, None, "WRITE SAME(16)", _u(0x93, 0x09, *F8, *F4, 0x1F, 0), sbc.write_same16, writes=True),
    CommandSpec(0x9E, SA_READ_CAPACITY_16, "READ CAPACITY(16)", _u(0x9E, 0x1F, *F8, *F4, 0x01, 0),
                sbc.read_capacity16),
    CommandSpec(0x9E, SA_GET_LBA_STATUS, "GET LBA STATUS", _u(0x9E, 0x1F, *F8, *F4, 0, 0), thin.get_lba_status,
                thin_only=True),
    CommandSpec(0xA3, alua.SA_REPORT_TARGET_PORT_GROUPS, "REPORT TARGET PORT GROUPS",
                _u(0xA3, 0xFF, 0, 0, 0, 0, *F4, 0, 0), alua.report_target_port_groups, needs_medium=False),
    CommandSpec(0xA4, alua.SA_SET_TARGET_PORT_GROUPS, "SET TARGET PORT GROUPS",
                _u(0xA4, 0x1F, 0, 0, 0, 0, *F4, 0, 0), alua.set_target_port_groups, needs_medium=False),
    CommandSpec(0xA8, None, "READ(12)", _u(0xA8, 0x1E, *F4, *F4, 0x1F, 0), sbc.read12),
    CommandSpec(0xAA, None, "WRITE(12)", _u(0xAA, 0x1A, *F4, *F4, 0x1F, 0), sbc.write12, writes=True),
    CommandSpec(0xAE, None, "WRITE AND VERIFY(12)", _u(0xAE, 0x12, *F4, *F4, 0x1F, 0), sbc.write_verify12,
                writes=True),
    CommandSpec(0xAF, None, "VERIFY(12)", _u(0xAF, 0x16, *F4, *F4, 0x1F, 0), sbc.verify12),
    # VAAI / copy offload and the remaining SBC commands (caw.py, xcopy.py, orwrite.py, atomic.py,
    # sanitize.py, defect.py).
    CommandSpec(0x37, None, "READ DEFECT DATA(10)", _u(0x37, 0, 0x1F, 0, 0, 0, 0, 0xFF, 0xFF, 0),
                defect.read_defect_data10),
    *(CommandSpec(0x48, sa, f"SANITIZE ({name})", _u(0x48, 0xBF, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0), sanitize.sanitize,
                  writes=True, thin_only=thin_only)
      for sa, name, thin_only in ((sanitize.SA_OVERWRITE, "OVERWRITE", False),
                                  (sanitize.SA_BLOCK_ERASE, "BLOCK ERASE", True),
                                  (sanitize.SA_EXIT_FAILURE_MODE, "EXIT FAILURE MODE", False))),
    CommandSpec(0x83, 0x00, "EXTENDED COPY(LID1)", _u(0x83, 0x1F, 0, 0, 0, 0, 0, 0, 0, 0, *F4, 0, 0),
                xcopy.extended_copy, writes=True),
    *(CommandSpec(0x84, sa, f"RECEIVE COPY RESULTS ({name})", _u(0x84, 0x1F, 0xFF, 0, 0, 0, 0, 0, 0, 0, *F4, 0, 0),
                  xcopy.receive_copy_results, needs_medium=False)
      for sa, name in ((xcopy.SA_COPY_STATUS, "COPY STATUS"), (xcopy.SA_RECEIVE_DATA, "RECEIVE DATA"),
                       (xcopy.SA_OPERATING_PARAMETERS, "OPERATING PARAMETERS"),
                       (xcopy.SA_FAILED_SEGMENT_DETAILS, "FAILED SEGMENT DETAILS"))),
    CommandSpec(0x89, None, "COMPARE AND WRITE", _u(0x89, 0x1A, *F8, 0, 0, 0, 0xFF, 0x1F, 0), caw.compare_and_write,
                writes=True),
    CommandSpec(0x8B, None, "ORWRITE(16)", _u(0x8B, 0x1A, *F8, *F4, 0x1F, 0), orwrite.orwrite16, writes=True),
    CommandSpec(0x9C, None, "WRITE ATOMIC(16)", _u(0x9C, 0x18, *F8, 0, 0, 0xFF, 0xFF, 0x1F, 0), atomic.write_atomic16,
                writes=True),
    CommandSpec(0xB7, None, "READ DEFECT DATA(12)", _u(0xB7, 0x1F, *F4, *F4, 0, 0), defect.read_defect_data12),
)
# fmt: on


DISK_COMMANDS = CommandTable(COMMANDS)
