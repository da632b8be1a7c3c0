"""Command tables: one :class:`CommandSpec` per supported operation code, grouped per device type.

The CDB USAGE DATA of each spec (SPC-4 6.35, REPORT SUPPORTED OPERATION CODES) doubles as the
reserved-bit mask: any CDB bit the usage data does not mark as examined is rejected with INVALID FIELD
IN CDB and a field pointer to it.  This keeps what we report and what we enforce identical by
construction.  Every device type (disk ``commands.DISK_COMMANDS``, tape ``ssc_commands``, changer
``smc``) owns one :class:`CommandTable`; the device server dispatches through the LU's table and
REPORT SUPPORTED OPERATION CODES reads the same table.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .sense import INVALID_COMMAND_OPERATION_CODE, CheckCondition, SenseKey, invalid_field
from .task import ScsiResult, ScsiTask

Handler = Callable[[Any, Any, ScsiTask, bytes], ScsiResult | Awaitable[ScsiResult]]
"""``handler(server, lu, task, cdb)``: the :class:`ScsiResult` when the command completes without waiting,
else what to await for it; raises :class:`CheckCondition` for errors."""

NOMINAL_TIMEOUT = 30  # seconds, for the command timeouts descriptor
RECOMMENDED_TIMEOUT = 60


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One supported command: opcode, service action (None when the opcode has none), name, CDB usage
    data (its length is the CDB length), handler and the flags the device server acts on."""

    opcode: int
    service_action: int | None
    name: str
    usage: bytes
    handler: Handler
    ua_exempt: bool = False  # INQUIRY, REPORT LUNS, REQUEST SENSE (SPC-4 5.12 / SAM-5 5.14)
    needs_medium: bool = True  # NOT READY / MEDIUM NOT PRESENT when the LU has no medium
    writes: bool = False  # changes the medium: the LU's check_writable() runs first
    thin_only: bool = False  # disk: only on thin-provisioned LUs
    inv_mask: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        full = (1 << (8 * len(self.usage))) - 1
        object.__setattr__(self, "inv_mask", full & ~int.from_bytes(self.usage, "big"))

    @property
    def cdb_length(self) -> int:
        return len(self.usage)

    def available(self, lu: Any) -> bool:
        return lu.thin or not self.thin_only


class CommandTable:
    """The commands of one device type, indexed for dispatch: by opcode for commands without service
    action, by (opcode, service action) for the rest."""

    __slots__ = ("by_op", "by_sa", "sa_opcodes", "specs")

    def __init__(self, specs: Iterable[CommandSpec]) -> None:
        self.specs: tuple[CommandSpec, ...] = tuple(specs)
        self.by_op: list[CommandSpec | None] = [None] * 256
        self.by_sa: dict[tuple[int, int], CommandSpec] = {}
        for s in self.specs:
            if s.service_action is None:
                if self.by_op[s.opcode] is not None:
                    raise ValueError(f"opcode {s.opcode:#04x} defined twice")
                self.by_op[s.opcode] = s
            else:
                self.by_sa[(s.opcode, s.service_action)] = s
        self.sa_opcodes = frozenset(s.opcode for s in self.specs if s.service_action is not None)

    def lookup(self, cdb: bytes) -> CommandSpec:
        """The spec for ``cdb`` (at least one byte); INVALID COMMAND OPERATION CODE (20/00) for an
        unknown opcode, INVALID FIELD IN CDB (24/00, byte 1 bit 4) for an unknown service action."""
        op = cdb[0]
        spec = self.by_op[op]
        if spec is not None:
            return spec
        if op not in self.sa_opcodes:
            raise CheckCondition(SenseKey.ILLEGAL_REQUEST, INVALID_COMMAND_OPERATION_CODE)
        found = self.by_sa.get((op, cdb[1] & 0x1F)) if len(cdb) > 1 else None
        if found is None:
            raise invalid_field(1, 4)
        return found


async def report_supported_opcodes(server: object, lu: Any, task: ScsiTask, cdb: bytes) -> ScsiResult:
    """REPORT SUPPORTED OPERATION CODES (SPC-4 6.35), reporting options 000b-011b, RCTD, from the LU's
    own command table (``lu.commands``)."""
    rctd = bool(cdb[2] & 0x80)
    option = cdb[2] & 0x07
    req_op = cdb[3]
    (req_sa,) = struct.unpack_from(">H", cdb, 4)
    (alloc,) = struct.unpack_from(">I", cdb, 6)
    timeouts = struct.pack(">HxBII", 0x0A, 0, NOMINAL_TIMEOUT, RECOMMENDED_TIMEOUT) if rctd else b""
    specs = [s for s in lu.commands.specs if s.available(lu)]
    if option == 0:
        body = bytearray()
        for s in specs:
            flags = (0x02 if rctd else 0) | (0x01 if s.service_action is not None else 0)
            body += struct.pack(">BxHxBH", s.opcode, s.service_action or 0, flags, s.cdb_length) + timeouts
        data = struct.pack(">I", len(body)) + bytes(body)
    elif option in (1, 2, 3):
        with_sa = [s for s in specs if s.opcode == req_op and s.service_action is not None]
        match: CommandSpec | None = None
        if option == 1:
            if with_sa:
                raise invalid_field(2)
            match = next((s for s in specs if s.opcode == req_op), None)
        elif option == 2:
            if not with_sa and any(s.opcode == req_op for s in specs):
                raise invalid_field(2)
            match = next((s for s in with_sa if s.service_action == req_sa), None)
        else:
            match = next(
                (s for s in specs if s.opcode == req_op and s.service_action in (None, req_sa)), None
            )
        if match is None:
            data = bytes((0, 0x01, 0, 0))  # SUPPORT 001b: not supported
        else:
            data = (
                struct.pack(">xBH", (0x80 if rctd else 0) | 0x03, match.cdb_length) + match.usage + timeouts
            )
    else:
        raise invalid_field(2, 2)
    return ScsiResult(data_in=data[:alloc], transfer_length=alloc)
