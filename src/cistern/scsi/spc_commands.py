"""The SPC-4 commands every device type serves, as :class:`~.table.CommandSpec` rows for its table.

Disk (``commands.py``), tape (``ssc.py``), medium changer (``changer.py``) and enclosure services
(``ses.py``) each own a :class:`~.table.CommandTable`; the rows below are the part they share, defined
once so the CDB usage data (the reserved-bit mask) and the flags cannot drift apart between types.

``lun_bits`` is OR-ed into byte 1 of the 6- and 10-byte commands that carried the SCSI-2 LUN field there
(bits 7-5): Linux's ``ch`` driver still sets it, so the changer accepts those bits (SPC-4 4.3.4.1 calls
them obsolete; a device may ignore them).  Only TEST UNIT READY needs the medium: it reports NOT READY
when there is none (SPC-4 6.47); the others answer with or without it.
"""

from __future__ import annotations

from . import inquiry, log, mode, pr_commands, spc
from .table import CommandSpec, report_supported_opcodes

SA_REPORT_SUPPORTED_OPCODES = 0x0C
_F4 = (0xFF,) * 4
_PR_IN_ACTIONS = ("READ KEYS", "READ RESERVATION", "REPORT CAPABILITIES", "READ FULL STATUS")
_PR_OUT_ACTIONS = ("REGISTER", "RESERVE", "RELEASE", "CLEAR", "PREEMPT", "PREEMPT AND ABORT",
                   "REGISTER AND IGNORE EXISTING KEY", "REGISTER AND MOVE")  # fmt: skip


def _u(*b: int) -> bytes:
    return bytes(b)


def spc_core(lun_bits: int = 0) -> tuple[CommandSpec, ...]:
    """TEST UNIT READY, REQUEST SENSE, INQUIRY, MODE SELECT/SENSE(6/10), REPORT LUNS and REPORT
    SUPPORTED OPERATION CODES (SPC-4 6.47, 6.40, 6.6, 6.11-6.14, 6.33, 6.35)."""
    L = lun_bits
    # fmt: off
    return (
        CommandSpec(0x00, None, "TEST UNIT READY", _u(0x00, L, 0, 0, 0, 0), spc.test_unit_ready),
        CommandSpec(0x03, None, "REQUEST SENSE", _u(0x03, 0x01 | L, 0, 0, 0xFF, 0), spc.request_sense,
                    ua_exempt=True, needs_medium=False),
        CommandSpec(0x12, None, "INQUIRY", _u(0x12, 0x01 | L, 0xFF, 0xFF, 0xFF, 0), inquiry.inquiry,
                    ua_exempt=True, needs_medium=False),
        CommandSpec(0x15, None, "MODE SELECT(6)", _u(0x15, 0x11 | L, 0, 0, 0xFF, 0), mode.mode_select6,
                    needs_medium=False),
        CommandSpec(0x1A, None, "MODE SENSE(6)", _u(0x1A, 0x08 | L, 0xFF, 0xFF, 0xFF, 0), mode.mode_sense6,
                    needs_medium=False),
        CommandSpec(0x55, None, "MODE SELECT(10)", _u(0x55, 0x11 | L, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0),
                    mode.mode_select10, needs_medium=False),
        CommandSpec(0x5A, None, "MODE SENSE(10)", _u(0x5A, 0x18 | L, 0xFF, 0xFF, 0, 0, 0, 0xFF, 0xFF, 0),
                    mode.mode_sense10, needs_medium=False),
        CommandSpec(0xA0, None, "REPORT LUNS", _u(0xA0, 0, 0xFF, 0, 0, 0, *_F4, 0, 0), spc.report_luns,
                    ua_exempt=True, needs_medium=False),
        CommandSpec(0xA3, SA_REPORT_SUPPORTED_OPCODES, "REPORT SUPPORTED OPERATION CODES",
                    _u(0xA3, 0x1F, 0x87, 0xFF, 0xFF, 0xFF, *_F4, 0, 0), report_supported_opcodes,
                    needs_medium=False),
    )
    # fmt: on


def reservations(lun_bits: int = 0) -> tuple[CommandSpec, ...]:
    """RESERVE/RELEASE(6/10) (SPC-2 7.21-7.24) and PERSISTENT RESERVE IN/OUT with every service action
    (SPC-4 6.15, 6.16)."""
    L = lun_bits
    # fmt: off
    return (
        CommandSpec(0x16, None, "RESERVE(6)", _u(0x16, L, 0, 0, 0, 0), pr_commands.reserve, needs_medium=False),
        CommandSpec(0x17, None, "RELEASE(6)", _u(0x17, L, 0, 0, 0, 0), pr_commands.release, needs_medium=False),
        CommandSpec(0x56, None, "RESERVE(10)", _u(0x56, L, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0), pr_commands.reserve,
                    needs_medium=False),
        CommandSpec(0x57, None, "RELEASE(10)", _u(0x57, L, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0), pr_commands.release,
                    needs_medium=False),
        *(CommandSpec(0x5E, sa, f"PERSISTENT RESERVE IN ({name})", _u(0x5E, 0x1F, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0),
                      pr_commands.persistent_reserve_in, needs_medium=False)
          for sa, name in enumerate(_PR_IN_ACTIONS)),
        *(CommandSpec(0x5F, sa, f"PERSISTENT RESERVE OUT ({name})",
                      _u(0x5F, 0x1F, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0), pr_commands.persistent_reserve_out,
                      needs_medium=False)
          for sa, name in enumerate(_PR_OUT_ACTIONS)),
    )
    # fmt: on


LOG_SENSE = CommandSpec(
    0x4D, None, "LOG SENSE", _u(0x4D, 0x03, 0xFF, 0xFF, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0), log.log_sense,
    needs_medium=False,
)
"""LOG SENSE (SPC-4 6.8) from the LU's ``log_pages()``."""
